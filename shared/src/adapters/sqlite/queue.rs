//! The SQLite [`Queue`]: messages are rows of one table, named by queue. A receive hides what it
//! takes until `visible_at_ms` (wall-clock time, so it holds across a restart) and stamps a new
//! receipt; acknowledging deletes the row; past `max_receives` a message moves to the dead-letter
//! queue. A message received before a crash comes back when its visibility ends, as on SQS.
//!
//! A receive that finds nothing waits as the queue's one *waiter*: the next send hands it its
//! messages directly, inserted as received in the send's own write, so a message that arrives
//! while its poller waits is picked up with no second write and no wake-up to take it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::db::{Admission, SqliteDb, db_error};
use crate::clock::wall_ms;
use crate::error::{HubError, Result};
use crate::ports::{OutgoingMessage, Queue, QueueStats, ReceivedMessage};

/// How long an empty receive sleeps at most before looking again (messages moved here by
/// another queue, such as dead letters, do not wake it).
const IDLE_RECHECK: Duration = Duration::from_millis(250);

/// A [`Queue`] stored in a SQLite database, with SQS semantics.
pub struct SqliteQueue {
    db: SqliteDb,
    name: String,
    dead_letters: Option<String>,
    visibility: Duration,
    max_receives: u32,
    notify: Arc<Notify>,
    /// The receive waiting for messages, if one is.
    waiting: Mutex<Option<Waiter>>,
    /// Tells waiters apart.
    waiters: AtomicU64,
    /// What a send adds, for the database's size limit.
    admission: Admission,
}

/// A receive waiting for messages: the next send hands it up to `max` of them, received.
struct Waiter {
    id: u64,
    max: usize,
    handed: oneshot::Sender<Vec<ReceivedMessage>>,
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// Splits a receipt `"{row id}:{stamp}"`.
fn parse_receipt(receipt: &str) -> Option<(i64, i64)> {
    let (id, rest) = receipt.split_once(':')?;
    let stamp = rest.strip_suffix(GROUPED_RECEIPT).unwrap_or(rest);
    Some((id.parse().ok()?, stamp.parse().ok()?))
}

/// Whether any of `receipts` is of a message of an ordered group.
fn receipts_of_groups(receipts: &[String]) -> bool {
    receipts.iter().any(|r| r.ends_with(GROUPED_RECEIPT))
}

/// Ends the receipt of a message of an ordered group: acknowledging it lets the next of its
/// group go, so waiting receives look again at once.
const GROUPED_RECEIPT: &str = ":g";

impl SqliteQueue {
    /// The queue `name` of `db`, whose messages move to the queue `dead_letters` after
    /// `max_receives` receives.
    pub fn new(
        db: SqliteDb,
        name: &str,
        visibility: Duration,
        max_receives: u32,
        dead_letters: Option<&str>,
    ) -> Self {
        SqliteQueue {
            db,
            name: name.to_string(),
            dead_letters: dead_letters.map(str::to_string),
            visibility,
            max_receives,
            notify: Arc::new(Notify::new()),
            waiting: Mutex::new(None),
            waiters: AtomicU64::new(0),
            admission: Admission::Derived,
        }
    }

    /// The queue with its sends counted as `admission` under the database's size limit (a
    /// queue's sends are [`Admission::Derived`] unless said otherwise).
    pub fn admitting(self, admission: Admission) -> Self {
        SqliteQueue { admission, ..self }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Option<Waiter>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many messages it holds, visible or not.
    pub async fn len(&self) -> Result<usize> {
        let name = self.name.clone();
        self.db
            .read(move |conn| {
                conn.prepare_cached("SELECT count(*) FROM messages WHERE queue = ?1")
                    .and_then(|mut s| s.query_row([name], |r| r.get::<_, i64>(0)))
                    .map(|n| n as usize)
                    .map_err(db_error)
            })
            .await
    }

    /// Hides received messages for `delay`: `held` while this process keeps them (a restart
    /// under the lock shows them again at once), or postponed on purpose (they wait it out).
    async fn hide(&self, receipts: &[String], delay: Duration, held: bool) -> Result<()> {
        let receipts: Vec<(i64, i64)> = receipts.iter().filter_map(|r| parse_receipt(r)).collect();
        if receipts.is_empty() {
            return Ok(());
        }
        let delay = millis(delay.min(crate::ports::MAX_HIDE));
        // One operation of the writer for the lot: each UPDATE is atomic by itself, and a
        // message hidden a little longer or not at all only changes when it comes back.
        self.db
            .write_one(move |conn| {
                let mut update = conn
                    .prepare_cached(
                        "UPDATE messages SET visible_at_ms = ?3, held = ?4
                         WHERE id = ?1 AND receipt = ?2",
                    )
                    .map_err(db_error)?;
                let until = wall_ms() + delay;
                for (id, stamp) in receipts {
                    update
                        .execute(params![id, stamp, until, held as i64])
                        .map_err(db_error)?;
                }
                Ok(())
            })
            .await?;
        self.notify.notify_waiters();
        Ok(())
    }

    /// Takes what is visible now; `Err(next_visible_at_ms)` when nothing is.
    async fn take_visible(
        &self,
        max: usize,
    ) -> Result<std::result::Result<Vec<ReceivedMessage>, Option<i64>>> {
        let (name, dead) = (self.name.clone(), self.dead_letters.clone());
        let (visibility, max_receives) = (millis(self.visibility), self.max_receives as i64);
        self.db
            .write(move |conn| {
                let now = wall_ms();
                // A message of an ordered group only when no earlier one of its group is left.
                let visible: Vec<(i64, String, i64, bool, i64)> = conn
                    .prepare_cached(
                        "SELECT id, body, receive_count, grp IS NOT NULL, sent_at_ms
                         FROM messages AS m
                         WHERE queue = ?1 AND visible_at_ms <= ?2
                           AND (grp IS NULL OR NOT EXISTS (
                               SELECT 1 FROM messages AS e
                               WHERE e.queue = m.queue AND e.grp = m.grp AND e.id < m.id))
                         ORDER BY visible_at_ms, id LIMIT ?3",
                    )
                    .and_then(|mut s| {
                        s.query_map(params![name, now, max as i64], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                        })?
                        .collect()
                    })
                    .map_err(db_error)?;
                let mut taken = Vec::with_capacity(visible.len());
                for (id, body, receive_count, grouped, sent_at_ms) in visible {
                    // An ordered message keeps its place whatever its receive count: the
                    // consumer decides when it is done (as on an SQS FIFO queue without redrive).
                    if receive_count >= max_receives
                        && !grouped
                        && let Some(dead) = &dead
                    {
                        conn.prepare_cached(
                            "UPDATE messages SET queue = ?2, visible_at_ms = 0, receive_count = 0,
                                receipt = 0, held = 0 WHERE id = ?1",
                        )
                        .and_then(|mut s| s.execute(params![id, dead]))
                        .map_err(db_error)?;
                        continue;
                    }
                    let stamp = (rand::random::<u64>() >> 1) as i64;
                    conn.prepare_cached(
                        "UPDATE messages SET receive_count = receive_count + 1,
                            visible_at_ms = ?2, receipt = ?3, held = 1 WHERE id = ?1",
                    )
                    .and_then(|mut s| s.execute(params![id, now + visibility, stamp]))
                    .map_err(db_error)?;
                    let mark = if grouped { GROUPED_RECEIPT } else { "" };
                    taken.push(ReceivedMessage {
                        id: format!("m-{id}"),
                        receipt: format!("{id}:{stamp}{mark}"),
                        body,
                        receive_count: (receive_count + 1) as u32,
                        sent_at_ms: (sent_at_ms > 0).then_some(sent_at_ms),
                        ..Default::default()
                    });
                }
                if !taken.is_empty() {
                    return Ok(Ok(taken));
                }
                let next: Option<i64> = conn
                    .prepare_cached("SELECT min(visible_at_ms) FROM messages WHERE queue = ?1")
                    .and_then(|mut s| s.query_row([&name], |r| r.get(0)).optional())
                    .map_err(db_error)?
                    .flatten();
                Ok(Err(next))
            })
            .await
    }

    /// Inserts `messages` into `queue`; the first `received` of them (due now) as received
    /// already (hidden for the visibility, counted, stamped), returned as the receiver gets them.
    async fn insert(
        &self,
        queue: String,
        messages: Vec<OutgoingMessage>,
        received: usize,
        admission: Admission,
    ) -> Result<Vec<ReceivedMessage>> {
        let visibility = millis(self.visibility);
        let room = self.db.room(admission);
        self.db
            .write(move |conn| {
                room.check(conn)?;
                let now = wall_ms();
                let mut insert = conn
                    .prepare_cached(
                        "INSERT INTO messages
                            (queue, body, visible_at_ms, sent_at_ms, receive_count, receipt, held, grp)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5, ?7)",
                    )
                    .map_err(db_error)?;
                let mut handed = Vec::with_capacity(received);
                for (i, message) in messages.into_iter().enumerate() {
                    if i < received {
                        let stamp = (rand::random::<u64>() >> 1) as i64;
                        let id = insert
                            .insert(params![
                                queue,
                                message.body,
                                now + visibility,
                                now,
                                1,
                                stamp,
                                message.group
                            ])
                            .map_err(db_error)?;
                        handed.push(ReceivedMessage {
                            id: format!("m-{id}"),
                            receipt: format!("{id}:{stamp}"),
                            body: message.body,
                            receive_count: 1,
                            ..Default::default()
                        });
                    } else {
                        let visible_at = now + millis(message.delay);
                        insert
                            .execute(params![
                                queue,
                                message.body,
                                visible_at,
                                now,
                                0,
                                0,
                                message.group
                            ])
                            .map_err(db_error)?;
                    }
                }
                Ok(handed)
            })
            .await
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn stats(&self) -> Result<Option<QueueStats>> {
        let queue = self.name.clone();
        let (depth, oldest): (i64, Option<i64>) = self
            .db
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT count(*), min(CASE WHEN sent_at_ms > 0 THEN sent_at_ms END)
                     FROM messages WHERE queue = ?1",
                )
                .and_then(|mut s| s.query_row([&queue], |r| Ok((r.get(0)?, r.get(1)?))))
                .map_err(db_error)
            })
            .await?;
        Ok(Some(QueueStats {
            depth: depth.max(0) as u64,
            oldest_age: oldest.map(|at| Duration::from_millis((wall_ms() - at).max(0) as u64)),
        }))
    }

    async fn send(&self, messages: Vec<OutgoingMessage>) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        // Those due now, from the first, go straight to a waiting receive (not a message of an
        // ordered group: an earlier one of its group may still be there).
        let due_now = messages
            .iter()
            .take_while(|m| m.delay.is_zero() && m.group.is_none())
            .count();
        let waiter = if due_now > 0 {
            self.waiting().take()
        } else {
            None
        };
        let received = waiter.as_ref().map_or(0, |w| w.max.min(due_now));
        let total = messages.len();
        let handed = self
            .insert(self.name.clone(), messages, received, self.admission)
            .await?;
        if let Some(waiter) = waiter
            && let Err(handed) = waiter.handed.send(handed)
            && !handed.is_empty()
        {
            // The receive gave up meanwhile: the messages are made visible again at once.
            let receipts: Vec<String> = handed.into_iter().map(|m| m.receipt).collect();
            self.postpone_all(&receipts, Duration::ZERO).await?;
        }
        if received < total {
            self.notify.notify_waiters();
        }
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = match self.take_visible(max).await? {
                Ok(batch) => return Ok(batch),
                Err(next) => next,
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(vec![]);
            }
            let mut until = deadline.min(now + IDLE_RECHECK);
            if let Some(next) = next {
                let in_ms = (next - wall_ms()).max(0) as u64;
                until = until.min(now + Duration::from_millis(in_ms));
            }
            // Wait as the queue's waiter: a send hands its messages over; a notification (a
            // message sent with a delay, postponed or moved here), the next visible time or
            // the deadline make this look again.
            // (Another receive already waiting keeps its place; this one waits on notifications.)
            let (handed, mut arrived) = oneshot::channel();
            let id = self.waiters.fetch_add(1, Ordering::Relaxed);
            let registered = {
                let mut waiting = self.waiting();
                let free = waiting.as_ref().is_none_or(|w| w.handed.is_closed());
                if free {
                    *waiting = Some(Waiter { id, max, handed });
                }
                free
            };
            tokio::select! {
                got = &mut arrived, if registered => {
                    if let Ok(batch) = got && !batch.is_empty() {
                        return Ok(batch);
                    }
                }
                _ = tokio::time::timeout(until.saturating_duration_since(now), notified) => {
                    let withdrawn = {
                        let mut waiting = self.waiting();
                        let ours = waiting.as_ref().is_some_and(|w| w.id == id);
                        if ours {
                            *waiting = None;
                        }
                        ours
                    };
                    // A send took the offer: its messages are on their way (or it failed).
                    if registered
                        && !withdrawn
                        && let Ok(batch) = arrived.await
                        && !batch.is_empty()
                    {
                        return Ok(batch);
                    }
                }
            }
        }
    }

    async fn ack(&self, receipt: &str) -> Result<()> {
        self.ack_all(std::slice::from_ref(&receipt.to_string()))
            .await
    }

    async fn ack_all(&self, receipts: &[String]) -> Result<()> {
        let grouped = receipts_of_groups(receipts);
        let receipts: Vec<(i64, i64)> = receipts.iter().filter_map(|r| parse_receipt(r)).collect();
        if receipts.is_empty() {
            return Ok(());
        }
        // Not waited for: an acknowledgement lost in a crash only brings the message back
        // (at least once), and what was recorded before it is committed before it.
        self.db.write_behind("acknowledge messages", move |conn| {
            let mut delete = conn
                .prepare_cached("DELETE FROM messages WHERE id = ?1 AND receipt = ?2")
                .map_err(db_error)?;
            for (id, stamp) in receipts {
                delete.execute(params![id, stamp]).map_err(db_error)?;
            }
            Ok(())
        });
        if grouped {
            // A receive looks again after the delete (the writer runs in order): the next of
            // the group is visible to it.
            self.notify.notify_waiters();
        }
        Ok(())
    }

    async fn postpone(&self, receipt: &str, delay: Duration) -> Result<()> {
        self.postpone_all(std::slice::from_ref(&receipt.to_string()), delay)
            .await
    }

    async fn postpone_all(&self, receipts: &[String], delay: Duration) -> Result<()> {
        self.hide(receipts, delay, false).await
    }

    async fn hold_all(&self, receipts: &[String], delay: Duration) -> Result<()> {
        self.hide(receipts, delay, true).await
    }

    async fn prune_dead_letters(&self, before_ms: i64) -> Result<u64> {
        let Some(dead) = self.dead_letters.clone() else {
            return Ok(0);
        };
        let mut dropped = 0;
        loop {
            // In slices, so no other write waits long behind one.
            let dead = dead.clone();
            let slice = self
                .db
                .write(move |conn| {
                    conn.prepare_cached(
                        "DELETE FROM messages WHERE id IN (
                             SELECT id FROM messages WHERE queue = ?1 AND sent_at_ms < ?2 LIMIT 256)",
                    )
                    .and_then(|mut s| s.execute(params![dead, before_ms]))
                    .map_err(db_error)
                })
                .await?;
            dropped += slice as u64;
            if slice < 256 {
                return Ok(dropped);
            }
        }
    }

    async fn dead_letter(&self, body: String) -> Result<()> {
        let Some(dead) = self.dead_letters.clone() else {
            return Err(HubError::backend("this queue has no dead-letter queue"));
        };
        self.insert(
            dead,
            vec![OutgoingMessage {
                body,
                delay: Duration::ZERO,
                group: None,
            }],
            0,
            Admission::Derived,
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::sqlite::Durability;

    fn msg(body: &str) -> OutgoingMessage {
        OutgoingMessage {
            body: body.into(),
            delay: Duration::ZERO,
            group: None,
        }
    }

    fn scratch_db() -> (SqliteDb, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "queue-test-{}-{:x}.db",
            std::process::id(),
            rand::random::<u64>()
        ));
        (SqliteDb::open(&path, Durability::Normal).unwrap(), path)
    }

    #[tokio::test]
    async fn a_reopen_shows_held_messages_at_once_and_keeps_postponed_ones_hidden() {
        let (db, path) = scratch_db();
        let q = SqliteQueue::new(db.clone(), "q", Duration::from_secs(600), 5, None);
        q.send(vec![msg("received"), msg("parked"), msg("retry")])
            .await
            .unwrap();
        let got = q.receive(10, Duration::from_millis(50)).await.unwrap();
        let receipt =
            |body: &str| vec![got.iter().find(|m| m.body == body).unwrap().receipt.clone()];
        q.hold_all(&receipt("parked"), Duration::from_secs(600))
            .await
            .unwrap();
        q.postpone_all(&receipt("retry"), Duration::from_secs(600))
            .await
            .unwrap();
        db.flush().await.unwrap();
        drop((q, db));
        // The process is gone (its lock with it); the next one under the lock:
        let db = SqliteDb::open(&path, Durability::Normal).unwrap();
        let q = SqliteQueue::new(db, "q", Duration::from_secs(600), 5, None);
        let mut back: Vec<String> = q
            .receive(10, Duration::from_millis(50))
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.body)
            .collect();
        back.sort();
        assert_eq!(back, ["parked", "received"], "the retry waits its delay");
    }

    #[tokio::test]
    async fn unacknowledged_messages_come_back_then_die() {
        let (db, _path) = scratch_db();
        let dlq = SqliteQueue::new(db.clone(), "q-dlq", Duration::from_secs(30), u32::MAX, None);
        let q = SqliteQueue::new(db, "q", Duration::from_millis(50), 2, Some("q-dlq"));
        q.send(vec![msg("a")]).await.unwrap();
        let first = q.receive(10, Duration::from_millis(100)).await.unwrap();
        assert_eq!(first[0].receive_count, 1);
        let second = q.receive(10, Duration::from_millis(500)).await.unwrap();
        assert_eq!(second[0].receive_count, 2);
        assert_eq!(second[0].id, first[0].id);
        q.ack(&first[0].receipt).await.unwrap();
        assert_eq!(
            q.len().await.unwrap(),
            1,
            "a stale receipt acknowledges nothing"
        );
        let third = q.receive(10, Duration::from_millis(300)).await.unwrap();
        assert!(third.is_empty());
        let dead = dlq.receive(10, Duration::from_millis(100)).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].body, "a");
    }

    #[tokio::test]
    async fn acknowledged_messages_are_gone_and_postponed_ones_wait() {
        let (db, _path) = scratch_db();
        let q = SqliteQueue::new(db, "q", Duration::from_secs(30), 5, None);
        q.send(vec![msg("a"), msg("b")]).await.unwrap();
        let got = q.receive(10, Duration::from_millis(50)).await.unwrap();
        assert_eq!(got.len(), 2);
        q.ack(&got[0].receipt).await.unwrap();
        q.postpone(&got[1].receipt, Duration::from_millis(200))
            .await
            .unwrap();
        assert!(
            q.receive(10, Duration::from_millis(10))
                .await
                .unwrap()
                .is_empty()
        );
        let again = q.receive(10, Duration::from_secs(2)).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].body, "b");
        assert_eq!(again[0].receive_count, 2);
        assert_eq!(q.len().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn delayed_messages_wait_for_their_time() {
        let (db, _path) = scratch_db();
        let q = SqliteQueue::new(db, "q", Duration::from_secs(30), 5, None);
        q.send(vec![OutgoingMessage {
            body: "later".into(),
            delay: Duration::from_millis(300),
            group: None,
        }])
        .await
        .unwrap();
        assert!(
            q.receive(10, Duration::from_millis(50))
                .await
                .unwrap()
                .is_empty()
        );
        let got = q.receive(10, Duration::from_secs(2)).await.unwrap();
        assert_eq!(got[0].body, "later");
    }

    /// A message sent while a receive waits is handed to it, received in the send's own write:
    /// hidden for the visibility, counted, acknowledged by its receipt; once the receive has
    /// given up, a send leaves its messages for the next one.
    #[tokio::test]
    async fn a_waiting_receive_is_handed_what_is_sent() {
        let (db, _path) = scratch_db();
        let q = Arc::new(SqliteQueue::new(db, "q", Duration::from_secs(30), 5, None));
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { q.receive(1, Duration::from_secs(5)).await.unwrap() }
        });
        while q.waiting().is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        q.send(vec![msg("a"), msg("b")]).await.unwrap();
        let got = waiting.await.unwrap();
        assert_eq!(got.len(), 1, "as many as it asked for");
        assert_eq!((got[0].body.as_str(), got[0].receive_count), ("a", 1));
        let rest = q.receive(10, Duration::from_millis(50)).await.unwrap();
        assert_eq!(rest.len(), 1, "the handed one stays hidden: {rest:?}");
        assert_eq!(rest[0].body, "b");
        q.ack(&got[0].receipt).await.unwrap();
        q.ack(&rest[0].receipt).await.unwrap();
        db_flushed(&q).await;
        assert_eq!(q.len().await.unwrap(), 0);
        // A receive that gave up takes nothing from later sends.
        assert!(
            q.receive(1, Duration::from_millis(20))
                .await
                .unwrap()
                .is_empty()
        );
        q.send(vec![msg("c")]).await.unwrap();
        let later = q.receive(10, Duration::from_millis(50)).await.unwrap();
        assert_eq!((later.len(), later[0].receive_count), (1, 1));
    }

    async fn db_flushed(q: &SqliteQueue) {
        q.db.flush().await.unwrap();
    }

    #[tokio::test]
    async fn dead_letters_end_with_the_retention() {
        let (db, _path) = scratch_db();
        let q = SqliteQueue::new(db.clone(), "q", Duration::from_secs(30), 5, Some("q-dlq"));
        let dead = SqliteQueue::new(db, "q-dlq", Duration::from_secs(30), u32::MAX, None);
        crate::adapters::queue_checks::dead_letters_end_with_the_retention(&q, &dead).await;
    }

    #[tokio::test]
    async fn batches_are_acknowledged_and_postponed_in_one_call() {
        let (db, _path) = scratch_db();
        let q = SqliteQueue::new(db, "q", Duration::from_secs(30), 5, None);
        crate::adapters::queue_checks::batches_are_acknowledged_and_postponed_in_one_call(&q).await;
    }

    #[tokio::test]
    async fn ordered_groups_go_one_at_a_time_in_order() {
        let (db, _path) = scratch_db();
        let q = SqliteQueue::new(db, "q", Duration::from_secs(30), 5, None);
        crate::adapters::queue_checks::ordered_groups_go_one_at_a_time_in_order(&q).await;
    }
}
