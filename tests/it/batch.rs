//! Batch publishing on every backend: `{"events": [...]}` answered item by item, one bad event
//! refusing only itself, each event's `id` deduplicated on its own (within the batch and across
//! requests), exactly the accepted events delivered, and the batch's own bounds.

use std::collections::HashSet;

use hub_tests::*;
use serde_json::{Value, json};

fn good(n: u32) -> Value {
    json!({"topic": "door.request.allowed", "data": {"n": n}})
}

mod scenarios {
    use super::*;

    pub async fn batch_publish_answers_each_event(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        subscribe_confirmed(&hub, &receiver, KEY_A, "/b", json!({})).await;

        let mut keyed = good(1);
        keyed["id"] = json!("order-1");
        let mut repeated = good(5);
        repeated["id"] = json!("order-1");
        let mut bad_labels = good(6);
        bad_labels["labels"] = json!({"": "x"});
        let batch = json!({"events": [
            keyed,
            {"topic": "no", "data": {}},
            good(3),
            {"topic": "door.request.allowed"},
            repeated,
            bad_labels,
        ]});
        let answer = hub
            .call("POST", "/v1/events", Some(KEY_A), Some(batch))
            .await;
        assert_eq!(answer.status, 207, "{:#}", answer.body);
        let items = answer.body["data"].as_array().unwrap();
        let shape: Vec<(u64, u64, Option<&str>)> = items
            .iter()
            .map(|i| {
                (
                    i["index"].as_u64().unwrap(),
                    i["status"].as_u64().unwrap(),
                    i["code"].as_str(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (0, 202, None),
                (1, 400, Some("invalid_topic")),
                (2, 202, None),
                (3, 400, Some("invalid_json")),
                (4, 202, None),
                (5, 400, Some("invalid_labels")),
            ]
        );
        assert_eq!(
            (
                answer.body["accepted"].as_u64(),
                answer.body["failed"].as_u64()
            ),
            (Some(3), Some(3))
        );
        let first = items[0]["id"].as_str().unwrap().to_string();
        let plain = items[2]["id"].as_str().unwrap().to_string();
        assert_eq!(items[0]["duplicate"], false);
        assert_eq!(
            (items[4]["id"].as_str(), items[4]["duplicate"].as_bool()),
            (Some(first.as_str()), Some(true)),
            "a key repeated within the batch answers as its first occurrence"
        );
        assert!(
            items
                .iter()
                .all(|i| i["message"].is_string() || i["status"] == 202)
        );

        // The same key in a later batch: a duplicate of the queued event, and a 200.
        let mut again = good(7);
        again["id"] = json!("order-1");
        let repeat = hub
            .call(
                "POST",
                "/v1/events",
                Some(KEY_A),
                Some(json!({"events": [again]})),
            )
            .await;
        assert_eq!(repeat.status, 200, "{:#}", repeat.body);
        assert_eq!(repeat.body["data"][0]["id"], first.as_str());
        assert_eq!(repeat.body["data"][0]["duplicate"], true);

        // Exactly the accepted events arrive: a sentinel published after them is the barrier.
        let sentinel = publish(&hub, KEY_A, good(99)).await;
        let sentinel = sentinel["id"].as_str().unwrap().to_string();
        receiver
            .wait_for_match(WAIT, |r| r.header("webhook-id") == sentinel)
            .await;
        let delivered: Vec<String> = events_at(&receiver.received(), "/b")
            .iter()
            .map(|r| r.header("webhook-id").to_string())
            .collect();
        let distinct: HashSet<&String> = delivered.iter().collect();
        assert_eq!(
            distinct,
            [&first, &plain, &sentinel].into_iter().collect(),
            "{delivered:?}"
        );

        // A full batch of 100, then the batch's own bounds.
        let hundred: Vec<Value> = (100..200).map(good).collect();
        let full = hub
            .call(
                "POST",
                "/v1/events",
                Some(KEY_A),
                Some(json!({"events": hundred})),
            )
            .await;
        assert_eq!(
            (full.status, full.body["accepted"].as_u64()),
            (200, Some(100))
        );
        let ids: HashSet<&str> = full.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 100, "each event its own id");
        for (body, why) in [
            (
                json!({"events": (0..101).map(good).collect::<Vec<_>>()}),
                "101 events",
            ),
            (json!({"events": []}), "no events"),
            (
                json!({"events": [good(1)], "topic": "door.request.allowed"}),
                "a batch and more",
            ),
            (
                json!({"events": {"topic": "door.request.allowed"}}),
                "not a list",
            ),
        ] {
            let refused = hub
                .call("POST", "/v1/events", Some(KEY_A), Some(body))
                .await;
            assert_eq!(
                (refused.status, refused.body["code"].as_str()),
                (400, Some("invalid_batch")),
                "{why}"
            );
        }
        // Every one of the hundred arrives.
        eventually(WAIT, "the hundred delivered", || async {
            let got: HashSet<String> = events_at(&receiver.received(), "/b")
                .iter()
                .map(|r| r.header("webhook-id").to_string())
                .collect();
            ids.iter().all(|id| got.contains(*id)).then_some(())
        })
        .await;
    }

    /// A batch takes the publish scope, as one event does.
    pub async fn batch_publish_needs_the_publish_scope(backend: Backend) {
        let hub = HubProcess::start(backend, &["--api-key", "reader=acme:webhooks:read"]).await;
        let refused = hub
            .call(
                "POST",
                "/v1/events",
                Some("reader"),
                Some(json!({"events": [good(1)]})),
            )
            .await;
        assert_eq!(
            (refused.status, refused.body["code"].as_str()),
            (403, Some("insufficient_scope"))
        );
    }
}

hub_tests::on_every_backend!(
    batch_publish_answers_each_event,
    batch_publish_needs_the_publish_scope
);
