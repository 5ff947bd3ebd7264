//! Delivery controls of one subscription, on every backend: its own attempt timeout (a slow
//! receiver gets through where the hub's 5 s budget gives up) and its own retry schedule (the
//! delays the hub records are the subscription's, and it is exhausted after them); both shown on
//! reads, refused out of bounds, and cleared back to the hub's with `null`.

use std::time::Duration;

use hub_tests::*;
use serde_json::{Value, json};

/// A receiver that confirms at once and answers events after 10 s.
async fn slow_receiver() -> TestReceiver {
    TestReceiver::scripted(|req, _| {
        if req.json()["type"] == "Confirmation" {
            Reply::status(200)
        } else {
            Reply {
                delay: Duration::from_secs(10),
                ..Reply::status(200)
            }
        }
    })
    .await
}

/// The event attempts of `id`'s delivery log (not its confirmation's), oldest first.
async fn log_of(hub: &HubProcess, id: &str) -> Vec<Value> {
    let log = hub
        .call(
            "GET",
            &format!("/v1/subscriptions/{id}/deliveries"),
            Some(KEY_A),
            None,
        )
        .await;
    let mut attempts: Vec<Value> = log.body["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| {
            a["message_id"]
                .as_str()
                .is_some_and(|m| m.starts_with("evt_"))
        })
        .collect();
    attempts.reverse();
    attempts
}

fn ms(rfc3339: &Value) -> i64 {
    hub::clock::parse_rfc3339(rfc3339.as_str().unwrap()).unwrap()
}

mod scenarios {
    use super::*;

    pub async fn a_subscription_has_its_own_timeout_and_retry_schedule(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let slow = slow_receiver().await;
        let patient =
            subscribe_confirmed(&hub, &slow, KEY_A, "/patient", json!({"timeout": 15})).await;
        let hasty = subscribe_confirmed(&hub, &slow, KEY_A, "/hasty", json!({})).await;
        assert_eq!(patient["timeout"], 15);
        assert_eq!(hasty["timeout"], Value::Null, "the hub's own");
        let failing = TestReceiver::failing_events().await;
        let scheduled = subscribe_confirmed(
            &hub,
            &failing,
            KEY_A,
            "/scheduled",
            json!({"retry_schedule": [2, 4]}),
        )
        .await;
        assert_eq!(scheduled["retry_schedule"], json!([2, 4]));

        publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {}}),
        )
        .await;
        let (patient_id, hasty_id) = (
            patient["id"].as_str().unwrap().to_string(),
            hasty["id"].as_str().unwrap().to_string(),
        );
        let (first_patient, first_hasty) = eventually(WAIT, "both first attempts", || {
            let hub = &hub;
            let (p, h) = (patient_id.clone(), hasty_id.clone());
            async move {
                let (p, h) = (log_of(hub, &p).await, log_of(hub, &h).await);
                (!p.is_empty() && !h.is_empty()).then(|| (p[0].clone(), h[0].clone()))
            }
        })
        .await;
        assert_eq!(first_patient["status_code"], 200, "{first_patient}");
        assert_eq!(first_patient["delivered"], true);
        let patient_latency = first_patient["latency_ms"].as_u64().unwrap();
        assert!(
            patient_latency >= 9_500,
            "answered after the receiver's 10 s: {patient_latency} ms"
        );
        assert_eq!(first_hasty["error"], "timeout", "{first_hasty}");
        let hasty_latency = first_hasty["latency_ms"].as_u64().unwrap();
        assert!(
            (4_900..9_000).contains(&hasty_latency),
            "the hub's 5 s budget: {hasty_latency} ms"
        );

        // The failing one follows its own schedule: about 2 s, then 4 s, then it is exhausted.
        let scheduled_id = scheduled["id"].as_str().unwrap().to_string();
        let attempts = eventually(WAIT, "three attempts by its own schedule", || {
            let hub = &hub;
            let id = scheduled_id.clone();
            async move {
                let log = log_of(hub, &id).await;
                (log.len() >= 3).then_some(log)
            }
        })
        .await;
        for (attempt, want) in attempts.iter().zip([Some(2_000), Some(4_000), None]) {
            let finished = ms(&attempt["timestamp"]) + attempt["latency_ms"].as_i64().unwrap();
            match want {
                Some(delay) => {
                    let next = ms(&attempt["next_attempt_at"]) - finished;
                    assert!(
                        (delay * 8 / 10 - 5..=delay * 12 / 10 + 5).contains(&next),
                        "attempt {}: next in {next} ms, wanted {delay} ± 20 %",
                        attempt["attempt"]
                    );
                }
                None => assert_eq!(attempt["next_attempt_at"], Value::Null, "exhausted"),
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            log_of(&hub, &scheduled_id).await.len(),
            3,
            "no fourth attempt"
        );

        // Bounds, and `null` goes back to the hub's.
        for body in [
            json!({"timeout": 0}),
            json!({"timeout": 31}),
            json!({"retry_schedule": []}),
            json!({"retry_schedule": [43_201]}),
            json!({"retry_schedule": vec![43_200; 15]}),
        ] {
            let refused = hub
                .call(
                    "PATCH",
                    &format!("/v1/subscriptions/{patient_id}"),
                    Some(KEY_A),
                    Some(body.clone()),
                )
                .await;
            assert_eq!(refused.status, 400, "{body}: {}", refused.body);
        }
        let cleared = hub
            .call(
                "PATCH",
                &format!("/v1/subscriptions/{patient_id}"),
                Some(KEY_A),
                Some(json!({"timeout": null, "retry_schedule": [1]})),
            )
            .await;
        assert_eq!(cleared.status, 200, "{}", cleared.body);
        assert_eq!(cleared.body["timeout"], Value::Null);
        assert_eq!(cleared.body["retry_schedule"], json!([1]));
        let read = hub
            .call(
                "GET",
                &format!("/v1/subscriptions/{patient_id}"),
                Some(KEY_A),
                None,
            )
            .await;
        assert_eq!(read.body["retry_schedule"], json!([1]), "stored");
    }
}

on_every_backend!(a_subscription_has_its_own_timeout_and_retry_schedule);
