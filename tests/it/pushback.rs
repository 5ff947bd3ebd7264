//! AWS pushing back, on moto behind a fault proxy: DynamoDB throttling, SQS `503`s and
//! `SendMessageBatch` calls that take only part of their entries, all through a burst. Nothing
//! accepted is lost, a partly taken batch is completed by sending only what failed, no client
//! sees a `500`, and the hub serves as before once AWS stops pushing back.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hub_tests::*;
use serde_json::{Value, json};

/// Subscriptions the burst fans out to (so deliveries are sent in batches of several).
const SUBSCRIBERS: usize = 3;
/// Publish batches of ten events each.
const BATCHES: usize = 5;

fn event(n: usize) -> Value {
    json!({"topic": "door.request.allowed", "data": {"n": n}})
}

/// The ids of the events each path received.
fn received_by_path(receiver: &TestReceiver) -> HashMap<String, HashSet<String>> {
    let mut by_path: HashMap<String, HashSet<String>> = HashMap::new();
    for r in receiver.received() {
        if r.json()["type"] == "Confirmation" {
            continue;
        }
        if let Some(id) = r.json()["id"].as_str() {
            by_path
                .entry(r.path.clone())
                .or_default()
                .insert(id.to_string());
        }
    }
    by_path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_partial_batches_lose_nothing_on_aws() {
    let faults = AwsFaults::start().await;
    let hub = HubProcess::start_on(
        Backend::Aws,
        &unique("pushback"),
        &["--retry-schedule", "1s,1s,2s,2s,4s,4s"],
        &[("AWS_ENDPOINT_URL", faults.url.as_str())],
    )
    .await;
    let receiver = TestReceiver::start().await;
    let paths: Vec<String> = (0..SUBSCRIBERS).map(|n| format!("/s{n}")).collect();
    for path in &paths {
        subscribe_confirmed(&hub, &receiver, KEY_A, path, json!({})).await;
    }

    faults.arm(PushBack {
        dynamodb_throttle_every: 4,
        sqs_unavailable_every: 5,
        partial_batch_every: 2,
    });
    let mut accepted = HashSet::new();
    let mut refused = 0;
    for b in 0..BATCHES {
        let events: Vec<Value> = (0..10).map(|i| event(b * 10 + i)).collect();
        let answer = hub
            .call(
                "POST",
                "/v1/events",
                Some(KEY_A),
                Some(json!({"events": events})),
            )
            .await;
        assert!(
            [200, 207, 503].contains(&answer.status),
            "pushed back, never broken: {} {:#}",
            answer.status,
            answer.body
        );
        for item in answer.body["data"].as_array().into_iter().flatten() {
            match item["status"].as_u64() {
                Some(202) => {
                    accepted.insert(item["id"].as_str().unwrap().to_string());
                }
                Some(503) => refused += 1,
                other => panic!("an item answered {other:?}: {item}"),
            }
        }
    }
    assert!(
        accepted.len() >= BATCHES * 10 / 2,
        "the SDK's retries take most through: {} accepted, {refused} refused",
        accepted.len()
    );

    // Every accepted event reaches every subscriber, through the push-back.
    receiver
        .wait_until_events(Duration::from_secs(60), |_| {
            let by_path = received_by_path(&receiver);
            paths.iter().all(|p| {
                by_path
                    .get(p)
                    .is_some_and(|ids| accepted.iter().all(|id| ids.contains(id)))
            })
        })
        .await;
    let log = faults.log();
    faults.disarm();
    eprintln!(
        "push-back: {} accepted, {refused} refused; {} DynamoDB calls throttled, {} SQS calls \
         unavailable, {} batch entries failed; {} batches sent",
        accepted.len(),
        log.throttled,
        log.unavailable,
        log.failed_entries.len(),
        log.batches.len()
    );
    assert!(log.throttled > 0 && log.unavailable > 0, "{log:?}");
    assert!(!log.failed_entries.is_empty(), "{log:?}");
    // A partly taken batch is completed by a batch of only what failed.
    for (partly_taken, failed) in &log.failed_entries {
        let next = log.batches[partly_taken + 1..]
            .iter()
            .find(|b| b.contains(failed));
        assert_eq!(
            next,
            Some(&vec![failed.clone()]),
            "the failed entry is sent again alone"
        );
    }

    // AWS stops pushing back: the hub serves as before.
    let after = publish(&hub, KEY_A, event(1_000)).await;
    let id = after["id"].as_str().unwrap().to_string();
    receiver
        .wait_until_events(WAIT, |_| {
            let by_path = received_by_path(&receiver);
            paths
                .iter()
                .all(|p| by_path.get(p).is_some_and(|ids| ids.contains(&id)))
        })
        .await;
    assert!(!hub.log().contains("panicked"), "no panic under push-back");
}
