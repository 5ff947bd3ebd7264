//! A subscription's pace: how fast deliveries to it may go. Two rules share one small record,
//! kept with the subscription in the store so that every sender process (every Lambda
//! invocation on AWS) books from the same one: the subscription's own limit
//! (`max_per_second`) and back-pressure (a rate the hub cuts when the receiver answers `429` or
//! `503`, and raises again while it does not). docs/design.md "Pacing" explains both.
//!
//! The limit is kept as a schedule of slots (the generic cell rate algorithm): `next_slot_ms` is
//! when the next delivery may go, and each delivery booked moves it on by one interval
//! (`1000 / rate` ms). A sender batch books all the slots it can use within
//! [`BOOKING_HORIZON_MS`] in one write, sends each delivery at its slot, and hides the rest
//! until theirs. Nothing is stored up while a subscription is idle, so no burst ever exceeds
//! the rate: any one-second window holds at most `rate + 1` deliveries.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How far ahead of now one sender batch books slots, ms: what it cannot send within this is
/// hidden on the queue until its time.
pub const BOOKING_HORIZON_MS: f64 = 1000.0;
/// The back-off rate of a subscription without a limit of its own, at the receiver's first
/// push-back, deliveries per second (with a limit: half of it).
pub const BACKOFF_START: f64 = 20.0;
/// The lowest back-off rate, deliveries per second.
pub const BACKOFF_FLOOR: f64 = 1.0;
/// What each push-back multiplies the back-off rate by (at most once per [`CUT_EVERY_MS`]).
pub const BACKOFF_CUT: f64 = 0.5;
/// The least time between two cuts, ms: the answers to deliveries sent at the old rate arrive
/// together, and count as one push-back.
pub const CUT_EVERY_MS: i64 = 1000;
/// What the back-off rate grows by each second without a push-back.
pub const RECOVERY_PER_SECOND: f64 = 1.1;
/// Above this back-off rate (or above the subscription's own limit) the back-off ends.
pub const BACKOFF_CEILING: f64 = 1000.0;
/// How soon a delivery the receiver pushed back on is tried again, at the earliest (a
/// `Retry-After` can only make it later); its pace decides when it actually goes.
pub const PUSHED_BACK_RETRY: Duration = Duration::from_secs(1);

/// A subscription's pace record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pace {
    /// Bumped by every change: a change is written only over the version it was made from.
    pub version: u64,
    /// When the next delivery may go, Unix ms (fractional: an interval need not be whole ms).
    pub next_slot_ms: f64,
    /// The back-off rate, deliveries per second, while the receiver pushes back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_per_second: Option<f64>,
    /// When the back-off rate last changed (a cut, or the recovery applied up to), Unix ms.
    #[serde(default)]
    pub changed_ms: i64,
    /// When the receiver last pushed back, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_back_ms: Option<i64>,
}

/// A booked slot: when a delivery may leave (Unix ms) and the interval of the rate it was
/// booked at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    /// When it may leave, Unix ms.
    pub at_ms: f64,
    /// One slot's length at the rate booked, ms.
    pub interval_ms: f64,
}

/// How many subscriptions [`SendSpacing`] remembers before it forgets those not sent to for a
/// minute.
const SPACING_MEMORY: usize = 10_000;

/// This process's last request to each paced subscription, as it actually left. A request
/// leaves at its slot, or one interval after this process's previous request to the
/// subscription, whichever is later, and that is checked when it wakes to go, not when it booked:
/// requests whose work before the send (reads, signing) ran past their slots, or that woke late
/// together because the machine was busy, still leave one interval apart, so the receiver never
/// sees the slots of several seconds at once (the booking keeps processes apart; this keeps one
/// process's requests apart).
#[derive(Debug, Default)]
pub struct SendSpacing {
    last_ms: std::sync::Mutex<std::collections::HashMap<String, f64>>,
}

impl SendSpacing {
    /// Whether a request to `subscription_id` booked for `slot` may leave at `now_ms`: if so it
    /// is noted as the last to leave; if not, when to ask again (Unix ms).
    pub fn try_leave(&self, subscription_id: &str, slot: Slot, now_ms: f64) -> Result<(), f64> {
        let mut last_ms = self.last_ms.lock().unwrap_or_else(|e| e.into_inner());
        let at = last_ms.get(subscription_id).map_or(slot.at_ms, |previous| {
            slot.at_ms.max(previous + slot.interval_ms)
        });
        if at > now_ms {
            return Err(at);
        }
        if last_ms.len() >= SPACING_MEMORY && !last_ms.contains_key(subscription_id) {
            last_ms.retain(|_, sent| *sent > now_ms - 60_000.0);
        }
        last_ms.insert(subscription_id.to_string(), now_ms);
        Ok(())
    }
}

/// The slots one batch booked.
#[derive(Debug, Clone, PartialEq)]
pub struct Booking {
    /// When each booked delivery goes, Unix ms, in order (fewer than asked when the horizon is
    /// full).
    pub slots_ms: Vec<f64>,
    /// The first slot after them: where the deliveries not booked wait for.
    pub next_free_ms: f64,
    /// One slot's length at the rate booked, ms.
    pub interval_ms: f64,
}

impl Booking {
    /// The `n`-th booked slot (from 0), if it was booked.
    pub fn slot(&self, n: usize) -> Option<Slot> {
        self.slots_ms.get(n).map(|&at_ms| Slot {
            at_ms,
            interval_ms: self.interval_ms,
        })
    }

    /// How long the `n`-th delivery that was not booked (from 0) waits before it comes back to
    /// book again: spread one interval apart from the first free slot, so they come back at
    /// the rate they can go.
    pub fn wait_of_unbooked(&self, n: usize, now_ms: i64) -> Duration {
        let at = self.next_free_ms + n as f64 * self.interval_ms;
        Duration::from_millis((at - now_ms as f64).max(0.0).ceil() as u64)
    }
}

impl Pace {
    /// Whether deliveries to a subscription with this pace and `limit` go through booking at
    /// `now_ms` (otherwise they go at once, with no store write).
    pub fn applies(pace: Option<&Pace>, limit: Option<u32>, now_ms: i64) -> bool {
        limit.is_some()
            || pace
                .is_some_and(|p| p.backoff_per_second.is_some() || p.next_slot_ms > now_ms as f64)
    }

    /// Grows the back-off rate for the time since it last changed, without a push-back since,
    /// and ends the back-off once it is above `limit` or [`BACKOFF_CEILING`].
    pub fn recover(&mut self, limit: Option<u32>, now_ms: i64) {
        let Some(rate) = self.backoff_per_second else {
            return;
        };
        let quiet_since = self.changed_ms.max(self.pushed_back_ms.unwrap_or(0));
        let elapsed = now_ms - quiet_since;
        if elapsed < 1000 {
            return;
        }
        let grown = rate * RECOVERY_PER_SECOND.powf(elapsed as f64 / 1000.0);
        let ceiling = limit.map_or(BACKOFF_CEILING, |l| f64::from(l).min(BACKOFF_CEILING));
        self.backoff_per_second = (grown < ceiling).then_some(grown);
        self.changed_ms = now_ms;
    }

    /// The rate in force, deliveries per second: the lower of the limit and the back-off
    /// (`None`: as fast as the hub goes).
    pub fn rate(&self, limit: Option<u32>) -> Option<f64> {
        match (limit.map(f64::from), self.backoff_per_second) {
            (Some(l), Some(b)) => Some(l.min(b)),
            (l, b) => l.or(b),
        }
    }

    /// Books up to `wanted` slots from now at `rate` deliveries per second, within
    /// [`BOOKING_HORIZON_MS`].
    pub fn book(&mut self, wanted: usize, rate: f64, now_ms: i64) -> Booking {
        let interval_ms = 1000.0 / rate.max(BACKOFF_FLOOR / 10.0);
        let horizon = now_ms as f64 + BOOKING_HORIZON_MS;
        let mut slot = self.next_slot_ms.max(now_ms as f64);
        let mut slots_ms = Vec::new();
        while slots_ms.len() < wanted && slot <= horizon {
            slots_ms.push(slot);
            slot += interval_ms;
        }
        self.next_slot_ms = slot;
        Booking {
            slots_ms,
            next_free_ms: slot,
            interval_ms,
        }
    }

    /// The receiver pushed back (`429`, `503`): the back-off rate is cut (to half of what is
    /// in force; at the first push-back, [`BACKOFF_START`] or half the limit), at most once per
    /// [`CUT_EVERY_MS`]; a `Retry-After` holds every delivery until then.
    pub fn push_back(&mut self, limit: Option<u32>, retry_after: Option<Duration>, now_ms: i64) {
        self.recover(limit, now_ms);
        let cut_due = self.backoff_per_second.is_none() || now_ms - self.changed_ms >= CUT_EVERY_MS;
        if cut_due {
            let from = self
                .rate(limit)
                .map_or(BACKOFF_START / BACKOFF_CUT, |rate| rate);
            self.backoff_per_second = Some((from * BACKOFF_CUT).max(BACKOFF_FLOOR));
            self.changed_ms = now_ms;
        }
        self.pushed_back_ms = Some(now_ms);
        if let Some(wait) = retry_after {
            let until = now_ms as f64 + wait.as_millis() as f64;
            self.next_slot_ms = self.next_slot_ms.max(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_sends_a_subscription_one_interval_apart_even_late() {
        let spacing = SendSpacing::default();
        let slot = |at_ms| Slot {
            at_ms,
            interval_ms: 500.0,
        };
        // Too early: asked to come back at the slot.
        assert_eq!(
            spacing.try_leave("sub_a", slot(1_000.0), 900.0),
            Err(1_000.0)
        );
        assert_eq!(spacing.try_leave("sub_a", slot(1_000.0), 1_000.0), Ok(()));
        // Woken late together (slots 1,500 and 2,000 at 2,300): the first goes, the second
        // waits one interval after it, not after its slot.
        assert_eq!(spacing.try_leave("sub_a", slot(1_500.0), 2_300.0), Ok(()));
        assert_eq!(
            spacing.try_leave("sub_a", slot(2_000.0), 2_300.0),
            Err(2_800.0)
        );
        assert_eq!(spacing.try_leave("sub_a", slot(2_000.0), 2_800.0), Ok(()));
        // A slot after the spacing stays as booked; another subscription is not touched.
        assert_eq!(
            spacing.try_leave("sub_a", slot(5_000.0), 4_000.0),
            Err(5_000.0)
        );
        assert_eq!(spacing.try_leave("sub_b", slot(1_000.0), 2_800.0), Ok(()));
        // Unpaced but held by a `Retry-After` (no interval): everything at the slot.
        let held = Slot {
            at_ms: 9_000.0,
            interval_ms: 0.0,
        };
        assert_eq!(spacing.try_leave("sub_c", held, 9_000.0), Ok(()));
        assert_eq!(spacing.try_leave("sub_c", held, 9_000.0), Ok(()));
    }

    #[test]
    fn a_limit_books_one_interval_apart_within_the_horizon() {
        let mut pace = Pace::default();
        let booking = pace.book(100, 20.0, 10_000);
        assert_eq!(booking.slots_ms.len(), 21, "0 ms to 1,000 ms, 50 ms apart");
        assert_eq!(booking.slots_ms[1] - booking.slots_ms[0], 50.0);
        assert_eq!(booking.next_free_ms, 11_050.0);
        // A second batch at once finds the horizon full.
        assert!(pace.book(10, 20.0, 10_000).slots_ms.is_empty());
        // The unbooked come back one interval apart from the first free slot.
        assert_eq!(
            booking.wait_of_unbooked(2, 10_000),
            Duration::from_millis(1_150)
        );
        // Idle time stores nothing up: an hour later it starts from now.
        let later = pace.book(100, 20.0, 3_600_000);
        assert_eq!(later.slots_ms[0], 3_600_000.0);
        assert_eq!(later.slots_ms.len(), 21);
    }

    #[test]
    fn push_backs_cut_once_a_second_and_quiet_time_recovers() {
        let mut pace = Pace::default();
        pace.push_back(None, None, 1_000);
        assert_eq!(pace.rate(None), Some(BACKOFF_START));
        pace.push_back(None, None, 1_500);
        assert_eq!(
            pace.rate(None),
            Some(BACKOFF_START),
            "within the second: one cut"
        );
        pace.push_back(None, None, 2_400);
        assert_eq!(pace.rate(None), Some(BACKOFF_START / 2.0));
        pace.recover(None, 3_000);
        assert_eq!(
            pace.rate(None),
            Some(BACKOFF_START / 2.0),
            "not a second quiet yet"
        );
        pace.recover(None, 4_400);
        let grown = pace.rate(None).unwrap();
        assert!((grown - 10.0 * 1.21).abs() < 1e-9, "{grown}");
        pace.recover(None, 4_400 + 60_000);
        assert_eq!(
            pace.backoff_per_second, None,
            "recovered past the ceiling: ended"
        );
        // With a limit of its own: half of it, and over when back at it.
        let mut limited = Pace::default();
        limited.push_back(Some(50), Some(Duration::from_secs(3)), 0);
        assert_eq!(limited.rate(Some(50)), Some(25.0));
        assert_eq!(
            limited.next_slot_ms, 3_000.0,
            "Retry-After holds every delivery"
        );
        limited.recover(Some(50), 10_000);
        assert_eq!(limited.rate(Some(50)), Some(50.0));
        assert!(Pace::applies(Some(&limited), Some(50), 10_000));
        assert!(!Pace::applies(Some(&Pace::default()), None, 0));
    }
}
