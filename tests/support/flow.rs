//! The steps most scenarios take: subscribe (and confirm), publish, pick deliveries.

use std::time::Duration;

use serde_json::{Value, json};

use crate::*;

/// How long the suites wait for a delivery: generous, since moto on a loaded 2-core machine can
/// take many seconds per call (a wait that succeeds returns as soon as it can).
pub const WAIT: Duration = Duration::from_secs(30);

/// Subscribes `path` on `receiver`, waits for the confirmation, follows its link. Returns the
/// create response (with `secret`).
pub async fn subscribe_confirmed(
    hub: &HubProcess,
    receiver: &TestReceiver,
    key: &str,
    path: &str,
    extra: Value,
) -> Value {
    let created = subscribe_pending(hub, receiver, key, path, extra).await;
    confirm_at(hub, receiver, path, created["id"].as_str().unwrap()).await;
    created
}

/// Waits for the confirmation of subscription `id` at `path` and follows its link; expects it
/// active.
pub async fn confirm_at(hub: &HubProcess, receiver: &TestReceiver, path: &str, id: &str) {
    let confirmation = receiver
        .wait_for_match(WAIT, |r| {
            r.path == path
                && r.json()["type"] == "Confirmation"
                && r.json()["subscription"]["id"] == id
        })
        .await;
    let url = confirmation.json()["confirmation_url"]
        .as_str()
        .unwrap()
        .to_string();
    let confirmed = hub.call("GET", &url, None, None).await;
    assert_eq!(confirmed.status, 200, "{:?}", confirmed.body);
    assert_eq!(confirmed.body["status"], "active");
}

/// Subscribes `path` on `receiver` (topic `door.request.allowed` unless `extra` says otherwise); expects 201.
pub async fn subscribe_pending(
    hub: &HubProcess,
    receiver: &TestReceiver,
    key: &str,
    path: &str,
    extra: Value,
) -> Value {
    let mut body = json!({"callback_url": receiver.url(path), "topics": ["door.request.allowed"]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    let created = hub
        .call("POST", "/v1/subscriptions", Some(key), Some(body))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    created.body
}

/// Publishes an event; expects 202.
pub async fn publish(hub: &HubProcess, key: &str, body: Value) -> Value {
    let answer = hub.call("POST", "/v1/events", Some(key), Some(body)).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    answer.body
}

/// Publishes `events` as one batch (at most 100) with `key`; expects every one accepted.
pub async fn publish_all(hub: &HubProcess, key: &str, events: Vec<Value>) {
    let answer = hub
        .call(
            "POST",
            "/v1/events",
            Some(key),
            Some(serde_json::json!({"events": events})),
        )
        .await;
    assert_eq!(
        answer.body["failed"], 0,
        "{}: {}",
        answer.status, answer.body["data"][0]
    );
}

/// Publishes numbered events (`data.<field>` = 0, 1, …) of `topic`, `count` in all, a hundred
/// per request, in order.
pub async fn publish_numbered(hub: &HubProcess, topic: &str, field: &str, count: usize) {
    for first in (0..count).step_by(100) {
        let events = (first..(first + 100).min(count))
            .map(|n| serde_json::json!({"topic": topic, "data": {field: n}}))
            .collect();
        publish_all(hub, KEY_A, events).await;
    }
}

/// The non-confirmation requests a path received.
pub fn events_at<'a>(received: &'a [Received], path: &str) -> Vec<&'a Received> {
    received
        .iter()
        .filter(|r| r.path == path && r.json()["type"] != "Confirmation")
        .collect()
}

/// How many deliveries fan-out queued for `event_id`: the hub's own recorded decision (its
/// `fanned out` log line), waited for. Asserting on it, not on a quiet receiver, is what shows
/// that nothing was sent to a subscription that should get nothing: no wall-clock window.
pub async fn fanned_out(hub: &HubProcess, event_id: &str) -> u64 {
    crate::eventually(WAIT, &format!("the fan-out of {event_id}"), || async {
        hub.log().lines().find_map(|line| {
            let entry: Value = serde_json::from_str(line).ok()?;
            (entry["message"] == "fanned out" && entry["event_id"] == event_id)
                .then(|| entry["deliveries"].as_u64())
                .flatten()
        })
    })
    .await
}

/// A subscription's delivery log as the API answers it (`GET …/deliveries`), newest first.
pub async fn delivery_log(hub: &HubProcess, id: &str) -> Vec<Value> {
    hub.call(
        "GET",
        &format!("/v1/subscriptions/{id}/deliveries"),
        Some(KEY_A),
        None,
    )
    .await
    .body["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Whether a delivery-log entry is an event's attempt (not a confirmation's).
pub fn is_event_attempt(attempt: &Value) -> bool {
    attempt["message_id"]
        .as_str()
        .is_some_and(|m| m.starts_with("evt_"))
}

/// An RFC 3339 timestamp of the API (`timestamp`, `next_attempt_at`) as Unix ms.
pub fn timestamp_ms(value: &Value) -> i64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("a timestamp: {value}"));
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The hub's `/metrics`, as text.
pub async fn metrics_text(hub: &HubProcess) -> String {
    hub.http
        .get(format!("{}/metrics", hub.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// How many messages the hub's deliveries queue holds (waiting, in flight or delayed), from its
/// `/metrics`: 0 once every delivery was acknowledged.
pub async fn deliveries_depth(hub: &HubProcess) -> u64 {
    let metrics = metrics_text(hub).await;
    let depth = metrics
        .lines()
        .find(|l| l.starts_with("webhook_hub_queue_messages{queue=\"deliveries\"}"))
        .unwrap_or_else(|| panic!("no deliveries depth in:\n{metrics}"));
    depth
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{depth}")) as u64
}
