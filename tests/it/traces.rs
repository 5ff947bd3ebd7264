//! Trace context, on every backend: events published with a `traceparent` carry its trace through
//! the queues into the history (`trace_id` on their reads), a batch's events all of it; an
//! invalid header or none leaves the event without one; receivers never see it.

use hub_tests::*;
use serde_json::{Value, json};

const FIRST: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const SECOND: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

/// Publishes `body` with `traceparent` (when given); the ids of the events it accepted.
async fn publish_traced(hub: &HubProcess, traceparent: Option<&str>, body: Value) -> Vec<String> {
    let mut req = hub
        .http
        .post(format!("{}/v1/events", hub.url))
        .bearer_auth(KEY_A)
        .json(&body);
    if let Some(traceparent) = traceparent {
        req = req.header("traceparent", traceparent);
    }
    let resp = req.send().await.expect("the hub answers");
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await.unwrap();
    match status {
        202 => vec![answer["id"].as_str().unwrap().to_string()],
        200 => answer["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["id"].as_str().unwrap().to_string())
            .collect(),
        other => panic!("published: {other} {answer}"),
    }
}

/// The event's read from the history, once fan-out kept it.
async fn read_event(hub: &HubProcess, id: &str) -> Value {
    eventually(WAIT, &format!("{id} in the history"), || async move {
        let read = hub
            .call("GET", &format!("/v1/events/{id}"), Some(KEY_A), None)
            .await;
        (read.status == 200).then_some(read.body)
    })
    .await
}

mod scenarios {
    use super::*;

    pub async fn events_carry_their_producers_trace(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        subscribe_confirmed(&hub, &receiver, KEY_A, "/t", json!({"topics": ["door.*"]})).await;

        let first = publish_traced(
            &hub,
            Some(FIRST),
            json!({"topic": "door.opened", "data": {"n": 1}}),
        )
        .await;
        let batch = publish_traced(
            &hub,
            Some(SECOND),
            json!({"events": [
                {"topic": "door.opened", "data": {"n": 2}},
                {"topic": "door.closed", "data": {"n": 3}}
            ]}),
        )
        .await;
        let invalid = publish_traced(
            &hub,
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            json!({"topic": "door.opened", "data": {"n": 4}}),
        )
        .await;
        let untraced = publish_traced(
            &hub,
            None,
            json!({"topic": "door.opened", "data": {"n": 5}}),
        )
        .await;

        assert_eq!(
            read_event(&hub, &first[0]).await["trace_id"],
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for id in &batch {
            assert_eq!(
                read_event(&hub, id).await["trace_id"],
                "0af7651916cd43dd8448eb211c80319c",
                "every event of the batch continues its request's trace"
            );
        }
        for id in invalid.iter().chain(&untraced) {
            let read = read_event(&hub, id).await;
            assert!(read.get("trace_id").is_none(), "{read}");
        }

        // Delivered, without the trace: it is the hub's, not the receiver's.
        let received = eventually(WAIT, "five events at /t", || async {
            let received = receiver.received();
            (events_at(&received, "/t").len() >= 5).then_some(received)
        })
        .await;
        for request in events_at(&received, "/t") {
            let body = String::from_utf8_lossy(&request.body).to_string();
            assert!(!body.contains("trace"), "{body}");
            assert!(!body.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{body}");
        }
    }
}

on_every_backend!(events_carry_their_producers_trace);
