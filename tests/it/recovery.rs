//! Getting failed deliveries through, on every backend: a receiver fails until its deliveries
//! are exhausted, the account's operational subscriber hears `hub.delivery.exhausted` (and a
//! `*` subscriber does not), the receiver is fixed, one delivery is resent and the rest
//! recovered, each arriving once more under its original `webhook-id`. A paused subscription's
//! deliveries are parked and arrive after the resume in event order; a disabled one's too, after
//! the account was warned (`hub.subscription.failing`) and told (`hub.subscription.disabled`).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hub_tests::*;
use serde_json::{Value, json};

/// Operational events of `topic` an operational receiver got, checked signed with `secret`.
fn operational(ops: &TestReceiver, secret: &str, topic: &str) -> Vec<Value> {
    ops.received()
        .iter()
        .filter(|r| r.json()["type"] == topic)
        .map(|r| {
            assert!(
                verify_standard(secret, r),
                "{topic} is signed like any delivery"
            );
            r.json()
        })
        .collect()
}

/// The `webhook-id`s of the event deliveries `receiver` answered `2xx` to at `path`, in order.
fn delivered_ids(receiver: &TestReceiver, path: &str, delivered_from: usize) -> Vec<String> {
    events_at(&receiver.received(), path)
        .into_iter()
        .skip(delivered_from)
        .map(|r| r.header("webhook-id").to_string())
        .collect()
}

/// The hub's `delivery parked` lines for `subscription_id`.
fn parked_lines(hub: &HubProcess, subscription_id: &str) -> usize {
    hub.log()
        .lines()
        .filter(|l| l.contains("\"delivery parked\"") && l.contains(subscription_id))
        .count()
}

/// The account's operational subscriber, confirmed, on `pattern`; with its secret.
async fn operational_subscriber(hub: &HubProcess, pattern: &str) -> (TestReceiver, String) {
    let ops = TestReceiver::start().await;
    let created = subscribe_confirmed(hub, &ops, KEY_A, "/ops", json!({"topics": [pattern]})).await;
    let secret = created["secret"].as_str().unwrap().to_string();
    (ops, secret)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    eventually(WAIT, what, || {
        let found = done().then_some(());
        async move { found }
    })
    .await;
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Publishes `n` events one after another (each in a later millisecond, so their ids, which are
/// time-ordered, are in publish order); returns their ids.
async fn publish_in_order(hub: &HubProcess, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let body = publish(
            hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {"n": i}}),
        )
        .await;
        ids.push(body["id"].as_str().unwrap().to_string());
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    ids
}

mod scenarios {
    use super::*;

    pub async fn exhausted_deliveries_are_reported_resent_and_recovered(backend: Backend) {
        // Two attempts a second apart, then exhausted. With the event history off, what the
        // subscription keeps is all there is to resend (`history` covers the history's resend).
        let hub = HubProcess::start(backend, &["--retry-schedule", "1s", "--history", "off"]).await;
        let (ops, ops_secret) = operational_subscriber(&hub, "hub.*").await;
        let everything = TestReceiver::start().await;
        subscribe_confirmed(&hub, &everything, KEY_A, "/all", json!({"topics": ["*"]})).await;
        let receiver = TestReceiver::failing_events().await;
        let sub = subscribe_confirmed(&hub, &receiver, KEY_A, "/r", json!({})).await;
        let sub_id = sub["id"].as_str().unwrap().to_string();

        // Producers cannot publish under the hub's namespace.
        let refused = hub
            .call(
                "POST",
                "/v1/events",
                Some(KEY_A),
                Some(json!({"topic": "hub.delivery.exhausted", "data": {}})),
            )
            .await;
        assert_eq!(refused.status, 400, "{:?}", refused.body);
        assert_eq!(refused.body["code"], "reserved_topic");

        let since = hub::clock::rfc3339(now_ms() - 1000);
        let ids = publish_in_order(&hub, 3).await;
        wait_for("three hub.delivery.exhausted", || {
            operational(&ops, &ops_secret, "hub.delivery.exhausted").len() >= 3
        })
        .await;
        let exhausted = operational(&ops, &ops_secret, "hub.delivery.exhausted");
        let reported: BTreeSet<&str> = exhausted
            .iter()
            .map(|e| e["data"]["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(reported, ids.iter().map(String::as_str).collect());
        for event in &exhausted {
            assert_eq!(event["data"]["subscription_id"], sub_id.as_str());
            assert_eq!(event["data"]["topic"], "door.request.allowed");
            assert_eq!(event["data"]["attempts"], 2);
            assert_eq!(event["data"]["last_status_code"], 500);
            assert_eq!(event["account"], "acme");
        }
        assert_eq!(
            events_at(&receiver.received(), "/r").len(),
            6,
            "two attempts each"
        );

        // Fixed: one resent, the other two recovered, each once more under its own id.
        receiver.set_script(|_, _| Reply::status(200));
        let resent = hub
            .call(
                "POST",
                &format!("/v1/subscriptions/{sub_id}/deliveries/{}/resend", ids[0]),
                Some(KEY_A),
                None,
            )
            .await;
        assert_eq!(resent.status, 202, "{:?}", resent.body);
        assert_eq!(resent.body["event_id"], ids[0].as_str());
        let recovered = hub
            .call(
                "POST",
                &format!("/v1/subscriptions/{sub_id}/recover"),
                Some(KEY_A),
                Some(json!({"since": since})),
            )
            .await;
        assert_eq!(recovered.status, 202, "{:?}", recovered.body);
        assert_eq!(recovered.body, json!({"requeued": 2, "more": false}));
        wait_for("the three deliveries again", || {
            delivered_ids(&receiver, "/r", 6).len() >= 3
        })
        .await;
        let again: BTreeSet<String> = delivered_ids(&receiver, "/r", 6).into_iter().collect();
        assert_eq!(again, ids.iter().cloned().collect(), "original webhook-ids");
        wait_for("hub.subscription.recovered", || {
            !operational(&ops, &ops_secret, "hub.subscription.recovered").is_empty()
        })
        .await;
        let notice = &operational(&ops, &ops_secret, "hub.subscription.recovered")[0];
        assert_eq!(notice["data"]["subscription_id"], sub_id.as_str());
        assert_eq!(notice["data"]["requeued"], 2);

        // Nothing is left to recover; a delivered event is not kept, an unknown one never was.
        let again = hub
            .call(
                "POST",
                &format!("/v1/subscriptions/{sub_id}/recover"),
                Some(KEY_A),
                Some(json!({"since": since})),
            )
            .await;
        assert_eq!(again.body, json!({"requeued": 0, "more": false}));
        for event_id in [ids[1].as_str(), "evt_unknown"] {
            let missing = hub
                .call(
                    "POST",
                    &format!("/v1/subscriptions/{sub_id}/deliveries/{event_id}/resend"),
                    Some(KEY_A),
                    None,
                )
                .await;
            assert_eq!(missing.status, 404, "{:?}", missing.body);
        }
        // Bad windows, another account, a missing scope.
        for (body, code) in [
            (json!({"since": "yesterday"}), "invalid_time"),
            (json!({"since": since, "until": since}), "invalid_time"),
            (json!({"from": since}), "invalid_json"),
        ] {
            let bad = hub
                .call(
                    "POST",
                    &format!("/v1/subscriptions/{sub_id}/recover"),
                    Some(KEY_A),
                    Some(body),
                )
                .await;
            assert_eq!((bad.status, bad.body["code"].as_str()), (400, Some(code)));
        }
        let foreign = hub
            .call(
                "POST",
                &format!("/v1/subscriptions/{sub_id}/recover"),
                Some(KEY_B),
                Some(json!({"since": since})),
            )
            .await;
        assert_eq!(foreign.status, 404);

        // `*` means the platform's topics: the operational events went to `/ops` only.
        assert!(
            everything
                .received()
                .iter()
                .all(|r| !r.json()["type"].as_str().unwrap_or("").starts_with("hub.")),
            "a `*` subscription gets no operational events"
        );
        assert_eq!(events_at(&everything.received(), "/all").len(), 3);
    }

    pub async fn paused_deliveries_flow_on_resume_in_event_order(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let sub = subscribe_confirmed(&hub, &receiver, KEY_A, "/p", json!({})).await;
        let sub_id = sub["id"].as_str().unwrap();
        let path = format!("/v1/subscriptions/{sub_id}");
        let paused = hub
            .call("PATCH", &path, Some(KEY_A), Some(json!({"active": false})))
            .await;
        assert_eq!(paused.body["status"], "paused");

        // 1,000 events back to back, a hundred per request: many share a millisecond, so only
        // ids that sort in publish order within one keep them in order.
        let mut ids = Vec::new();
        for batch in 0..10 {
            let events: Vec<Value> = (0..100)
                .map(|n| json!({"topic": "door.request.allowed", "data": {"n": batch * 100 + n}}))
                .collect();
            let answer = hub
                .call(
                    "POST",
                    "/v1/events",
                    Some(KEY_A),
                    Some(json!({"events": events})),
                )
                .await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            ids.extend(
                answer.body["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|item| item["id"].as_str().unwrap().to_string()),
            );
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids, "ids sort in publish order");
        // The hub's own decision is the barrier: every one parked, none delivered.
        eventually(Duration::from_secs(180), "1,000 parked deliveries", || {
            let parked = parked_lines(&hub, sub_id);
            async move { (parked >= 1000).then_some(()) }
        })
        .await;
        assert!(events_at(&receiver.received(), "/p").is_empty());

        let resumed = hub
            .call("PATCH", &path, Some(KEY_A), Some(json!({"active": true})))
            .await;
        assert_eq!(resumed.body["status"], "active");
        eventually(Duration::from_secs(180), "the parked deliveries", || {
            let delivered = delivered_ids(&receiver, "/p", 0).len();
            async move { (delivered >= 1000).then_some(()) }
        })
        .await;
        let released = delivered_ids(&receiver, "/p", 0);
        assert_eq!(released.len(), 1000, "each once");
        assert!(released == ids, "in exactly their publish order");
        let data: Vec<i64> = events_at(&receiver.received(), "/p")
            .iter()
            .map(|r| r.json()["data"]["n"].as_i64().unwrap())
            .collect();
        assert_eq!(data, (0..1000).collect::<Vec<_>>());
        let after = publish_in_order(&hub, 1).await;
        wait_for("a delivery after the resume", || {
            delivered_ids(&receiver, "/p", 0).len() >= 1001
        })
        .await;
        assert_eq!(delivered_ids(&receiver, "/p", 1000), after, "each once");
    }

    pub async fn a_failing_subscription_warns_then_disables_and_parks(backend: Backend) {
        let hub = HubProcess::start(
            backend,
            &[
                "--retry-schedule",
                "1s,1s,1s,1s,1s,1s,1s,1s",
                "--warn-after",
                "1s",
                "--disable-after",
                "4s",
            ],
        )
        .await;
        let (ops, ops_secret) = operational_subscriber(&hub, "hub.subscription.*").await;
        let receiver = TestReceiver::failing_events().await;
        let sub = subscribe_confirmed(&hub, &receiver, KEY_A, "/d", json!({})).await;
        let sub_id = sub["id"].as_str().unwrap().to_string();

        let first = publish_in_order(&hub, 1).await;
        wait_for("hub.subscription.disabled", || {
            !operational(&ops, &ops_secret, "hub.subscription.disabled").is_empty()
        })
        .await;
        let failing = operational(&ops, &ops_secret, "hub.subscription.failing");
        assert_eq!(failing.len(), 1, "warned once per streak: {failing:?}");
        assert_eq!(failing[0]["data"]["subscription_id"], sub_id.as_str());
        let disabled = &operational(&ops, &ops_secret, "hub.subscription.disabled")[0];
        assert_eq!(disabled["data"]["subscription_id"], sub_id.as_str());
        let got = hub
            .call(
                "GET",
                &format!("/v1/subscriptions/{sub_id}"),
                Some(KEY_A),
                None,
            )
            .await;
        assert_eq!(got.body["status"], "disabled");

        // The delivery that disabled it, and one published meanwhile, wait parked.
        let second = publish_in_order(&hub, 1).await;
        wait_for("both parked", || parked_lines(&hub, &sub_id) >= 2).await;
        let attempts_before = events_at(&receiver.received(), "/d").len();
        receiver.set_script(|_, _| Reply::status(200));
        let resumed = hub
            .call(
                "PATCH",
                &format!("/v1/subscriptions/{sub_id}"),
                Some(KEY_A),
                Some(json!({"active": true})),
            )
            .await;
        assert_eq!(resumed.body["status"], "active");
        wait_for("the parked deliveries", || {
            delivered_ids(&receiver, "/d", attempts_before).len() >= 2
        })
        .await;
        assert_eq!(
            delivered_ids(&receiver, "/d", attempts_before),
            [first[0].clone(), second[0].clone()],
            "in event order"
        );
    }
}

hub_tests::on_every_backend!(
    exhausted_deliveries_are_reported_resent_and_recovered,
    paused_deliveries_flow_on_resume_in_event_order,
    a_failing_subscription_warns_then_disables_and_parks,
);
