//! `/metrics` on every backend, read by an independent parser (the Python `prometheus_client`
//! OpenMetrics parser, in the test venv): the counts match the traffic the test sent.

use hub_tests::*;
use serde_json::{Value, json};

/// The samples of an OpenMetrics text as `(name, labels, value)`, parsed by `prometheus_client`.
fn parse(text: &str) -> Vec<(String, Value, f64)> {
    let script = "import sys, json\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
        print(json.dumps([[s.name, s.labels, s.value] for f in parse(sys.stdin.read()) for s in f.samples]))";
    let out = venv_python(script, text.as_bytes());
    let samples: Vec<(String, Value, f64)> = serde_json::from_slice(&out).unwrap();
    samples
}

fn value(samples: &[(String, Value, f64)], name: &str, labels: Value) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && *l == labels)
        .map(|s| s.2)
}

mod scenarios {
    use super::*;

    pub async fn metrics_count_what_happened(backend: Backend) {
        let hub = HubProcess::start(backend, &["--retry-schedule", "1h"]).await;
        let receiver = TestReceiver::scripted(|req, _| {
            let event = req.json()["type"] != "Confirmation";
            Reply::status(if event && req.path == "/down" {
                500
            } else {
                200
            })
        })
        .await;
        let ok = subscribe_confirmed(&hub, &receiver, KEY_A, "/ok", json!({})).await;
        let down = subscribe_confirmed(&hub, &receiver, KEY_A, "/down", json!({})).await;
        for n in 0..3 {
            publish(
                &hub,
                KEY_A,
                json!({"topic": "door.request.allowed", "data": {"n": n}}),
            )
            .await;
        }
        // Barrier: three delivered to /ok, three failures recorded for /down.
        for (sub, wanted) in [(&ok, true), (&down, false)] {
            let id = sub["id"].as_str().unwrap();
            eventually(WAIT, "three attempts recorded", || async {
                let n = delivery_log(&hub, id)
                    .await
                    .iter()
                    .filter(|a| is_event_attempt(a) && a["delivered"] == wanted)
                    .count();
                (n == 3).then_some(())
            })
            .await;
        }
        let answer = hub
            .http
            .get(format!("{}/metrics", hub.url))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert!(
            answer.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let samples = parse(&answer.text().await.unwrap());
        let get = |name: &str, labels: Value| value(&samples, name, labels);
        assert_eq!(
            get("webhook_hub_events_published_total", json!({})),
            Some(3.0)
        );
        // Two confirmations and three events delivered; three events failed.
        assert_eq!(
            get(
                "webhook_hub_delivery_attempts_total",
                json!({"outcome": "delivered"})
            ),
            Some(5.0)
        );
        assert_eq!(
            get(
                "webhook_hub_delivery_attempts_total",
                json!({"outcome": "failed"})
            ),
            Some(3.0)
        );
        assert_eq!(
            get("webhook_hub_delivery_attempt_seconds_count", json!({})),
            Some(8.0)
        );
        assert_eq!(
            get("webhook_hub_deliveries_exhausted_total", json!({})),
            Some(0.0)
        );
        if backend != Backend::Aws {
            // The three retries wait an hour on the deliveries queue.
            assert_eq!(
                get("webhook_hub_queue_messages", json!({"queue": "deliveries"})),
                Some(3.0)
            );
            assert!(
                get(
                    "webhook_hub_queue_oldest_message_age_seconds",
                    json!({"queue": "deliveries"})
                )
                .is_some()
            );
            assert_eq!(
                get("webhook_hub_subscriptions", json!({"status": "active"})),
                Some(2.0)
            );
            assert_eq!(
                get("webhook_hub_subscriptions", json!({"status": "paused"})),
                Some(0.0)
            );
        } else {
            assert!(get("webhook_hub_queue_messages", json!({"queue": "deliveries"})).is_some());
        }
    }
}

hub_tests::on_every_backend!(metrics_count_what_happened);
