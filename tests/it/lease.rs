//! Leases that end on time, on both backends, with the hub's clock moved forward instead of
//! sleeping: lapsed subscriptions are absent from every read before any sweep, pending ones lapse
//! after 24 h, refresh extends (never past 7 days), the expiring notice goes out once, and a
//! delivery queued before the lapse is dropped after it.

use std::time::Duration;

use hub_tests::*;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

async fn get_status(hub: &HubProcess, id: &str) -> u16 {
    hub.call("GET", &format!("/v1/subscriptions/{id}"), Some(KEY_A), None)
        .await
        .status
}

async fn listed(hub: &HubProcess) -> Vec<String> {
    let list = hub
        .call("GET", "/v1/subscriptions", Some(KEY_A), None)
        .await;
    list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

mod scenarios {
    use super::*;

    /// A 60 s lease is delivered to before 60 s and absent from get, list and fan-out after,
    /// before any sweep; the sweep then removes it and logs `subscription.expired`.
    pub async fn short_lease_lapses_everywhere(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let created =
            subscribe_confirmed(&hub, &receiver, KEY_A, "/short", json!({"expires": 60})).await;
        let id = created["id"].as_str().unwrap();
        publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {"n": 1}}),
        )
        .await;
        receiver
            .wait_for_match(WAIT, |r| r.path == "/short" && r.json()["data"]["n"] == 1)
            .await;

        hub.advance_clock(MINUTE + Duration::from_secs(1)).await;
        assert_eq!(
            get_status(&hub, id).await,
            404,
            "get treats the lapsed lease as absent"
        );
        assert!(!listed(&hub).await.contains(&id.to_string()), "list too");
        let after = publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {"n": 2}}),
        )
        .await;
        assert_eq!(
            fanned_out(&hub, after["id"].as_str().unwrap()).await,
            0,
            "nothing queued for the lapsed subscription"
        );
        assert_eq!(
            hub.call(
                "DELETE",
                &format!("/v1/subscriptions/{id}"),
                Some(KEY_A),
                None
            )
            .await
            .status,
            404
        );

        assert_eq!(hub.sweep().await["removed"], 1);
        assert_eq!(hub.sweep().await["removed"], 0);
        // The log writer's thread writes the line out after the sweep has answered: wait for it.
        let log = eventually(WAIT, "one subscription.expired line", || async {
            let log = hub.log();
            log.contains("subscription.expired").then_some(log)
        })
        .await;
        let line = log
            .lines()
            .find(|l| l.contains("subscription.expired"))
            .expect("found above");
        assert!(line.contains(id));
        assert_eq!(log.matches("subscription.expired").count(), 1);
    }

    /// An unconfirmed subscription lapses after 24 h, even with a 7-day lease.
    pub async fn pending_lapses_after_a_day(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let created = subscribe_pending(&hub, &receiver, KEY_A, "/p", json!({})).await;
        let id = created["id"].as_str().unwrap();
        let confirmation = receiver.wait_for(1, WAIT).await.remove(0);
        hub.advance_clock(Duration::from_secs(23 * 3600)).await;
        assert_eq!(get_status(&hub, id).await, 200, "still waiting after 23 h");
        hub.advance_clock(Duration::from_secs(3601)).await;
        assert_eq!(get_status(&hub, id).await, 404, "lapsed after 24 h");
        let late = hub
            .call(
                "GET",
                confirmation.json()["confirmation_url"].as_str().unwrap(),
                None,
                None,
            )
            .await;
        assert_eq!(late.status, 404, "too late to confirm");
        assert_eq!(hub.sweep().await["removed"], 1);
    }

    /// Refresh keeps the id and the confirmed state, extends `validity_ts`, never beyond 7 days
    /// from now; a lapsed subscription subscribed again starts over as pending.
    pub async fn refresh_extends_the_lease(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let created =
            subscribe_confirmed(&hub, &receiver, KEY_A, "/r", json!({"expires": 3600})).await;
        let id = created["id"].as_str().unwrap();
        let v1 = created["validity_ts"].as_f64().unwrap();
        hub.advance_clock(Duration::from_secs(1800)).await;
        let body = json!({"callback_url": receiver.url("/r"), "topics": ["door.request.allowed"]});
        let refreshed = hub
            .call("POST", "/v1/subscriptions", Some(KEY_A), Some(body.clone()))
            .await;
        assert_eq!(refreshed.status, 200);
        assert_eq!(refreshed.body["id"], id);
        assert_eq!(
            refreshed.body["status"], "active",
            "refresh keeps the confirmed state"
        );
        let v2 = refreshed.body["validity_ts"].as_f64().unwrap();
        let expected = v1 - 3600.0 + 1800.0 + 604_800.0;
        assert!(
            (v2 - expected).abs() < 5.0,
            "7 days from the refresh: {v2} vs {expected}"
        );
        let too_long = hub.call("POST", "/v1/subscriptions", Some(KEY_A), Some(json!({"callback_url": receiver.url("/r"), "topic": "a.b.c", "expires": 604_801}))).await;
        assert_eq!(too_long.status, 400);

        hub.advance_clock(Duration::from_secs(604_801)).await;
        let again = hub
            .call("POST", "/v1/subscriptions", Some(KEY_A), Some(body))
            .await;
        assert_eq!(again.status, 201, "a lapsed subscription starts over");
        assert_eq!(again.body["status"], "pending");
        assert_ne!(again.body["id"], id);
    }

    /// One `subscription.expiring` notice when a tenth of the lease remains, signed like any
    /// delivery; none for a subscription that opted out.
    pub async fn expiring_notice_once(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let ops = TestReceiver::start().await;
        subscribe_confirmed(&hub, &ops, KEY_A, "/ops", json!({"topics": ["hub.*"]})).await;
        let wants =
            subscribe_confirmed(&hub, &receiver, KEY_A, "/n", json!({"expires": 600})).await;
        subscribe_confirmed(
            &hub,
            &receiver,
            KEY_A,
            "/quiet",
            json!({"expires": 600, "expiry_notice": false}),
        )
        .await;
        assert_eq!(hub.sweep().await["notices"], 0, "not yet due");
        hub.advance_clock(Duration::from_secs(545)).await;
        assert_eq!(hub.sweep().await["notices"], 1);
        let notice = receiver
            .wait_for_match(WAIT, |r| r.json()["type"] == "subscription.expiring")
            .await;
        assert_eq!(notice.path, "/n");
        assert!(
            verify_standard(wants["secret"].as_str().unwrap(), &notice),
            "the notice verifies"
        );
        let body = notice.json();
        assert_eq!(body["data"]["id"], wants["id"]);
        assert_eq!(body["data"]["validity_ts"], wants["validity_ts"]);
        assert!(notice.header("webhook-id").starts_with("evt_"));
        assert_eq!(hub.sweep().await["notices"], 0, "queued once");
        // The account hears of it too, as an operational event.
        let operational = ops
            .wait_for_match(WAIT, |r| r.json()["type"] == "hub.subscription.expiring")
            .await;
        assert_eq!(operational.json()["data"]["subscription_id"], wants["id"]);
        let notices = receiver
            .received()
            .into_iter()
            .filter(|r| r.json()["type"] == "subscription.expiring")
            .count();
        assert_eq!(notices, 1);
    }

    /// A delivery queued (here: waiting for its retry) before the lease lapsed is dropped
    /// unattempted after.
    pub async fn queued_delivery_dropped_after_lapse(backend: Backend) {
        let hub = HubProcess::start(backend, &["--retry-schedule", "2s"]).await;
        let receiver = TestReceiver::failing_events().await;
        let created =
            subscribe_confirmed(&hub, &receiver, KEY_A, "/d", json!({"expires": 60})).await;
        publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {}}),
        )
        .await;
        // The first attempt failed and the hub scheduled its retry (recorded) before the clock
        // moves past the lease.
        let id = created["id"].as_str().unwrap();
        eventually(WAIT, "the retry is scheduled", || async {
            delivery_log(&hub, id)
                .await
                .iter()
                .any(|a| is_event_attempt(a) && !a["next_attempt_at"].is_null())
                .then_some(())
        })
        .await;
        hub.advance_clock(MINUTE).await;
        // The barrier is the hub's own decision on the retry: once it logged the drop, the
        // message is settled and no attempt can follow.
        eventually(WAIT, "the retry is dropped", || async {
            hub.log()
                .contains("delivery dropped: subscription gone or lapsed")
                .then_some(())
        })
        .await;
        assert_eq!(
            events_at(&receiver.received(), "/d").len(),
            1,
            "the retry after the lapse is dropped"
        );
    }
}

hub_tests::on_every_backend!(
    short_lease_lapses_everywhere,
    pending_lapses_after_a_day,
    refresh_extends_the_lease,
    expiring_notice_once,
    queued_delivery_dropped_after_lapse,
);
