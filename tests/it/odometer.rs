//! The odometer's fold (`docs/design.md`, "The odometer"): after a burst every subscription's
//! odometer reaches the exact number of deliveries made, whether the sender folds its batches
//! (memory, SQLite, any deployment without the stream) or the `fold` function folds the
//! delivery log's DynamoDB stream (AWS, on moto's stream), and a stream batch handed over twice
//! is not counted twice.

use std::sync::Arc;
use std::time::Duration;

use hub::Settings;
use hub::context::{DeliveryLog, OdometerFold};
use hub::model::{DeliveryTask, Event, TaskPayload};
use hub::ports::{Queue, Store};
use hub::retry::RetrySchedule;
use hub::runtime::consume::{QueueRole, consume_batch};
use hub::runtime::lambda::fold_handler;
use hub_tests::*;
use serde_json::json;

/// Deliveries per subscription in the burst.
const PER_SUBSCRIPTION: usize = 23;

/// The deliveries a receiver took (answered 200), as (path, webhook-id), duplicates included.
type Taken = Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// What one subscription's receiver took in the burst. The odometer counts the successes the
/// hub *recorded*; a receiver can take an event the hub did not record as delivered (its
/// answer came after the sender's timeout, or the batch's log write failed and the message came
/// back), so the receiver's tally brackets the exact count rather than giving it:
/// `distinct <= recorded <= taken`.
#[derive(Debug)]
struct Made {
    /// The subscription.
    id: String,
    /// Distinct events taken: every event of the burst, once.
    distinct: u64,
    /// Every delivery taken, duplicates included.
    taken: u64,
}

impl Made {
    /// Checks a recorded count of successes against what the receiver took.
    fn brackets(&self, recorded: u64) {
        assert!(
            self.distinct <= recorded && recorded <= self.taken,
            "{}: recorded {recorded}, taken {} ({} distinct)",
            self.id,
            self.taken,
            self.distinct
        );
    }
}

/// The successes a subscription's delivery log holds (the log of a burst fits one page).
async fn logged_successes(p: &InProcess, id: &str) -> u64 {
    let log = p.hub.store.attempts(id, 1000).await.unwrap();
    log.iter().filter(|a| a.delivered && a.counted).count() as u64
}

/// Three subscriptions, a burst of events to each (every third one failing once first), the
/// deliveries queue consumed in batches of 10 as the sender's event source hands them over,
/// until every event has been taken. Returns what each subscription's receiver took: at least
/// once, so a message that came back while slow moto held its batch past the 1 s visibility is
/// a second delivery.
async fn burst(p: &InProcess, (receiver, taken): &(TestReceiver, Taken)) -> Vec<Made> {
    let now = p.hub.now_ms();
    let mut ids = Vec::new();
    for n in 0..3 {
        let sub = active_subscription(
            n,
            "acme",
            &["door.*"],
            &receiver.url(&format!("/s{n}")),
            now,
            3_600_000,
        );
        p.store.save(&sub, None).await.unwrap();
        ids.push(sub.id);
    }
    for i in 0..PER_SUBSCRIPTION {
        for id in &ids {
            let event = Event {
                id: format!("evt_{now:012x}{i:04x}{}", &id[id.len() - 4..]),
                account: "acme".into(),
                topic: hub::topic::Topic::parse("door.opened").unwrap(),
                timestamp_ms: now,
                data: json!({"i": i}),
                labels: Default::default(),
                sensitive: Default::default(),
                owner: None,
                broadcast: false,
                trace: None,
            };
            let task = DeliveryTask::new(id.clone(), TaskPayload::Event { event });
            p.hub.enqueue_delivery(&task).await.unwrap();
        }
    }
    // Until every delivery has arrived (the failed ones retried, each once).
    let expected = 3 * PER_SUBSCRIPTION;
    eventually(Duration::from_secs(60), "every delivery", || async {
        let batch = p
            .deliveries
            .receive(10, Duration::from_millis(200))
            .await
            .unwrap();
        let done = consume_batch(&p.hub, QueueRole::Deliveries, &batch).await;
        for (msg, done) in batch.iter().zip(done) {
            if done {
                p.deliveries.ack(&msg.receipt).await.unwrap();
            }
        }
        let distinct: std::collections::HashSet<_> =
            taken.lock().unwrap().iter().cloned().collect();
        (distinct.len() >= expected).then_some(())
    })
    .await;
    let taken = taken.lock().unwrap();
    ids.into_iter()
        .enumerate()
        .map(|(n, id)| {
            let path = format!("/s{n}");
            let mine: Vec<_> = taken.iter().filter(|(p, _)| *p == path).collect();
            let distinct: std::collections::HashSet<_> = mine.iter().map(|(_, id)| id).collect();
            Made {
                id,
                distinct: distinct.len() as u64,
                taken: mine.len() as u64,
            }
        })
        .collect()
}

/// A receiver that fails the first attempt of every third event, then takes it; with what it
/// took.
async fn receiver() -> (TestReceiver, Taken) {
    let failed = std::sync::Mutex::new(std::collections::HashSet::new());
    let taken = Taken::default();
    let counter = taken.clone();
    let receiver = TestReceiver::scripted(move |req, _| {
        let id = req.header("webhook-id").to_string();
        let third = id.bytes().map(u32::from).sum::<u32>() % 3 == 0;
        if third && failed.lock().unwrap().insert(id.clone()) {
            Reply::status(500)
        } else {
            counter.lock().unwrap().push((req.path.clone(), id));
            Reply::status(200)
        }
    })
    .await;
    (receiver, taken)
}

/// The hub's settings for the burst: a 1 s retry, so the failed first attempts come back soon.
fn settings(odometer_fold: OdometerFold, delivery_log: DeliveryLog) -> Settings {
    Settings {
        retry: RetrySchedule::parse("1s").unwrap(),
        odometer_fold,
        delivery_log,
        ..Settings::default()
    }
}

mod scenarios {
    use super::*;

    /// The sender folds each batch: every odometer is exact once the burst is delivered.
    pub async fn the_batch_fold_reaches_the_exact_count(backend: Backend) {
        let receiver = receiver().await;
        let p = InProcess::start(backend, settings(OdometerFold::Batch, DeliveryLog::Full)).await;
        for made in burst(&p, &receiver).await {
            assert_eq!(made.distinct, PER_SUBSCRIPTION as u64);
            let recorded = logged_successes(&p, &made.id).await;
            made.brackets(recorded);
            // SQLite writes the counts behind the batch (not waited for): read until written.
            // A fold the store refused (moto under load) waits for the next batch's: folded
            // here as the next batch would.
            let odometer = eventually(Duration::from_secs(30), "the odometer", || async {
                if let Err(err) = p.hub.fold_pending().await {
                    eprintln!("fold refused, tried again: {err}");
                }
                let sub = p.hub.store.get(&made.id).await.unwrap().unwrap();
                (sub.odometer >= recorded).then_some(sub.odometer)
            })
            .await;
            assert_eq!(odometer, recorded, "{made:?}");
        }
    }

    /// Two subscriptions' successes folded in one go, one of the writes failing: the written one is
    /// not counted again when the failed one is folded by the next batch.
    pub async fn a_fold_that_fails_in_part_counts_nothing_twice(backend: Backend) {
        let p = InProcess::start(backend, Settings::default()).await;
        let now = p.hub.now_ms();
        let mut ids = Vec::new();
        for n in 0..2 {
            let sub = active_subscription(
                n,
                "acme",
                &["door.*"],
                &format!("https://h.example/{n}"),
                now,
                3_600_000,
            );
            p.store.save(&sub, None).await.unwrap();
            ids.push(sub.id);
        }
        for id in &ids {
            p.hub.pending_tallies.add(id, now, true, false);
        }
        *p.store.fail_fold_of.lock().unwrap() = Some(ids[1].clone());
        assert!(p.hub.fold_pending().await.is_err(), "one write failed");
        p.hub.fold_pending().await.unwrap();
        for id in &ids {
            let sub = p.hub.store.get(id).await.unwrap().unwrap();
            assert_eq!(sub.odometer, 1, "{id} counted once");
        }
    }

    /// A fold the store made but answered with an error: tried again by the next fold, it is
    /// not added again, and what came meanwhile is added after it.
    pub async fn a_fold_whose_answer_was_lost_counts_once(backend: Backend) {
        let p = InProcess::start(backend, Settings::default()).await;
        let now = p.hub.now_ms();
        let mut ids = Vec::new();
        for n in 0..2 {
            let sub = active_subscription(
                n,
                "acme",
                &["door.*"],
                &format!("https://h.example/{n}"),
                now,
                3_600_000,
            );
            p.store.save(&sub, None).await.unwrap();
            ids.push(sub.id);
        }
        for id in &ids {
            p.hub.pending_tallies.add(id, now, true, false);
        }
        *p.store.lose_fold_answer_of.lock().unwrap() = Some(ids[0].clone());
        assert!(p.hub.fold_pending().await.is_err(), "the answer was lost");
        assert_eq!(p.hub.pending_tallies.waiting(), 1, "kept for the next fold");
        p.hub.pending_tallies.add(&ids[0], now + 1, true, false);
        p.hub.fold_pending().await.unwrap();
        p.hub.fold_pending().await.unwrap();
        assert_eq!(p.hub.pending_tallies.waiting(), 0);
        for (id, delivered) in ids.iter().zip([2, 1]) {
            let odometer = eventually(Duration::from_secs(10), "the odometer", || async {
                let sub = p.hub.store.get(id).await.unwrap().unwrap();
                (sub.odometer >= delivered).then_some(sub.odometer)
            })
            .await;
            assert_eq!(odometer, delivered, "{id}");
        }
    }
}

hub_tests::on_every_backend!(
    the_batch_fold_reaches_the_exact_count,
    a_fold_that_fails_in_part_counts_nothing_twice,
    a_fold_whose_answer_was_lost_counts_once,
);

/// A hub on moto with the template's stream fold and `log`, the table's stream tapped from its
/// start, after the burst: the hub, the tap and what each subscription's receiver took.
async fn burst_on_aws(log: DeliveryLog) -> (InProcess, StreamTap, Vec<Made>) {
    let receiver = receiver().await;
    let p = InProcess::start(Backend::Aws, settings(OdometerFold::Stream, log)).await;
    let tap = StreamTap::open(p.table.as_deref().unwrap()).await;
    let made = burst(&p, &receiver).await;
    (p, tap, made)
}

/// On AWS with the template's settings the sender writes only the log; the `fold` function's
/// handler, given moto's stream in batches (one handed over twice, as Lambda retries a failed
/// batch), brings every odometer to the exact count; with a lean log the sender folds the
/// successes it does not store.
#[tokio::test]
async fn the_stream_fold_reaches_the_exact_count_on_aws() {
    let (p, mut tap, made) = burst_on_aws(DeliveryLog::Full).await;
    let records = tap.records().await;
    let logged = hub::adapters::dynamodb::stream::logged_attempts(&json!({"Records": records}));
    assert!(
        logged.iter().any(|l| !l.record.delivered),
        "the first failures are logged too"
    );
    // Each subscription's successes as the stream carries them: the exact count to reach.
    let recorded: Vec<u64> = made
        .iter()
        .map(|m| {
            logged
                .iter()
                .filter(|l| l.record.subscription_id == m.id && l.record.delivered)
                .count() as u64
        })
        .collect();
    for (m, &recorded) in made.iter().zip(&recorded) {
        m.brackets(recorded);
        let sub = p.hub.store.get(&m.id).await.unwrap().unwrap();
        assert_eq!(
            sub.odometer, 0,
            "the sender leaves the log's successes to the fold"
        );
    }
    // Batches of 25 records of every kind (the filter is the template's; the handler skips
    // what is not an attempt insert), the second one handed over twice.
    let batches: Vec<serde_json::Value> = records
        .chunks(25)
        .map(|chunk| json!({"Records": chunk}))
        .collect();
    for (i, batch) in batches.iter().enumerate() {
        fold_handler(&p.hub, batch.clone()).await.unwrap();
        if i == 1 {
            fold_handler(&p.hub, batch.clone()).await.unwrap();
        }
    }
    for (m, &recorded) in made.iter().zip(&recorded) {
        let sub = p.hub.store.get(&m.id).await.unwrap().unwrap();
        assert_eq!(sub.odometer, recorded, "{m:?}");
        assert!(sub.last_delivered_ms.is_some());
    }
    // The log reads back whole from the batch items, newest first.
    for (m, &recorded) in made.iter().zip(&recorded) {
        let log = p.hub.store.attempts(&m.id, 1000).await.unwrap();
        assert_eq!(
            logged_successes(&p, &m.id).await,
            recorded,
            "{m:?}: {log:?}"
        );
        assert!(
            log.windows(2)
                .all(|w| w[0].started_at_ms >= w[1].started_at_ms)
        );
        let few = p.hub.store.attempts(&m.id, 5).await.unwrap();
        assert_eq!(few.len(), 5);
        assert_eq!(few[0], log[0], "a short page starts with the newest");
        assert!(few.iter().all(|a| log.contains(a)));
    }
    // The whole stream once more: nothing moves.
    fold_handler(&p.hub, json!({"Records": records}))
        .await
        .unwrap();
    for (m, &recorded) in made.iter().zip(&recorded) {
        let sub = p.hub.store.get(&m.id).await.unwrap().unwrap();
        assert_eq!(sub.odometer, recorded, "{m:?}");
    }
}

/// A lean log on AWS with the stream: the successes are not in the log, so the sender folds
/// them after each batch; the stream (failures only) adds nothing.
#[tokio::test]
async fn a_lean_log_is_folded_by_the_sender_on_aws() {
    let (p, mut tap, made) = burst_on_aws(DeliveryLog::Lean).await;
    // A fold moto refused under load waits for the next batch's: folded here as it would be.
    p.hub.fold_pending().await.unwrap();
    let before: Vec<u64> = odometers(&p, &made).await;
    for (m, &odometer) in made.iter().zip(&before) {
        m.brackets(odometer);
        let log = p.hub.store.attempts(&m.id, 1000).await.unwrap();
        assert!(
            log.iter().all(|a| !a.delivered),
            "a lean log keeps failures only"
        );
        assert!(!log.is_empty(), "the first failures are logged");
    }
    fold_handler(&p.hub, json!({"Records": tap.records().await}))
        .await
        .unwrap();
    assert_eq!(
        odometers(&p, &made).await,
        before,
        "the stream (failures only) adds nothing"
    );
}

/// Each subscription's odometer as stored now.
async fn odometers(p: &InProcess, made: &[Made]) -> Vec<u64> {
    let mut odometers = Vec::new();
    for m in made {
        odometers.push(p.hub.store.get(&m.id).await.unwrap().unwrap().odometer);
    }
    odometers
}
