//! Traces, on every backend. Untraced (no exporter): events published with a `traceparent`
//! carry its trace through the queues into the history (`trace_id` on their reads), a batch's
//! events all of it; an invalid header or none leaves the event without one; receivers never see
//! it. Traced (to a test OTLP collector): one trace from the producer's request through the
//! fan-out to every attempt of two subscriptions, a retry included, each a child of the publish;
//! a publish without a header starts a trace of its own, and so does a sweep; no span holds a
//! secret, a payload or a receiver's credential.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

    pub async fn one_trace_from_publish_to_every_attempt(backend: Backend) {
        const TOKEN: &str = "receiver-token-5e1f0a77c2";
        const QUERY_TOKEN: &str = "query-token-3c9d81e6";
        const MARKER: &str = "payload-marker-7d41a9";
        let collector = TestReceiver::start().await;
        let endpoint = collector.url("");
        let hub = HubProcess::start_on(
            backend,
            &unique("otel"),
            &["--otlp-endpoint", &endpoint, "--retry-schedule", "1s,2s"],
            &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
        )
        .await;
        // `/b` fails the traced event's first attempt: that delivery is retried.
        let failed_once = Arc::new(AtomicBool::new(false));
        let failing = failed_once.clone();
        let receiver = TestReceiver::scripted(move |req, _| {
            let traced = req.json()["data"]["marker"] == MARKER;
            if req.path.starts_with("/b") && traced && !failing.swap(true, Ordering::SeqCst) {
                Reply::status(500)
            } else {
                Reply::status(200)
            }
        })
        .await;
        let a = subscribe_confirmed(
            &hub,
            &receiver,
            KEY_A,
            "/a",
            json!({"topics": ["door.*"], "receiver_auth": {"type": "bearer", "token": TOKEN}}),
        )
        .await;
        let b_path = format!("/b?token={QUERY_TOKEN}");
        let b = subscribe_confirmed(
            &hub,
            &receiver,
            KEY_A,
            &b_path,
            json!({"topics": ["door.*"]}),
        )
        .await;
        let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());

        let traced = publish_traced(
            &hub,
            Some(FIRST),
            json!({"topic": "door.opened", "data": {"marker": MARKER}}),
        )
        .await
        .remove(0);
        let rooted = publish_traced(
            &hub,
            None,
            json!({"topic": "door.closed", "data": {"n": 2}}),
        )
        .await
        .remove(0);
        eventually(
            WAIT,
            "both events at /a, and at /b after a retry",
            || async {
                let received = receiver.received();
                let done = events_at(&received, "/a").len() >= 2
                    && events_at(&received, &b_path).len() >= 3;
                done.then_some(())
            },
        )
        .await;
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(read_event(&hub, &traced).await["trace_id"], trace);

        // The publish, its fan-out and three attempts, all exported (the exporter sends in
        // batches every 100 ms here).
        let spans = eventually(WAIT, "the event's five spans", || async {
            let spans = exported_spans(&collector);
            let in_trace = spans.iter().filter(|s| s.trace_id == trace).count();
            (in_trace >= 5).then_some(spans)
        })
        .await;
        let in_trace: Vec<&ExportedSpan> = spans.iter().filter(|s| s.trace_id == trace).collect();
        let publish = in_trace
            .iter()
            .find(|s| s.kind == SPAN_KIND_SERVER)
            .expect("the publish's span");
        assert_eq!(publish.name, "POST /v1/events");
        assert_eq!(
            publish.parent_span_id, "00f067aa0ba902b7",
            "the producer's span is its parent"
        );
        assert_eq!(publish.attr("http.route"), "/v1/events");
        assert_eq!(publish.attr("http.request.method"), "POST");
        assert_eq!(publish.attr("http.response.status_code"), "202");
        assert_eq!(publish.service, "webhook-hub");
        let fan_out = in_trace
            .iter()
            .find(|s| s.kind == SPAN_KIND_CONSUMER)
            .expect("the fan-out's span");
        assert_eq!(fan_out.parent_span_id, publish.span_id);
        assert_eq!(fan_out.attr("webhook.event.id"), traced);
        assert_eq!(fan_out.attr("webhook.subscriptions"), "2");
        assert_eq!(fan_out.attr("messaging.operation.type"), "process");
        let mut attempts: Vec<(String, String, String, String)> = in_trace
            .iter()
            .filter(|s| s.kind == SPAN_KIND_CLIENT)
            .map(|s| {
                assert_eq!(s.name, "POST");
                assert_eq!(
                    s.parent_span_id, publish.span_id,
                    "each attempt is a child of the publish"
                );
                assert_eq!(s.attr("webhook.event.id"), traced);
                assert_eq!(s.attr("server.address"), "127.0.0.1");
                (
                    s.attr("webhook.subscription.id").to_string(),
                    s.attr("webhook.attempt").to_string(),
                    s.attr("http.response.status_code").to_string(),
                    s.attr("error.type").to_string(),
                )
            })
            .collect();
        attempts.sort();
        let mut expected = vec![
            (
                a_id.to_string(),
                "1".to_string(),
                "200".to_string(),
                String::new(),
            ),
            (
                b_id.to_string(),
                "1".to_string(),
                "500".to_string(),
                "500".to_string(),
            ),
            (
                b_id.to_string(),
                "2".to_string(),
                "200".to_string(),
                String::new(),
            ),
        ];
        expected.sort();
        assert_eq!(
            attempts, expected,
            "one span per attempt, the retry in the same trace"
        );

        // Published without a header: the publish starts the trace its event carries.
        let root_trace = read_event(&hub, &rooted).await["trace_id"]
            .as_str()
            .expect("a traced hub gives every event a trace")
            .to_string();
        let spans = eventually(WAIT, "the second event's spans", || async {
            let spans = exported_spans(&collector);
            let n = spans.iter().filter(|s| s.trace_id == root_trace).count();
            (n >= 4).then_some(spans)
        })
        .await;
        let root = spans
            .iter()
            .find(|s| s.trace_id == root_trace && s.kind == SPAN_KIND_SERVER)
            .expect("its publish");
        assert_eq!(root.parent_span_id, "", "a root span");

        // A sweep is a trace of its own.
        hub.sweep().await;
        let spans = eventually(WAIT, "the sweep's span", || async {
            let spans = exported_spans(&collector);
            spans
                .iter()
                .any(|s| s.name == "sweep" && s.parent_span_id.is_empty())
                .then_some(spans)
        })
        .await;
        let sweep = spans.iter().find(|s| s.name == "sweep").unwrap();
        assert_eq!(sweep.attr("webhook.removed"), "0", "{sweep:?}");

        // No secret, payload or credential in any attribute of any span.
        let forbidden = [
            a["secret"].as_str().unwrap(),
            b["secret"].as_str().unwrap(),
            TOKEN,
            QUERY_TOKEN,
            MARKER,
            KEY_A,
            "whsec_",
        ];
        for span in &spans {
            for (key, value) in &span.attributes {
                for secret in forbidden {
                    assert!(!value.contains(secret), "{} {key}={value}", span.name);
                }
            }
        }
    }
}

on_every_backend!(
    events_carry_their_producers_trace,
    one_trace_from_publish_to_every_attempt
);
