//! Keeping a subscription's pace (the rules are in [`crate::pacing`]): a sender batch books
//! the slots its deliveries to a paced subscription go in, and the receivers' push-backs a
//! batch met cut their subscriptions' rates, each in one swap of the pace record per
//! subscription and batch (read again and tried again when another sender changed it first).

use std::time::Duration;

use crate::context::Hub;
use crate::error::Result;
use crate::model::Subscription;
use crate::pacing::{BOOKING_HORIZON_MS, Booking, Pace};

/// How many times a pace change is tried over a record another sender changed meanwhile.
const SWAP_TRIES: usize = 8;

impl Hub {
    /// Applies `change` to `sub`'s pace (as read, or read again strongly when another sender
    /// changed it first) and stores it; the change's answer, or `None` when the subscription is
    /// gone or the record kept changing under it.
    async fn change_pace<T>(
        &self,
        sub: &Subscription,
        mut change: impl FnMut(&mut Pace, &Subscription) -> T,
    ) -> Result<Option<T>> {
        let mut current = sub.clone();
        for _ in 0..SWAP_TRIES {
            let was = current.pace.as_ref().map(|p| p.version);
            let mut pace = current.pace.clone().unwrap_or_default();
            let answer = change(&mut pace, &current);
            pace.version = was.map_or(1, |v| v + 1);
            if self.store.swap_pace(&current.id, was, &pace).await? {
                return Ok(Some(answer));
            }
            match self.store.get(&sub.id).await? {
                Some(fresh) => current = fresh,
                None => return Ok(None),
            }
        }
        tracing::warn!(subscription_id = %sub.id, "pace changed under every try; the batch waits a moment");
        Ok(None)
    }

    /// Books slots for `wanted` deliveries to `sub` from now: `None` when its pace does not
    /// apply (no limit, no back-off: they all go at once). A booking with no slot at all when
    /// the record kept changing under it (they all wait a moment).
    pub async fn book_slots(&self, sub: &Subscription, wanted: usize) -> Result<Option<Booking>> {
        let now = self.now_ms();
        if !Pace::applies(sub.pace.as_ref(), sub.max_per_second, now) {
            return Ok(None);
        }
        let booked = self
            .change_pace(sub, |pace, current| {
                pace.recover(current.max_per_second, now);
                self.metrics
                    .pace(&current.id, pace.rate(current.max_per_second));
                match pace.rate(current.max_per_second) {
                    Some(rate) => pace.book(wanted, rate, now),
                    // Only a `Retry-After` holds it: from then on, everything goes at once.
                    None => {
                        let from = pace.next_slot_ms.max(now as f64);
                        let within = from <= now as f64 + BOOKING_HORIZON_MS;
                        Booking {
                            slots_ms: if within {
                                vec![from; wanted]
                            } else {
                                Vec::new()
                            },
                            next_free_ms: from,
                            interval_ms: 0.0,
                        }
                    }
                }
            })
            .await?;
        Ok(Some(booked.unwrap_or(Booking {
            slots_ms: Vec::new(),
            next_free_ms: now as f64 + 1000.0,
            interval_ms: 0.0,
        })))
    }

    /// Cuts the rate of each subscription whose receiver pushed back in a batch (once per
    /// subscription and batch), holding it for the longest `Retry-After` it asked for.
    pub async fn note_push_backs(&self, pushed: Vec<(Subscription, Option<Duration>)>) {
        let now = self.now_ms();
        let changes = pushed.into_iter().map(|(sub, retry_after)| async move {
            let cut = self
                .change_pace(&sub, |pace, current| {
                    pace.push_back(current.max_per_second, retry_after, now);
                    self.metrics
                        .pace(&current.id, pace.rate(current.max_per_second));
                    pace.backoff_per_second
                })
                .await;
            match cut {
                Ok(Some(rate)) => {
                    tracing::info!(subscription_id = %sub.id, rate_per_second = rate, "receiver pushed back: delivering slower")
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(subscription_id = %sub.id, error = %err, "could not slow the subscription down")
                }
            }
        });
        futures::future::join_all(changes).await;
    }
}
