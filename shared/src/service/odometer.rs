//! The odometer's fold: successful deliveries are counted together, one store write per
//! subscription per batch, instead of one write per delivery (`docs/design.md`, "The
//! odometer"). The sender gathers what its batch delivered and folds it when the batch is done;
//! on AWS with the full delivery log the log itself is the record, and the `fold` function folds
//! the log's stream ([`Hub::fold_stream`]).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::context::{DeliveryLog, Hub, OdometerFold};
use crate::error::Result;
use crate::model::{AttemptRecord, DeliveredTally};

/// Successful deliveries not yet folded into the store, by subscription. Whatever a fold could
/// not write stays here, with its mark, for the next one.
#[derive(Debug, Default)]
pub struct PendingTallies {
    /// Gathered since the last fold, one tally per subscription.
    gathered: Mutex<HashMap<String, DeliveredTally>>,
    /// Marked tallies whose write failed, by subscription, oldest first: tried again as they
    /// were (the store may have added one whose answer was lost) before anything newer.
    unsettled: Mutex<HashMap<String, Vec<DeliveredTally>>>,
    /// Held by the fold in progress: one subscription's marked writes never overtake each other.
    folding: tokio::sync::Mutex<()>,
}

impl PendingTallies {
    /// Counts one success to `subscription_id` made at `at_ms`.
    pub fn add(&self, subscription_id: &str, at_ms: i64, counted: bool, ends_streak: bool) {
        let mut gathered = self.gathered.lock().expect("tallies lock");
        gathered
            .entry(subscription_id.to_string())
            .or_insert_with(|| DeliveredTally {
                subscription_id: subscription_id.to_string(),
                delivered: 0,
                last_delivered_ms: at_ms,
                ends_streak: false,
                stream_span: None,
                fold_mark: None,
            })
            .add(at_ms, counted, ends_streak);
    }

    /// Everything to write now, by subscription in order: the unsettled tallies, then the
    /// gathered ones, each given a fresh mark.
    fn take(&self) -> Vec<Vec<DeliveredTally>> {
        let gathered: Vec<DeliveredTally> = {
            let mut gathered = self.gathered.lock().expect("tallies lock");
            gathered.drain().map(|(_, tally)| tally).collect()
        };
        let mut unsettled = self.unsettled.lock().expect("tallies lock");
        for mut tally in gathered {
            tally.fold_mark = Some(rand::random());
            unsettled
                .entry(tally.subscription_id.clone())
                .or_default()
                .push(tally);
        }
        unsettled.drain().map(|(_, queue)| queue).collect()
    }

    /// Puts back, in order, a subscription's tallies a fold could not write.
    fn restore(&self, queue: Vec<DeliveredTally>) {
        let Some(first) = queue.first() else { return };
        let mut unsettled = self.unsettled.lock().expect("tallies lock");
        unsettled
            .entry(first.subscription_id.clone())
            .or_default()
            .splice(0..0, queue);
    }

    /// How many deliveries wait to be folded.
    pub fn waiting(&self) -> u64 {
        let gathered = self.gathered.lock().expect("tallies lock");
        let unsettled = self.unsettled.lock().expect("tallies lock");
        gathered.values().map(|t| t.delivered).sum::<u64>()
            + unsettled
                .values()
                .flatten()
                .map(|t| t.delivered)
                .sum::<u64>()
    }
}

/// One stream record the fold reads: a delivery-log item as written (its `doc`), with the
/// record's sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedAttempt {
    /// The stream record's sequence number (increasing per shard, and from parent shard to
    /// child).
    pub sequence: u128,
    /// The attempt as recorded.
    pub record: AttemptRecord,
}

impl Hub {
    /// Notes a successful delivery for the odometer: gathered for the batch's fold, unless the
    /// delivery log's stream counts it (AWS, full log); a success that ends a failure streak is
    /// written at once either way, so the next failure starts a new streak.
    pub(crate) async fn count_delivered(
        &self,
        record: &AttemptRecord,
        was_failing: bool,
    ) -> Result<()> {
        let stream_counts = self.settings.odometer_fold == OdometerFold::Stream
            && self.settings.delivery_log == DeliveryLog::Full;
        let at = record.started_at_ms;
        if stream_counts {
            if was_failing {
                let ends = DeliveredTally {
                    subscription_id: record.subscription_id.clone(),
                    delivered: 0,
                    last_delivered_ms: at,
                    ends_streak: true,
                    stream_span: None,
                    fold_mark: None,
                };
                self.store.add_delivered(&[ends]).await?;
            }
            return Ok(());
        }
        self.pending_tallies
            .add(&record.subscription_id, at, record.counted, was_failing);
        if was_failing {
            self.fold_pending().await?;
        }
        Ok(())
    }

    /// Writes the gathered successes, one write per subscription, each with a mark the store
    /// adds once; a write that failed waits, with its mark, for the next fold (the consumers
    /// fold after every batch) and goes first then. A write the store applied but answered
    /// with an error (seen on moto under load) is then not counted twice.
    pub async fn fold_pending(&self) -> Result<()> {
        let _folding = self.pending_tallies.folding.lock().await;
        let queues = self.pending_tallies.take();
        let written = futures::future::join_all(queues.into_iter().map(|queue| async move {
            let mut queue = queue.into_iter();
            while let Some(tally) = queue.next() {
                if let Err(err) = self.store.add_delivered(std::slice::from_ref(&tally)).await {
                    self.pending_tallies
                        .restore(std::iter::once(tally).chain(queue).collect());
                    return Err(err);
                }
            }
            Ok(())
        }))
        .await;
        written.into_iter().collect()
    }

    /// Folds a batch of the delivery log's stream: every counted success, one write per
    /// subscription, each with the span of sequence numbers it covers so a retried batch is
    /// not counted twice. Failures and confirmations are in the stream too and count nothing.
    pub async fn fold_stream(&self, logged: &[LoggedAttempt]) -> Result<usize> {
        let mut tallies: HashMap<&str, DeliveredTally> = HashMap::new();
        for entry in logged.iter().filter(|e| e.record.delivered) {
            let record = &entry.record;
            let tally = tallies
                .entry(record.subscription_id.as_str())
                .or_insert_with(|| DeliveredTally {
                    subscription_id: record.subscription_id.clone(),
                    delivered: 0,
                    last_delivered_ms: record.started_at_ms,
                    ends_streak: false,
                    stream_span: Some((entry.sequence, entry.sequence)),
                    fold_mark: None,
                });
            tally.add(record.started_at_ms, record.counted, false);
            if let Some((first, last)) = tally.stream_span.as_mut() {
                *first = (*first).min(entry.sequence);
                *last = (*last).max(entry.sequence);
            }
        }
        let tallies: Vec<DeliveredTally> = tallies.into_values().collect();
        self.store.add_delivered(&tallies).await?;
        Ok(tallies.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Subscription;

    fn logged(sequence: u128, sub: &str, delivered: bool, counted: bool, at: i64) -> LoggedAttempt {
        LoggedAttempt {
            sequence,
            record: AttemptRecord {
                subscription_id: sub.into(),
                message_id: format!("evt_{sequence}"),
                attempt: 1,
                started_at_ms: at,
                latency_ms: 3,
                status_code: Some(if delivered { 200 } else { 500 }),
                error: None,
                delivered,
                next_attempt_at_ms: None,
                counted,
            },
        }
    }

    #[tokio::test]
    async fn a_stream_batch_counts_each_success_once_even_when_retried() {
        let (hub, _) = crate::runtime::wiring::memory_hub(Default::default());
        for id in ["sub_a", "sub_b"] {
            let mut sub = Subscription::new_pending(
                id.into(),
                "acme".into(),
                "o".into(),
                format!("https://{id}.example/hook"),
                hub.now_ms(),
                crate::keyring::Sealed::plain(crate::signing::generate_secret()),
            );
            sub.expires_at_ms += 600_000;
            hub.store.save(&sub, None).await.unwrap();
        }
        let batch = [
            logged(11, "sub_a", true, true, 10),
            logged(12, "sub_a", false, true, 11),
            logged(13, "sub_b", true, true, 12),
            logged(14, "sub_a", true, false, 13),
            logged(15, "sub_a", true, true, 14),
        ];
        assert_eq!(
            hub.fold_stream(&batch).await.unwrap(),
            2,
            "one write per subscription"
        );
        // Lambda retries a failed batch whole: nothing is added twice.
        hub.fold_stream(&batch).await.unwrap();
        let a = hub.store.get("sub_a").await.unwrap().unwrap();
        let b = hub.store.get("sub_b").await.unwrap().unwrap();
        assert_eq!(
            (a.odometer, b.odometer),
            (2, 1),
            "failures and confirmations do not count"
        );
        assert_eq!(
            (a.last_delivered_ms, b.last_delivered_ms),
            (Some(14), Some(12))
        );
        // The next batch goes on counting.
        hub.fold_stream(&[logged(16, "sub_a", true, true, 20)])
            .await
            .unwrap();
        assert_eq!(hub.store.get("sub_a").await.unwrap().unwrap().odometer, 3);
    }
}
