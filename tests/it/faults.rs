//! Receivers out there are slow, broken, hostile or gone. A fault-injecting receiver drives each
//! case to its outcome, on both backends: retried failures that end in the dead-letter queue,
//! timeouts, resets, redirects not followed, 410, 429 with `Retry-After`, capped reads, bad TLS,
//! and auto-disable after continuous failure.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use hub_tests::*;
use serde_json::{Value, json};

/// Three attempts: now, ~1 s later, ~3 s after that.
const SCHEDULE: &str = "1s,3s";

/// The attempts of a subscription's delivery log whose `webhook-id` starts with `prefix`
/// (`evt_` for events, `msg_` for confirmations), oldest first.
async fn attempts_of(hub: &HubProcess, id: &str, prefix: &str) -> Vec<Value> {
    let mut attempts = delivery_log(hub, id).await;
    attempts.retain(|a| {
        a["message_id"]
            .as_str()
            .is_some_and(|m| m.starts_with(prefix))
    });
    attempts.reverse();
    attempts
}

async fn deliveries(hub: &HubProcess, id: &str) -> Vec<Value> {
    attempts_of(hub, id, "evt_").await
}

/// Waits until the subscription's log holds `n` event attempts.
async fn wait_attempts(hub: &HubProcess, id: &str, n: usize, within: Duration) -> Vec<Value> {
    wait_attempts_of(hub, id, "evt_", n, within).await
}

/// Waits until the subscription's log holds `n` attempts of `prefix` messages.
async fn wait_attempts_of(
    hub: &HubProcess,
    id: &str,
    prefix: &str,
    n: usize,
    within: Duration,
) -> Vec<Value> {
    eventually(within, &format!("{id}: {n} {prefix} attempts"), || async {
        let attempts = attempts_of(hub, id, prefix).await;
        (attempts.len() >= n).then_some(attempts)
    })
    .await
}

mod scenarios {
    use super::*;

    pub async fn receivers_that_fail(backend: Backend) {
        let hub = HubProcess::start(backend, &["--retry-schedule", SCHEDULE]).await;
        let counts = std::sync::Arc::new(std::sync::Mutex::new(HashMap::<String, usize>::new()));
        let seen = counts.clone();
        let receiver = TestReceiver::scripted(move |req, _| {
            if req.json()["type"] == "Confirmation" {
                return Reply::status(200);
            }
            let n = {
                let mut c = seen.lock().unwrap();
                let n = c.entry(req.path.clone()).or_default();
                *n += 1;
                *n
            };
            let moved = |status: u16| Reply {
                headers: vec![("location".into(), "/landing".into())],
                ..Reply::status(status)
            };
            match req.path.as_str() {
                "/500" => Reply::status(500),
                "/503" => Reply::status(503),
                "/flaky" if n == 1 => Reply::status(500),
                "/flaky" => Reply::status(200),
                "/hang" => Reply {
                    delay: Duration::from_secs(8),
                    ..Reply::status(200)
                },
                "/301" => moved(301),
                "/302" => moved(302),
                "/307" => moved(307),
                "/gone" => Reply::status(410),
                "/429" if n == 1 => Reply {
                    headers: vec![("retry-after".into(), "2".into())],
                    ..Reply::status(429)
                },
                "/429" => Reply::status(200),
                "/big" => Reply {
                    body: Bytes::from(vec![b'x'; 10 * 1024 * 1024]),
                    ..Reply::status(200)
                },
                _ => Reply::status(200),
            }
        })
        .await;
        let mut ids = HashMap::new();
        for path in [
            "/500", "/503", "/flaky", "/hang", "/301", "/302", "/307", "/gone", "/429", "/big",
        ] {
            let created = subscribe_confirmed(&hub, &receiver, KEY_A, path, json!({})).await;
            ids.insert(path, created["id"].as_str().unwrap().to_string());
        }
        // These servers cannot answer a confirmation, so their first delivery — the signed
        // confirmation, through the same transport and retries as any event — is the one tested.
        let reset = resetting_receiver().await;
        let drip = dripping_receiver().await;
        let tls = SelfSignedTls::start().await;
        let endless = endless_receiver().await;
        for (name, url) in [
            ("/endless", format!("http://{endless}/endless")),
            ("/reset", format!("http://{reset}/reset")),
            ("/drip", format!("http://{drip}/drip")),
            ("/tls", format!("https://127.0.0.1:{}/tls", tls.port)),
        ] {
            let body = json!({"callback_url": url, "topics": ["door.request.allowed"]});
            let created = hub
                .call("POST", "/v1/subscriptions", Some(KEY_A), Some(body))
                .await;
            assert_eq!(created.status, 201);
            ids.insert(name, created.body["id"].as_str().unwrap().to_string());
        }

        let published = publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {"x": 1}}),
        )
        .await;
        let event_id = published["id"].as_str().unwrap().to_string();

        // Always failing: three attempts, same webhook-id, then the dead-letter queue.
        for path in ["/500", "/503"] {
            let attempts = wait_attempts(&hub, &ids[path], 3, Duration::from_secs(30)).await;
            let code: u16 = path[1..].parse().unwrap();
            assert!(
                attempts
                    .iter()
                    .all(|a| a["status_code"] == code && a["delivered"] == false),
                "{attempts:#?}"
            );
            let got: Vec<_> = receiver
                .received()
                .into_iter()
                .filter(|r| r.path == path && r.json()["type"] != "Confirmation")
                .collect();
            assert!(got.iter().all(|r| r.header("webhook-id") == event_id));
            assert!(
                got.iter()
                    .map(|r| r.header("webhook-timestamp").to_string())
                    .collect::<std::collections::HashSet<_>>()
                    .len()
                    >= 2,
                "each attempt is timestamped anew"
            );
        }
        // 500 then 200: delivered once, both tries with the same webhook-id.
        let flaky = wait_attempts(&hub, &ids["/flaky"], 2, Duration::from_secs(20)).await;
        assert_eq!(
            (
                flaky[0]["status_code"].as_u64(),
                flaky[1]["status_code"].as_u64()
            ),
            (Some(500), Some(200))
        );
        let tries = events_at(&receiver.received(), "/flaky")
            .into_iter()
            .map(|r| r.header("webhook-id").to_string())
            .collect::<Vec<_>>();
        assert_eq!(tries, vec![event_id.clone(), event_id.clone()]);
        // The attempt is recorded just before the odometer counts it: wait for the count.
        eventually(WAIT, "the odometer at 1", || async {
            let flaky_sub = hub
                .call(
                    "GET",
                    &format!("/v1/subscriptions/{}", ids["/flaky"]),
                    Some(KEY_A),
                    None,
                )
                .await;
            (flaky_sub.body["odometer"] == 1).then_some(())
        })
        .await;
        // Redirects are failures and are never followed.
        for path in ["/301", "/302", "/307"] {
            let attempts = wait_attempts(&hub, &ids[path], 1, Duration::from_secs(20)).await;
            assert_eq!(
                attempts[0]["status_code"].as_u64(),
                Some(path[1..].parse().unwrap())
            );
            assert_eq!(attempts[0]["delivered"], false);
        }
        // 410: the subscription is gone after one attempt.
        receiver
            .wait_for_match(WAIT, |r| {
                r.path == "/gone" && r.json()["type"] != "Confirmation"
            })
            .await;
        let deadline = std::time::Instant::now() + WAIT;
        while hub
            .call(
                "GET",
                &format!("/v1/subscriptions/{}", ids["/gone"]),
                Some(KEY_A),
                None,
            )
            .await
            .status
            != 404
        {
            assert!(
                std::time::Instant::now() < deadline,
                "410 Gone deletes the subscription"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Deleted, and its message settled: that one attempt is all there will ever be, and the
        // hub recorded no next one.
        assert_eq!(events_at(&receiver.received(), "/gone").len(), 1);
        // The hub decided on the 410.
        hub.wait_for_log("receiver answered 410 Gone: subscription deleted")
            .await;
        // 429 with Retry-After: 2 → the hub scheduled the next try no sooner than 2 s after the
        // 429 (the schedule alone said 1 s), recorded it, and made it no sooner than recorded.
        let tries = wait_attempts(&hub, &ids["/429"], 2, Duration::from_secs(20)).await;
        assert_eq!(tries[0]["status_code"], 429);
        let answered =
            timestamp_ms(&tries[0]["timestamp"]) + tries[0]["latency_ms"].as_i64().unwrap();
        let scheduled = timestamp_ms(&tries[0]["next_attempt_at"]) - answered;
        assert!(
            (1_995..=2_100).contains(&scheduled),
            "Retry-After 2 is the floor of the recorded delay: {scheduled} ms"
        );
        assert!(
            timestamp_ms(&tries[1]["timestamp"]) >= timestamp_ms(&tries[0]["next_attempt_at"]) - 5,
            "not retried before the recorded time: {tries:#?}"
        );
        assert_eq!(
            (
                tries[1]["delivered"].as_bool(),
                tries[1]["next_attempt_at"].is_null()
            ),
            (Some(true), true)
        );
        // A 10 MiB answer: read capped, delivered.
        let big = wait_attempts(&hub, &ids["/big"], 1, Duration::from_secs(20)).await;
        assert_eq!(
            (
                big[0]["status_code"].as_u64(),
                big[0]["delivered"].as_bool()
            ),
            (Some(200), Some(true))
        );
        // A body that never ends: the attempt is delivered well within the budget, so the hub
        // read only its cap (reading it all would have been a timeout).
        let endless =
            wait_attempts_of(&hub, &ids["/endless"], "msg_", 1, Duration::from_secs(20)).await;
        assert_eq!(
            (
                endless[0]["status_code"].as_u64(),
                endless[0]["delivered"].as_bool(),
                endless[0]["error"].is_null()
            ),
            (Some(200), Some(true), true),
            "{endless:#?}"
        );
        assert!(
            endless[0]["latency_ms"].as_u64().unwrap() < 4_000,
            "{endless:#?}"
        );
        // A hang and a drip past 5 s: timeouts, each attempt cut at the budget.
        for (path, prefix) in [("/hang", "evt_"), ("/drip", "msg_")] {
            let attempts =
                wait_attempts_of(&hub, &ids[path], prefix, 2, Duration::from_secs(40)).await;
            for a in &attempts[..2] {
                assert_eq!(a["error"], "timeout", "{path}: {a}");
                // The receiver would have answered after 8 s (hang) or 10 s (drip): an attempt
                // recorded as a timeout under that was cut by the hub, and not before 5 s.
                let ms = a["latency_ms"].as_u64().unwrap();
                assert!(
                    (4_990..8_000).contains(&ms),
                    "{path}: cut at the 5 s budget, took {ms} ms"
                );
                assert!(!a["next_attempt_at"].is_null(), "{path}: retried");
            }
        }
        // A reset connection and a self-signed certificate: failures, retried.
        for path in ["/reset", "/tls"] {
            let attempts =
                wait_attempts_of(&hub, &ids[path], "msg_", 2, Duration::from_secs(30)).await;
            assert!(
                attempts
                    .iter()
                    .all(|a| a["delivered"] == false && a["status_code"].is_null()),
                "{path}: {attempts:#?}"
            );
        }
        assert_eq!(
            attempts_of(&hub, &ids["/tls"], "msg_").await[0]["error"],
            "tls"
        );
        assert!(
            receiver.received().iter().all(|r| r.path != "/landing"),
            "redirects are not followed"
        );

        // The exhausted deliveries wait in the dead-letter queue with what it takes to replay them.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut dead: Vec<Value> = Vec::new();
        while dead.len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "dead letters expected, got {dead:#?}"
            );
            let got = hub
                .call("POST", "/_test/dead-letters", Some(KEY_A), None)
                .await;
            for body in got.body["messages"].as_array().cloned().unwrap_or_default() {
                dead.push(serde_json::from_str(body.as_str().unwrap()).unwrap());
            }
            dead.retain(|d| {
                d["subscription_id"] == ids["/500"].as_str()
                    || d["subscription_id"] == ids["/503"].as_str()
            });
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert!(
            dead.iter()
                .all(|d| d["payload"]["event"]["id"] == event_id.as_str()
                    && d["payload"]["event"]["data"] == json!({"x": 1}))
        );
        // Both messages are dead letters now, so no attempt can follow: exactly three each, the
        // last recorded with no next attempt.
        for path in ["/500", "/503"] {
            assert_eq!(events_at(&receiver.received(), path).len(), 3, "{path}");
            let log = deliveries(&hub, &ids[path]).await;
            assert_eq!(log.len(), 3, "{path}: {log:#?}");
            assert!(log[..2].iter().all(|a| !a["next_attempt_at"].is_null()));
            assert!(log[2]["next_attempt_at"].is_null(), "{path}: {log:#?}");
        }
        assert!(dead.iter().all(|d| d["attempts_made"] == 3), "{dead:#?}");
    }

    /// Deliveries that keep failing past `--disable-after` disable the subscription; an update
    /// turns it back on.
    pub async fn continuous_failure_disables(backend: Backend) {
        let hub = HubProcess::start(
            backend,
            &[
                "--retry-schedule",
                "1s,1s,1s,1s,1s",
                "--disable-after",
                "2s",
            ],
        )
        .await;
        let receiver = TestReceiver::scripted(|req, _| {
            if req.json()["type"] == "Confirmation" {
                Reply::status(200)
            } else {
                Reply::status(500)
            }
        })
        .await;
        let created = subscribe_confirmed(&hub, &receiver, KEY_A, "/down", json!({})).await;
        let id = created["id"].as_str().unwrap();
        publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {}}),
        )
        .await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let sub = hub
                .call("GET", &format!("/v1/subscriptions/{id}"), Some(KEY_A), None)
                .await;
            if sub.body["status"] == "disabled" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not disabled: {}",
                sub.body
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The attempt that disabled it is recorded as the last: no next attempt was scheduled.
        let log = eventually(WAIT, "the disabling attempt is logged", || async {
            let log = deliveries(&hub, id).await;
            log.last()
                .is_some_and(|a| a["next_attempt_at"].is_null())
                .then_some(log)
        })
        .await;
        assert!(
            (2..=5).contains(&log.len()),
            "{} attempts before disabling",
            log.len()
        );
        assert!(
            log[..log.len() - 1]
                .iter()
                .all(|a| !a["next_attempt_at"].is_null()),
            "{log:#?}"
        );
        hub.wait_for_log("subscription disabled after continuous failure")
            .await;
        let back = hub
            .call(
                "PATCH",
                &format!("/v1/subscriptions/{id}"),
                Some(KEY_A),
                Some(json!({"active": true})),
            )
            .await;
        assert_eq!(back.body["status"], "active");
    }
}

hub_tests::on_every_backend!(receivers_that_fail, continuous_failure_disables);

/// At least once: the hub is killed (SIGKILL) while deliveries are in flight; a new process on
/// the same table and queues delivers every event, duplicates carrying the same `webhook-id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_crash_mid_batch_loses_nothing() {
    let name = unique("crash");
    let env = [("HUB_QUEUE_VISIBILITY", "6s")];
    let mut first = HubProcess::start_on(Backend::Aws, &name, &[], &env).await;
    let receiver = TestReceiver::scripted(|req, _| {
        let slow = req.json()["type"] != "Confirmation";
        Reply {
            delay: Duration::from_millis(if slow { 150 } else { 0 }),
            ..Reply::status(200)
        }
    })
    .await;
    subscribe_confirmed(&first, &receiver, KEY_A, "/c", json!({})).await;
    let mut ids = std::collections::HashSet::new();
    for n in 0..40 {
        let published = publish(
            &first,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {"n": n}}),
        )
        .await;
        ids.insert(published["id"].as_str().unwrap().to_string());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while events_at(&receiver.received(), "/c").len() < 5 {
        assert!(std::time::Instant::now() < deadline, "deliveries started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.crash();
    let before = events_at(&receiver.received(), "/c").len();
    assert!(
        before < 40,
        "the crash came mid-stream ({before} delivered)"
    );

    let _second = HubProcess::start_on(Backend::Aws, &name, &[], &env).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let seen = receiver.received();
        let got: std::collections::HashSet<String> = events_at(&seen, "/c")
            .iter()
            .map(|r| r.header("webhook-id").to_string())
            .collect();
        if got == ids {
            println!(
                "crash: {before} delivered before the crash, all {} after the restart ({} requests in all)",
                ids.len(),
                events_at(&seen, "/c").len()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lost after the crash: {:?}",
            ids.difference(&got).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
