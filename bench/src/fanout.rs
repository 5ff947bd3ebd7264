//! Figure 4: fan-out of one event to 10,000 subscribers on DynamoDB and SQS (moto): DynamoDB
//! pages read, SQS calls made, and the time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hub::Hub;
use hub::adapters::CallCounter;
use hub::adapters::dynamodb::DynamoStore;
use hub::adapters::sqs::SqsQueue;
use hub::model::{Event, SubscriptionStatus};
use hub::ports::{OutgoingMessage, Queue, ReceivedMessage};
use hub::runtime::{aws_clients, memory_hub};
use hub_tests::{sample_subscription, unique};

use crate::{Options, Section};

pub async fn fan_out(options: &Options) -> Section {
    let mut section =
        Section::new("4. Fan-out of one event to 10,000 subscribers on DynamoDB + SQS (moto)");
    let subscribers = if options.smoke { 200 } else { 10_000 };
    let counter = CallCounter::default();
    let (dynamo, sqs) = aws_clients(Some(&counter)).await;
    let name = unique("bench-fanout");
    let store = DynamoStore::new(dynamo, &name);
    store.ensure_table().await.expect("table");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let subs: Vec<_> = (0..subscribers)
        .map(|i| {
            let mut sub = sample_subscription(
                now,
                SubscriptionStatus::Active,
                &format!("https://hooks.example.com/{i}"),
            );
            sub.id = format!("sub_{now:012x}{i:016x}");
            sub.topics = vec![hub::topic::Pattern::parse("door.*").unwrap()];
            sub.expires_at_ms = now + 604_800_000;
            // Every tenth is bound to one of the account's customers, ten per customer.
            if i % 10 == 0 {
                (sub.owner, sub.bound) = (format!("customer-{}", i / 100), true);
            }
            sub
        })
        .collect();
    store.import(&subs).await.expect("seed");
    // moto's SQS gets slower with every message a queue holds (22 ms per batch when empty, +33 ms
    // per 200 messages), so 10,000 messages cannot go through it in a sensible time: the full run
    // applies the SQS adapter's own batching rule to what fan-out queued; the smoke run sends
    // its 200 through moto, where the SDK interceptor counts the calls.
    let capture = Arc::new(CapturingQueue::default());
    let deliveries: Arc<dyn Queue> = if options.smoke {
        Arc::new(
            SqsQueue::ensure(
                sqs,
                &format!("{name}-deliveries"),
                Duration::from_secs(180),
                7,
            )
            .await
            .expect("queue"),
        )
    } else {
        capture.clone()
    };
    let (memory, _) = memory_hub(Default::default());
    let hub = Hub {
        store: Arc::new(store),
        ordered: deliveries.clone(),
        deliveries,
        ..memory
    };
    let event = Event {
        id: "evt_fanout".into(),
        account: "acme".into(),
        topic: hub::topic::Topic::parse("door.request.allowed").unwrap(),
        timestamp_ms: now,
        data: serde_json::json!({"door": "4711"}),
        labels: Default::default(),
        sensitive: Default::default(),
        owner: None,
        broadcast: true,
        trace: None,
    };
    let (queries, items, batches) = (
        counter.count("Query"),
        counter.items_read(),
        counter.count("SendMessageBatch"),
    );
    let started = Instant::now();
    let queued = hub.fan_out(&event).await.expect("fan-out");
    let elapsed = started.elapsed();
    let queries = counter.count("Query") - queries;
    let items = counter.items_read() - items;
    let batches = counter.count("SendMessageBatch") - batches
        + capture.batches.load(std::sync::atomic::Ordering::Relaxed);
    let entry_bytes = serde_json::to_string(&hub::model::TopicEntry::of(&subs[1]))
        .unwrap()
        .len()
        + 60;
    section.line(format!(
        "measured on moto, a broadcast: {queued} deliveries queued for {subscribers} subscribers in {:.2} s",
        elapsed.as_secs_f64()
    ));
    section.line(format!(
        "measured (counted calls), DynamoDB: {queries} Query pages over 4 patterns, {items} items (~{entry_bytes} B each, ~{:.0} KB per full page; DynamoDB pages at 1 MB)",
        items as f64 * entry_bytes as f64 / 1000.0 / (queries.saturating_sub(3)).max(1) as f64
    ));
    // The smoke run sends to moto and counts the calls; the full run captures the messages
    // fan-out queued and applies the adapter's batching rule to them: computed, not measured.
    let (label, how) = if options.smoke {
        (
            "measured (counted calls)",
            "sent to moto, counted by the SDK interceptor",
        )
    } else {
        (
            "computed",
            "the SQS adapter's batching rule applied to the messages fan-out queued, captured; nothing sent to SQS",
        )
    };
    section.line(format!(
        "{label}, SQS: {batches} SendMessageBatch calls of ≤ 10 ({how}; goal ≤ {})",
        subscribers / 10 + 1
    ));
    // The expectation, independent of the adapter's batching code: one message per subscriber,
    // each far under 256 KiB / 10, so SQS's ten-per-call limit alone sets the count.
    let expected_messages = subscribers as u64;
    let (sent, largest) = if options.smoke {
        (queued as u64, 0)
    } else {
        (
            capture.messages.load(std::sync::atomic::Ordering::Relaxed),
            capture.largest.load(std::sync::atomic::Ordering::Relaxed),
        )
    };
    assert_eq!(sent, expected_messages, "one delivery task per subscriber");
    assert!(
        largest < 256 * 1024 / 10,
        "messages small enough that count decides"
    );
    let expected_batches = expected_messages.div_ceil(10);
    assert_eq!(
        batches, expected_batches,
        "SendMessageBatch calls: counted {batches}, expected ⌈{expected_messages}/10⌉ = {expected_batches}"
    );

    // The same table, an event addressed to one customer: the account-wide subscribers and that
    // customer's ten get it, the other customers' none, decided from the same entries.
    let addressed = Event {
        id: "evt_fanout_one_customer".into(),
        owner: Some("customer-7".into()),
        broadcast: false,
        ..event
    };
    let (queries, items) = (counter.count("Query"), counter.items_read());
    let started = Instant::now();
    let queued = hub.fan_out(&addressed).await.expect("fan-out");
    let elapsed = started.elapsed();
    let (queries, items) = (
        counter.count("Query") - queries,
        counter.items_read() - items,
    );
    let bound = subs.iter().filter(|s| s.bound).count();
    let expected = subscribers - bound + subs.iter().filter(|s| s.owner == "customer-7").count();
    assert_eq!(queued, expected, "account-wide ones and customer-7's");
    section.line(format!(
        "measured on moto, an event addressed to one customer ({bound} of the {subscribers} subscribers bound to 100 customers, the rest account-wide): {queued} deliveries queued in {:.2} s, {queries} Query pages, {items} items (the same read as the broadcast above: the binding is in the entries)",
        elapsed.as_secs_f64()
    ));
    section
}

/// Counts the `SendMessageBatch` calls the SQS adapter would make for what it is given.
#[derive(Default)]
struct CapturingQueue {
    batches: std::sync::atomic::AtomicU64,
    messages: std::sync::atomic::AtomicU64,
    largest: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl Queue for CapturingQueue {
    async fn send(&self, messages: Vec<OutgoingMessage>) -> hub::Result<()> {
        let calls = hub::adapters::sqs::batches(&messages).len() as u64;
        self.batches
            .fetch_add(calls, std::sync::atomic::Ordering::Relaxed);
        self.messages
            .fetch_add(messages.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let largest = messages.iter().map(|m| m.body.len()).max().unwrap_or(0) as u64;
        self.largest
            .fetch_max(largest, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
    async fn receive(&self, _max: usize, _wait: Duration) -> hub::Result<Vec<ReceivedMessage>> {
        Ok(vec![])
    }
    async fn ack(&self, _receipt: &str) -> hub::Result<()> {
        Ok(())
    }
    async fn postpone(&self, _receipt: &str, _delay: Duration) -> hub::Result<()> {
        Ok(())
    }
    async fn dead_letter(&self, _body: String) -> hub::Result<()> {
        Ok(())
    }
}
