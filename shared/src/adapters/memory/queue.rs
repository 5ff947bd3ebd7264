//! The in-memory [`Queue`] with SQS semantics: a received message is hidden for the
//! visibility timeout and comes back unless acknowledged; past `max_receives` it moves to the
//! dead-letter queue.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::{HubError, Result};
use crate::ports::{OutgoingMessage, Queue, QueueStats, ReceivedMessage};

struct QueuedMessage {
    id: String,
    body: String,
    receive_count: u32,
    visible_at: Instant,
    receipt: u64,
    sent_at: Instant,
    /// When it was sent, Unix ms (the retention of dead letters counts from it).
    sent_at_ms: i64,
    /// Its ordered group, with its place in it (the send sequence).
    group: Option<(String, u64)>,
}

#[derive(Default)]
struct QueueState {
    next_seq: u64,
    /// Ordered by (visible_at, seq).
    waiting: BTreeMap<(Instant, u64), QueuedMessage>,
    /// receipt → key in `waiting` for received (in-flight) messages.
    in_flight: HashMap<u64, (Instant, u64)>,
    /// The places of each ordered group's messages still held: only the first is handed out.
    groups: HashMap<String, std::collections::BTreeSet<u64>>,
}

impl QueueState {
    /// Whether `msg` may be handed out as far as its group goes: it has none, or it is its
    /// group's first.
    fn heads_its_group(&self, msg: &QueuedMessage) -> bool {
        msg.group.as_ref().is_none_or(|(group, place)| {
            self.groups
                .get(group)
                .and_then(|places| places.first())
                .is_none_or(|first| first == place)
        })
    }

    /// Forgets a message that left the queue (acknowledged, dead-lettered) from its group.
    fn leave_group(&mut self, msg: &QueuedMessage) {
        if let Some((group, place)) = &msg.group
            && let Some(places) = self.groups.get_mut(group)
        {
            places.remove(place);
            if places.is_empty() {
                self.groups.remove(group);
            }
        }
    }
}

/// A [`Queue`] in process memory with SQS semantics: a received message is hidden for the
/// visibility timeout and comes back unless acknowledged; past `max_receives` it moves to the
/// dead-letter queue.
pub struct MemoryQueue {
    state: Mutex<QueueState>,
    notify: Notify,
    visibility: Duration,
    max_receives: u32,
    dead_letters: Option<Arc<MemoryQueue>>,
}

impl MemoryQueue {
    /// A queue whose messages move to `dead_letters` after `max_receives` receives.
    pub fn new(
        visibility: Duration,
        max_receives: u32,
        dead_letters: Option<Arc<MemoryQueue>>,
    ) -> Self {
        MemoryQueue {
            state: Mutex::new(QueueState::default()),
            notify: Notify::new(),
            visibility,
            max_receives,
            dead_letters,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many messages it holds, visible or not.
    pub fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Whether it holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bodies it holds (for the dead-letter queue's inspection).
    pub fn bodies(&self) -> Vec<String> {
        self.lock()
            .waiting
            .values()
            .map(|m| m.body.clone())
            .collect()
    }

    fn push(&self, body: String, delay: Duration, receive_count: u32, group: Option<String>) {
        let mut state = self.lock();
        state.next_seq += 1;
        let seq = state.next_seq;
        let group = group.map(|group| {
            state.groups.entry(group.clone()).or_default().insert(seq);
            (group, seq)
        });
        let visible_at = Instant::now() + delay;
        state.waiting.insert(
            (visible_at, seq),
            QueuedMessage {
                id: format!("m-{seq}"),
                body,
                receive_count,
                visible_at,
                receipt: 0,
                sent_at: Instant::now(),
                sent_at_ms: crate::clock::wall_ms(),
                group,
            },
        );
        drop(state);
        self.notify.notify_waiters();
    }

    /// Takes what is visible now; `Err(next_visible_at)` when nothing is.
    fn take_visible(
        &self,
        max: usize,
    ) -> std::result::Result<Vec<ReceivedMessage>, Option<Instant>> {
        let now = Instant::now();
        let mut state = self.lock();
        let mut taken = Vec::new();
        let mut dead = Vec::new();
        // Walks the visible messages in order, passing over those an earlier message of their
        // group holds back.
        let mut passed: Option<(Instant, u64)> = None;
        while taken.len() < max {
            let next = match passed {
                None => state.waiting.first_key_value(),
                Some(after) => state
                    .waiting
                    .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                    .next(),
            };
            let Some((&key, msg)) = next else {
                break;
            };
            if key.0 > now {
                break;
            }
            if !state.heads_its_group(msg) {
                passed = Some(key);
                continue;
            }
            let mut msg = state.waiting.remove(&key).expect("key just seen");
            if msg.receipt != 0 {
                state.in_flight.remove(&msg.receipt);
            }
            // An ordered message is never moved by its receive count: it keeps its place, and
            // the consumer decides when it is done (as on an SQS FIFO queue without redrive).
            if msg.receive_count >= self.max_receives
                && self.dead_letters.is_some()
                && msg.group.is_none()
            {
                dead.push(msg.body);
                continue;
            }
            msg.receive_count += 1;
            state.next_seq += 1;
            let seq = state.next_seq;
            msg.receipt = seq;
            msg.visible_at = now + self.visibility;
            taken.push(ReceivedMessage {
                id: msg.id.clone(),
                receipt: seq.to_string(),
                body: msg.body.clone(),
                receive_count: msg.receive_count,
                sent_at_ms: Some(msg.sent_at_ms),
                ..Default::default()
            });
            let new_key = (msg.visible_at, seq);
            state.in_flight.insert(seq, new_key);
            state.waiting.insert(new_key, msg);
        }
        let next = state.waiting.first_key_value().map(|(k, _)| k.0);
        drop(state);
        if let Some(dlq) = &self.dead_letters {
            for body in dead {
                dlq.push(body, Duration::ZERO, 0, None);
            }
        }
        if taken.is_empty() {
            Err(next)
        } else {
            Ok(taken)
        }
    }

    /// Removes the in-flight messages of `receipts` (`delay: None`) or hides them for `delay`
    /// more, under one lock.
    fn reschedule<'r>(&self, receipts: impl IntoIterator<Item = &'r str>, delay: Option<Duration>) {
        let visible_at = delay.map(|delay| Instant::now() + delay);
        let mut state = self.lock();
        let mut hidden = false;
        for receipt in receipts {
            let Ok(receipt) = receipt.parse::<u64>() else {
                continue;
            };
            let Some(key) = state.in_flight.remove(&receipt) else {
                continue;
            };
            let Some(mut msg) = state.waiting.remove(&key) else {
                continue;
            };
            let Some(visible_at) = visible_at else {
                state.leave_group(&msg);
                // The next of its group may go now.
                hidden |= msg.group.is_some();
                continue;
            };
            {
                msg.visible_at = visible_at;
                let new_key = (visible_at, key.1);
                state.in_flight.insert(receipt, new_key);
                state.waiting.insert(new_key, msg);
                hidden = true;
            }
        }
        drop(state);
        if hidden {
            self.notify.notify_waiters();
        }
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn stats(&self) -> Result<Option<QueueStats>> {
        let state = self.lock();
        Ok(Some(QueueStats {
            depth: state.waiting.len() as u64,
            oldest_age: state.waiting.values().map(|m| m.sent_at.elapsed()).max(),
        }))
    }

    async fn send(&self, messages: Vec<OutgoingMessage>) -> Result<()> {
        for message in messages {
            self.push(message.body, message.delay, 0, message.group);
        }
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            match self.take_visible(max) {
                Ok(batch) => return Ok(batch),
                Err(next) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(vec![]);
                    }
                    let until = next.map_or(deadline, |n| n.min(deadline));
                    let _ =
                        tokio::time::timeout(until.saturating_duration_since(now), notified).await;
                }
            }
        }
    }

    async fn ack(&self, receipt: &str) -> Result<()> {
        self.reschedule([receipt], None);
        Ok(())
    }

    async fn ack_all(&self, receipts: &[String]) -> Result<()> {
        self.reschedule(receipts.iter().map(String::as_str), None);
        Ok(())
    }

    async fn postpone(&self, receipt: &str, delay: Duration) -> Result<()> {
        self.reschedule([receipt], Some(delay));
        Ok(())
    }

    async fn postpone_all(&self, receipts: &[String], delay: Duration) -> Result<()> {
        self.reschedule(receipts.iter().map(String::as_str), Some(delay));
        Ok(())
    }

    async fn prune_dead_letters(&self, before_ms: i64) -> Result<u64> {
        let Some(dlq) = &self.dead_letters else {
            return Ok(0);
        };
        let mut state = dlq.lock();
        let old: Vec<(Instant, u64)> = state
            .waiting
            .iter()
            .filter(|(_, m)| m.sent_at_ms < before_ms)
            .map(|(key, _)| *key)
            .collect();
        for key in &old {
            state.waiting.remove(key);
        }
        state.in_flight.retain(|_, key| !old.contains(key));
        Ok(old.len() as u64)
    }

    async fn dead_letter(&self, body: String) -> Result<()> {
        match &self.dead_letters {
            Some(dlq) => {
                dlq.push(body, Duration::ZERO, 0, None);
                Ok(())
            }
            None => Err(HubError::backend("this queue has no dead-letter queue")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &str) -> OutgoingMessage {
        OutgoingMessage {
            body: body.into(),
            delay: Duration::ZERO,
            group: None,
        }
    }

    #[tokio::test]
    async fn unacknowledged_messages_come_back_then_die() {
        let dlq = Arc::new(MemoryQueue::new(Duration::from_secs(30), u32::MAX, None));
        let q = MemoryQueue::new(Duration::from_millis(20), 2, Some(dlq.clone()));
        q.send(vec![msg("a")]).await.unwrap();
        let first = q.receive(10, Duration::from_millis(100)).await.unwrap();
        assert_eq!(first[0].receive_count, 1);
        let second = q.receive(10, Duration::from_millis(200)).await.unwrap();
        assert_eq!(second[0].receive_count, 2);
        assert_eq!(second[0].id, first[0].id);
        let third = q.receive(10, Duration::from_millis(100)).await.unwrap();
        assert!(third.is_empty());
        assert_eq!(dlq.bodies(), vec!["a".to_string()]);
    }

    #[tokio::test]
    async fn dead_letters_end_with_the_retention() {
        let dead = Arc::new(MemoryQueue::new(Duration::from_secs(30), u32::MAX, None));
        let q = MemoryQueue::new(Duration::from_secs(30), 5, Some(dead.clone()));
        crate::adapters::queue_checks::dead_letters_end_with_the_retention(&q, &*dead).await;
    }

    #[tokio::test]
    async fn acknowledged_messages_are_gone_and_postponed_ones_wait() {
        let q = MemoryQueue::new(Duration::from_secs(30), 5, None);
        q.send(vec![msg("a"), msg("b")]).await.unwrap();
        let got = q.receive(10, Duration::from_millis(50)).await.unwrap();
        assert_eq!(got.len(), 2);
        q.ack(&got[0].receipt).await.unwrap();
        let postponed = std::time::Instant::now();
        q.postpone(&got[1].receipt, Duration::from_millis(300))
            .await
            .unwrap();
        // Not before the delay (a lower bound holds however slow the machine); the upper bound
        // is generous.
        let again = q.receive(10, Duration::from_secs(10)).await.unwrap();
        assert!(postponed.elapsed() >= Duration::from_millis(300));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].body, "b");
        assert_eq!(again[0].receive_count, 2);
    }

    #[tokio::test]
    async fn batches_are_acknowledged_and_postponed_in_one_call() {
        let q = MemoryQueue::new(Duration::from_secs(30), 5, None);
        crate::adapters::queue_checks::batches_are_acknowledged_and_postponed_in_one_call(&q).await;
    }

    #[tokio::test]
    async fn ordered_groups_go_one_at_a_time_in_order() {
        let q = MemoryQueue::new(Duration::from_secs(30), 5, None);
        crate::adapters::queue_checks::ordered_groups_go_one_at_a_time_in_order(&q).await;
    }
}
