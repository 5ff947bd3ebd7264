//! The sweeper's cost grows with what expired, not with the table: on DynamoDB (moto), with
//! 10,000 live subscriptions and 100 expired ones, one sweep removes exactly the 100 and their
//! topic entries, reading no more than those 100 items plus one query per time bucket.

use std::sync::Arc;
use std::time::Instant;

use hub::adapters::CallCounter;
use hub::adapters::dynamodb::DynamoStore;
use hub::model::Subscription;
use hub::ports::Store;
use hub::runtime::aws_clients;
use hub::runtime::memory_hub;
use hub::{Hub, Settings};
use hub_tests::unique;

const LIVE: usize = 10_000;
const EXPIRED: usize = 100;
const TOPIC: &str = "door.request.allowed";

fn subscription(i: usize, now: i64, expires_at_ms: i64) -> Subscription {
    let mut sub = Subscription::new_pending(
        format!("sub_{:012x}{:016x}", now, i),
        "acme".into(),
        "acme".into(),
        format!("https://hooks.example.com/{i}"),
        now,
        hub::keyring::Sealed::plain(hub::signing::generate_secret()),
    );
    sub.topics = [TOPIC, "door.*"]
        .iter()
        .map(|t| hub::topic::Pattern::parse(t).unwrap())
        .collect();
    sub.status = hub::model::SubscriptionStatus::Active;
    sub.expires_at_ms = expires_at_ms;
    sub.lease_ms = 604_800_000;
    sub.confirmed_at_ms = Some(now);
    sub.expiry_notice = false;
    sub.version = 1;
    sub
}

/// Every topic entry of account `acme` under `pattern`, page by page.
async fn all_entries(store: &DynamoStore, pattern: &str) -> Vec<hub::model::TopicEntry> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .topic_entries(
                "acme",
                &hub::topic::Pattern::parse(pattern).unwrap(),
                cursor.as_deref(),
                20_000,
            )
            .await
            .unwrap();
        entries.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return entries,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_sweep_reads_only_what_expired() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL must point at moto_server"
    );
    let counter = CallCounter::default();
    let (dynamo, _) = aws_clients(Some(&counter)).await;
    let store = Arc::new(DynamoStore::new(dynamo, unique("sweep")));
    store.ensure_table().await.unwrap();

    let (memory, _) = memory_hub(Settings::default());
    let hub = Hub {
        store: store.clone(),
        ..memory
    };
    let now = hub.now_ms();
    let started = Instant::now();
    let subs: Vec<Subscription> = (0..LIVE + EXPIRED)
        .map(|i| {
            // The expired ones lapsed over the last six days, across several time buckets.
            let expires = if i < EXPIRED {
                now - 1 - (i as i64 * 5_000_000)
            } else {
                now + 604_800_000
            };
            subscription(i, now, expires)
        })
        .collect();
    // Bulk import: moto's transactions slow down with the table's size; batches do not.
    store.import(&subs).await.unwrap();
    let seeded = started.elapsed();
    let before = all_entries(&store, TOPIC).await.len();
    assert_eq!(before, LIVE + EXPIRED);

    let (queries_before, items_before) = (counter.count("Query"), counter.items_read());
    let started = Instant::now();
    let report = hub.sweep().await.unwrap();
    let swept = started.elapsed();
    assert_eq!(report.removed, EXPIRED, "exactly the expired ones");
    let queries = counter.count("Query") - queries_before;
    let items = counter.items_read() - items_before;
    assert_eq!(
        items, EXPIRED as u64,
        "the sweep read only the expired items"
    );
    assert!(
        // Expected independently of the code under test: a 7-day lease plus a day of margin
        // in daily buckets is at most 9 index queries (and one more if a page splits).
        queries <= 10,
        "one query per time bucket: {queries}"
    );

    for sub in &subs[..EXPIRED] {
        assert!(
            store.get(&sub.id).await.unwrap().is_none(),
            "{} removed",
            sub.id
        );
        assert!(
            store
                .find_by_callback("acme", None, &sub.callback_url)
                .await
                .unwrap()
                .is_none()
        );
    }
    for pattern in [TOPIC, "door.*"] {
        let entries = all_entries(&store, pattern).await;
        assert_eq!(
            entries.len(),
            LIVE,
            "{pattern}: only the live entries remain"
        );
        assert!(entries.iter().all(|e| e.expires_at_ms > now));
    }
    assert!(store.get(&subs[EXPIRED].id).await.unwrap().is_some());
    assert_eq!(hub.sweep().await.unwrap().removed, 0);
    println!(
        "sweep: {EXPIRED} of {} removed in {:.2} s with {queries} index queries reading {items} items (seeding took {:.1} s)",
        LIVE + EXPIRED,
        swept.as_secs_f64(),
        seeded.as_secs_f64()
    );
}
