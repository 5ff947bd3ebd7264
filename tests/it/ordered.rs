//! Ordered delivery, on every backend (on AWS through the FIFO queue): a thousand numbered
//! events to a `fifo` subscription whose receiver fails one attempt in five arrive one at a
//! time in publish order, each first delivered after the one before it; an unordered
//! subscription beside it gets them too. And the ordered-group contract of the SQS FIFO queue
//! (the embedded queues run it in their own tests).

use std::collections::HashMap;

use hub_tests::*;
use serde_json::json;

/// How many numbered events the test publishes: a thousand on the embedded backends; on the
/// AWS emulator (tens of requests a second, and one delivery after another) two hundred, the
/// same test otherwise (a thousand there take about five minutes alone).
fn events(backend: Backend) -> usize {
    if backend.scaled_down() { 200 } else { 1000 }
}

mod scenarios {
    use super::*;

    pub async fn a_fifo_subscription_gets_its_events_one_at_a_time_in_order(backend: Backend) {
        let events_published = events(backend);
        // Short retries, so a fifth of a thousand failing first attempts costs seconds.
        // On the AWS emulator a fan-out can lag seconds behind another: a longer settle.
        let settle = if backend == Backend::Aws { "10s" } else { "1s" };
        let hub = HubProcess::start(
            backend,
            &[
                "--retry-schedule",
                "200ms,200ms,200ms,200ms",
                "--order-settle",
                settle,
            ],
        )
        .await;
        // Fails every fifth request it gets (its confirmation, the first, is answered).
        let receiver = TestReceiver::scripted(|req, index| {
            if req.json()["type"] != "Confirmation" && index % 5 == 4 {
                Reply::status(500)
            } else {
                Reply::status(200)
            }
        })
        .await;
        let fifo = subscribe_confirmed(
            &hub,
            &receiver,
            KEY_A,
            "/fifo",
            json!({"topics": ["ledger.entry"], "ordering": "fifo"}),
        )
        .await;
        assert_eq!(fifo["ordering"], "fifo");
        let beside = TestReceiver::start().await;
        subscribe_confirmed(
            &hub,
            &beside,
            KEY_A,
            "/any",
            json!({"topics": ["ledger.entry"]}),
        )
        .await;
        publish_numbered(&hub, "ledger.entry", "seq", events_published).await;
        // Every event delivered (a 2xx) to /fifo.
        let delivered = |received: &[Received]| {
            received
                .iter()
                .enumerate()
                .filter(|(i, r)| r.json()["type"] != "Confirmation" && i % 5 != 4)
                .count()
        };
        let started = std::time::Instant::now();
        let requests = within(std::time::Duration::from_secs(400), || {
            let received = receiver.received();
            async move { (delivered(&received) >= events_published).then_some(received) }
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "{} of {events_published} delivered to /fifo in {:?}",
                delivered(&receiver.received()),
                started.elapsed()
            )
        });
        println!(
            "{events_published} ordered events through in {:?}",
            started.elapsed()
        );
        // The receiver's script decided each answer by the request's index.
        let mut first_success: HashMap<u64, usize> = HashMap::new();
        let mut order = Vec::new();
        let mut failed = 0;
        for (index, request) in requests.iter().enumerate() {
            if request.path != "/fifo" || request.json()["type"] == "Confirmation" {
                continue;
            }
            let seq = request.json()["data"]["seq"].as_u64().unwrap();
            // Nothing of a later event before the one before it got through.
            if seq > 0 {
                assert!(
                    first_success.contains_key(&(seq - 1)),
                    "event {seq} was sent (request {index}) before event {} was delivered",
                    seq - 1
                );
            }
            if index % 5 == 4 {
                failed += 1;
            } else if let std::collections::hash_map::Entry::Vacant(first) =
                first_success.entry(seq)
            {
                first.insert(index);
                order.push(seq);
            }
        }
        let expected: Vec<u64> = (0..events_published as u64).collect();
        assert_eq!(order, expected, "first successes in publish order");
        assert!(
            failed >= events_published / 5,
            "one attempt in five failed: {failed}"
        );
        println!(
            "{events_published} ordered events delivered in order through {failed} failed attempts"
        );
        // The unordered one beside it got them all too.
        let any: std::collections::HashSet<u64> = events_at(&beside.received(), "/any")
            .iter()
            .map(|r| r.json()["data"]["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(any.len(), events_published);
    }
}

on_every_backend!(a_fifo_subscription_gets_its_events_one_at_a_time_in_order);

/// The SQS FIFO queue keeps ordered groups as the queue port says, on the emulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_fifo_queue_keeps_ordered_groups() {
    let (_, sqs) = hub::runtime::aws_clients(None).await;
    let queue = hub::adapters::sqs::SqsQueue::ensure_fifo(
        sqs,
        &format!("{}.fifo", unique("groups")),
        std::time::Duration::from_secs(30),
    )
    .await
    .expect("FIFO queue");
    hub::adapters::queue_checks::ordered_groups_go_one_at_a_time_in_order(&queue).await;
}
