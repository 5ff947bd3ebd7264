//! Ordered delivery (`"ordering": "fifo"`): a subscription's events go one at a time, in publish
//! order (docs/design.md "Ordered delivery").
//!
//! Fan-out keeps each of its deliveries with the subscription, `queued`, keyed by event id (so
//! the store lists them in publish order), and queues a nudge in the subscription's own message
//! group of the ordered queue (an SQS FIFO queue on AWS). The group lets one nudge of a
//! subscription through at a time, on every sender process; a nudge delivers the queued
//! deliveries oldest first, the next only once the one before it was delivered, exhausted or
//! dropped. A failed one holds the line: the nudge comes back at its retry time.

use std::time::{Duration, Instant};

use crate::context::Hub;
use crate::error::Result;
use crate::model::{
    DeliveryTask, Event, KeptDelivery, KeptState, LineProgress, TaskPayload, queue_json,
};
use crate::ports::OutgoingMessage;
use crate::service::delivery::Verdict;

/// How long a delivery waits after its event was published before it goes, by default
/// (`--order-settle`): an earlier event fanned out by another process a moment later still goes
/// first.
pub const SETTLE: Duration = Duration::from_secs(1);
/// How long one nudge delivers before it hands over to the next receive (so a sender invocation
/// never runs into its timeout).
const DRAIN_BUDGET: Duration = Duration::from_secs(15);
/// How many queued deliveries one read of a line takes.
const DRAIN_PAGE: usize = 25;
/// Before a delivery whose event is younger than this, the line is read again (an earlier event
/// may have been queued by another fan-out since the page was read); older ones go from the
/// page.
const RECHECK_YOUNGER_THAN: Duration = Duration::from_secs(5);
/// The longest wait a nudge sits out in place rather than going back to the queue (on SQS a
/// message is hidden for whole seconds).
const WAIT_IN_PLACE: Duration = Duration::from_secs(1);

/// Where a nudge left its subscription's ordered deliveries.
#[derive(Debug, Clone, PartialEq)]
pub enum Drained {
    /// None is left: the nudge is done.
    Empty,
    /// The next is not due yet (its retry, its settling, its slot), or the budget is spent:
    /// the nudge comes back after this long.
    ComeBackIn(Duration),
}

impl Hub {
    /// The nudge of `subscription_id`'s ordered deliveries, in its message group.
    fn nudge(subscription_id: &str) -> OutgoingMessage {
        OutgoingMessage {
            body: queue_json(&DeliveryTask {
                ordered: true,
                ..DeliveryTask::new(subscription_id, TaskPayload::Resume)
            }),
            delay: Duration::ZERO,
            group: Some(subscription_id.to_string()),
        }
    }

    /// Queues deliveries of `events` to the ordered subscription `subscription_id`: kept
    /// `queued` (first), then one nudge for them (a crash in between leaves them to the next
    /// nudge, or to a resume).
    pub async fn queue_ordered<'e>(
        &self,
        subscription_id: &str,
        events: impl IntoIterator<Item = &'e Event>,
    ) -> Result<()> {
        let now = self.now_ms();
        let keeps = events.into_iter().map(|event| {
            let kept = KeptDelivery {
                subscription_id: subscription_id.to_string(),
                payload: TaskPayload::Event {
                    event: event.clone(),
                },
                state: KeptState::Queued,
                since_ms: now,
                until_ms: Some(self.retained_until(now)),
                progress: None,
            };
            async move { self.store.keep_delivery(&kept).await }
        });
        futures::future::try_join_all(keeps).await?;
        self.send_deliveries(vec![Hub::nudge(subscription_id)])
            .await
    }

    /// Puts kept deliveries (parked, exhausted, delivered ones sent again) back in their
    /// subscription's ordered line, then nudges it.
    pub async fn requeue_ordered(
        &self,
        subscription_id: &str,
        kept: Vec<KeptDelivery>,
    ) -> Result<()> {
        let now = self.now_ms();
        let keeps = kept.into_iter().map(|k| {
            let kept = KeptDelivery {
                state: KeptState::Queued,
                since_ms: now,
                until_ms: Some(self.retained_until(now)),
                progress: None,
                ..k
            };
            async move { self.store.keep_delivery(&kept).await }
        });
        futures::future::try_join_all(keeps).await?;
        self.send_deliveries(vec![Hub::nudge(subscription_id)])
            .await
    }

    /// A nudge: delivers `subscription_id`'s queued deliveries oldest first, each once the one
    /// before it is through, for up to [`DRAIN_BUDGET`]. The line's head is read again before
    /// each delivery, so one queued a moment late by another fan-out still goes in its place.
    pub async fn drain_ordered(&self, subscription_id: &str) -> Result<Drained> {
        let started = Instant::now();
        let Some(sub) = self.store.get_eventually(subscription_id).await? else {
            return Ok(Drained::Empty); // gone: its kept deliveries go with it
        };
        'page: loop {
            let page = self
                .store
                .kept_deliveries(subscription_id, KeptState::Queued, None, DRAIN_PAGE)
                .await?;
            if page.items.is_empty() {
                return Ok(Drained::Empty);
            }
            for (place, head) in page.items.into_iter().enumerate() {
                if started.elapsed() >= DRAIN_BUDGET {
                    return Ok(Drained::ComeBackIn(Duration::ZERO));
                }
                let TaskPayload::Event { event } = &head.payload else {
                    self.store
                        .forget_delivery(subscription_id, head.event_id())
                        .await?;
                    continue;
                };
                let now = self.now_ms();
                let recheck = RECHECK_YOUNGER_THAN.max(self.settings.order_settle * 2);
                let young = now - event.timestamp_ms < recheck.as_millis() as i64;
                if place > 0 && young {
                    continue 'page;
                }
                let progress = head.progress;
                let mut task = DeliveryTask {
                    ordered: true,
                    attempts_made: progress.map_or(0, |p| p.attempts_made),
                    throttled: progress.map_or(0, |p| p.throttled),
                    ..DeliveryTask::again(&head)
                };
                let settled_at = event.timestamp_ms + self.settings.order_settle.as_millis() as i64;
                let due = progress.map_or(0, |p| p.next_attempt_at_ms).max(settled_at);
                if due > now {
                    let wait = Duration::from_millis((due - now) as u64);
                    if wait > WAIT_IN_PLACE {
                        return Ok(Drained::ComeBackIn(wait));
                    }
                    tokio::time::sleep(wait).await;
                    continue 'page; // the head again: an earlier one may have come meanwhile
                }
                // Its slot, where the subscription is paced.
                if let Some(booking) = self.book_slots(&sub, 1).await? {
                    let now = self.now_ms();
                    match booking.slots_ms.first() {
                        Some(slot) => {
                            let wait = (slot - now as f64).max(0.0);
                            tokio::time::sleep(Duration::from_micros((wait * 1000.0) as u64)).await;
                        }
                        None => return Ok(Drained::ComeBackIn(booking.wait_of_unbooked(0, now))),
                    }
                }
                // Each attempt until one is not due again within the wait it sits out here.
                loop {
                    let now = self.now_ms();
                    let verdict = self.deliver(&task).await?;
                    match verdict {
                        Verdict::RetryIn(wait) | Verdict::Throttled(wait) => {
                            task = task.after(&verdict, now);
                            if wait > WAIT_IN_PLACE {
                                // Holds the line: its count and time kept with it.
                                let progress = LineProgress {
                                    attempts_made: task.attempts_made,
                                    throttled: task.throttled,
                                    next_attempt_at_ms: task.not_before_ms.unwrap_or(now),
                                };
                                self.store
                                    .keep_delivery(&KeptDelivery {
                                        progress: Some(progress),
                                        ..head
                                    })
                                    .await?;
                                return Ok(Drained::ComeBackIn(wait));
                            }
                            tokio::time::sleep(wait).await;
                        }
                        Verdict::Exhausted => {
                            self.settle(task, &verdict, now).await?;
                            break;
                        }
                        // Delivered, dropped, or parked (the subscription was paused or disabled:
                        // the rest is parked after it, one by one).
                        Verdict::Done | Verdict::Parked => break,
                    }
                }
            }
        }
    }
}
