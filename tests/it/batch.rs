//! Batch publishing on every backend: `{"events": [...]}` answered item by item, one bad event
//! refusing only itself, each event's `id` deduplicated on its own (within the batch and across
//! requests), exactly the accepted events delivered, and the batch's own bounds.

use std::collections::HashSet;

use hub::ports::Queue;
use hub_tests::*;
use serde_json::{Value, json};

fn good(n: u32) -> Value {
    json!({"topic": "door.request.allowed", "data": {"n": n}})
}

/// Publishes `topics` (one event each) for `acme` and fans them out as one consumer batch;
/// returns each message's verdict.
async fn fan_out_together(hub: &InProcess, topics: &[&str]) -> Vec<bool> {
    fan_out_together_with(hub, topics, json!({})).await
}

/// [`fan_out_together`] with `data` in every event.
async fn fan_out_together_with(hub: &InProcess, topics: &[&str], data: Value) -> Vec<bool> {
    let caller = hub::auth::Caller::of_account("acme", "acme", None);
    let items = topics
        .iter()
        .map(|t| Ok(serde_json::from_value(json!({"topic": t, "data": data})).unwrap()))
        .collect();
    let published = hub.hub.publish_batch(&caller, items).await.unwrap();
    assert!(published.iter().all(Result::is_ok));
    let mut msgs = Vec::new();
    while msgs.len() < topics.len() {
        msgs.extend(
            hub.events
                .receive(10, std::time::Duration::from_secs(1))
                .await
                .unwrap(),
        );
    }
    hub::runtime::consume::consume_batch(&hub.hub, hub::runtime::consume::QueueRole::Events, &msgs)
        .await
}

mod scenarios {
    use super::*;

    /// Ten events of one topic, fanned out as one batch, to four subscribers (one of them
    /// through two patterns): each `(account, pattern)` is read once for the batch, every event
    /// reaches each subscriber once, and the 40 tasks go out in one send (a queue splits it into
    /// its own batches: SQS's ten).
    pub async fn fan_out_reads_each_pattern_once_per_batch(backend: Backend) {
        let hub = InProcess::start(backend, hub::Settings::default()).await;
        let now = hub.hub.now_ms();
        let subs = [
            vec!["door.request.allowed"],
            vec!["door.*"],
            vec!["*"],
            vec!["door.request.*", "door.*"],
        ];
        for (n, topics) in subs.iter().enumerate() {
            let sub = active_subscription(
                n,
                "acme",
                topics,
                &format!("https://h.example/{n}"),
                now,
                3_600_000,
            );
            hub.store.inner().save(&sub, None).await.unwrap();
        }
        let reads_before = hub
            .store
            .topic_reads
            .load(std::sync::atomic::Ordering::SeqCst);
        let done = fan_out_together(&hub, &["door.request.allowed"; 10]).await;
        assert_eq!(done, vec![true; 10]);
        let reads = hub
            .store
            .topic_reads
            .load(std::sync::atomic::Ordering::SeqCst)
            - reads_before;
        // Expected by hand: door.request.allowed, door.request.*, door.*, * — once each.
        assert_eq!(reads, 4, "one read per (account, pattern) for the batch");
        let tasks = hub.deliveries.bodies();
        assert_eq!(tasks.len(), 40, "10 events × 4 subscribers, none twice");
        let pairs: HashSet<(String, String)> = tasks
            .iter()
            .map(|t| {
                (
                    t["subscription_id"].as_str().unwrap().to_string(),
                    t["payload"]["event"]["id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(pairs.len(), 40);
        assert_eq!(hub.deliveries.send_sizes(), vec![40]);
    }

    /// Large events' tasks go out a MiB at a time, not a hundred at a time: ten events of
    /// 200 KB to one subscriber are sent in calls of at most six tasks (the call that crosses
    /// the MiB), every event still reaching it once.
    pub async fn large_events_tasks_are_sent_a_mib_at_a_time(backend: Backend) {
        let hub = InProcess::start(backend, hub::Settings::default()).await;
        let now = hub.hub.now_ms();
        let sub = active_subscription(
            0,
            "acme",
            &["door.*"],
            "https://h.example/big",
            now,
            3_600_000,
        );
        hub.store.inner().save(&sub, None).await.unwrap();
        let data = json!({"pad": "x".repeat(200 * 1024)});
        let done = fan_out_together_with(&hub, &["door.request.allowed"; 10], data).await;
        assert_eq!(done, vec![true; 10]);
        let sizes = hub.deliveries.send_sizes();
        assert_eq!(sizes.iter().sum::<usize>(), 10, "{sizes:?}");
        assert!(
            sizes.len() >= 2 && sizes.iter().all(|n| *n <= 6),
            "sent a MiB at a time: {sizes:?}"
        );
    }

    /// A pattern with more entries than one page is fanned out event by event, page by page:
    /// still every subscriber once.
    pub async fn a_pattern_past_one_page_streams(backend: Backend) {
        let settings = hub::Settings {
            fanout_page: 2,
            ..hub::Settings::default()
        };
        let hub = InProcess::start(backend, settings).await;
        let now = hub.hub.now_ms();
        for n in 0..5 {
            let sub = active_subscription(
                n,
                "acme",
                &["door.*"],
                &format!("https://h.example/{n}"),
                now,
                3_600_000,
            );
            hub.store.inner().save(&sub, None).await.unwrap();
        }
        let done = fan_out_together(&hub, &["door.opened", "door.closed", "window.opened"]).await;
        assert_eq!(done, vec![true; 3]);
        let tasks = hub.deliveries.bodies();
        let per_event = |topic: &str| {
            tasks
                .iter()
                .filter(|t| {
                    t["payload"]["event"]["type"] == topic
                        || t["payload"]["event"]["topic"] == topic
                })
                .map(|t| t["subscription_id"].as_str().unwrap().to_string())
                .collect::<HashSet<_>>()
                .len()
        };
        assert_eq!(
            (
                per_event("door.opened"),
                per_event("door.closed"),
                per_event("window.opened")
            ),
            (5, 5, 0)
        );
        assert_eq!(tasks.len(), 10);
    }

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

        // Exactly the accepted events arrive, and a sentinel published after them. Deliveries are
        // concurrent, so the wait is for all three; refused items have no id that could arrive.
        let sentinel = publish(&hub, KEY_A, good(99)).await;
        let sentinel = sentinel["id"].as_str().unwrap().to_string();
        for id in [&first, &plain, &sentinel] {
            receiver
                .wait_for_match(WAIT, |r| r.header("webhook-id") == id.as_str())
                .await;
        }
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
    batch_publish_needs_the_publish_scope,
    fan_out_reads_each_pattern_once_per_batch,
    large_events_tasks_are_sent_a_mib_at_a_time,
    a_pattern_past_one_page_streams,
);
