//! The queue consumers, shared by the Lambda functions (SQS event batches) and the embedded
//! pollers: fan-out of an events-queue message, one delivery of a deliveries-queue message.

use std::time::Duration;

use crate::context::Hub;
use crate::error::HubError;
use crate::model::{DeliveryTask, Event, TaskPayload};
use crate::ports::{MAX_HIDE, ReceivedMessage};
use crate::service::delivery::{DeliveryBatch, Verdict};
use crate::service::ingest::IngestSource;
use crate::service::ordered::Drained;

/// How many KiB of delivery messages one batch attempts at once (the bodies built, signed and
/// sent from them are of the same order): bounds the sender's memory whatever its batch size.
const IN_FLIGHT_KIB: usize = 2 * 1024;

/// How soon a message whose handling was refused for want of space (a full disk, the database's
/// size limit) comes back: space can return at any moment.
const FULL_COMES_BACK_IN: Duration = Duration::from_secs(5);

/// The first pause of a message whose handling met a passing backend failure (DynamoDB
/// throttling, SQS unavailable); it doubles with each receive, up to [`BUSY_BACKOFF_CAP`].
const BUSY_BACKOFF: Duration = Duration::from_secs(2);
/// The longest such pause.
const BUSY_BACKOFF_CAP: Duration = Duration::from_secs(60);

/// Brings `msg` back soon when `err` will pass, rather than after the queue's whole visibility
/// timeout: in 5 s when storage is full, after a pause that doubles with each receive (2 s up
/// to 60 s, jittered) when a backend pushed back. Best effort: otherwise it comes back after
/// the visibility timeout, as any message not removed.
async fn come_back_soon(hub: &Hub, role: QueueRole, msg: &ReceivedMessage, err: &HubError) {
    let pause = match err {
        HubError::StorageFull { .. } => FULL_COMES_BACK_IN,
        err if err.is_transient() => {
            let doubled =
                BUSY_BACKOFF.saturating_mul(1 << msg.receive_count.clamp(1, 6).saturating_sub(1));
            let ceiling = doubled.min(BUSY_BACKOFF_CAP);
            ceiling.mul_f64(rand::random_range(0.5..=1.0))
        }
        _ => return,
    };
    let _ = queue_of(hub, role).postpone(&msg.receipt, pause).await;
}

/// Which queue a consumer reads: an SQS-triggered function's, or an embedded poller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRole {
    /// The events queue: fan-out.
    Events,
    /// The deliveries queue: the sender.
    Deliveries,
    /// The ordered deliveries queue (AWS's FIFO queue): the sender, one at a time per
    /// subscription. On the embedded backends it is the deliveries queue itself.
    Ordered,
    /// An ingest queue (direct publishing): publish, then fan out; the fan-out function reads it.
    Ingest(IngestSource),
}

/// The queue a consumer role reads.
pub fn queue_of(hub: &Hub, role: QueueRole) -> std::sync::Arc<dyn crate::ports::Queue> {
    match role {
        QueueRole::Events => hub.events.clone(),
        QueueRole::Deliveries => hub.deliveries.clone(),
        QueueRole::Ordered => hub.ordered.clone(),
        QueueRole::Ingest(source) => match source {
            IngestSource::Direct => hub.ingest.direct.clone(),
            IngestSource::Bus => hub.ingest.bus.clone(),
        }
        .expect("an ingest queue is read only where it is configured"),
    }
}

/// Processes one message of `role`'s queue; `true` when it may be removed.
pub async fn consume(hub: &Hub, role: QueueRole, msg: &ReceivedMessage) -> bool {
    consume_batch(hub, role, std::slice::from_ref(msg)).await[0]
}

/// Processes the messages of `role`'s queue received together (an SQS batch, one poll);
/// `true` for each that may be removed, in order. The Lambda handlers and the embedded pollers
/// both go through here: deliveries are attempted concurrently, events (and ingested messages,
/// once published) are fanned out together ([`Hub::fan_out_batch`]: each pattern read once,
/// tasks sent in batches of 10), and the batch's successes are folded into the odometers
/// together when it is done.
pub async fn consume_batch(hub: &Hub, role: QueueRole, msgs: &[ReceivedMessage]) -> Vec<bool> {
    consume_batch_then(hub, role, msgs, || {}).await
}

/// [`consume_batch`], calling `attempts_over` once the batch's delivery attempts are over, before
/// its log is written and its messages settled (for the other roles, once the batch is done).
/// The embedded lanes hand their places to the next batch then: a place bounds the attempts a
/// receiver sees at once, not the bookkeeping after them.
pub async fn consume_batch_then(
    hub: &Hub,
    role: QueueRole,
    msgs: &[ReceivedMessage],
    attempts_over: impl FnOnce(),
) -> Vec<bool> {
    match role {
        QueueRole::Events => {
            let done = fan_out_messages(hub, msgs).await;
            attempts_over();
            done
        }
        QueueRole::Deliveries | QueueRole::Ordered => {
            let batch = DeliveryBatch::default();
            // Every delivery of the batch at once, within a budget of message bytes in flight:
            // a hundred small events all go together, 6 MB of large ones a few MiB at a time.
            let budget = tokio::sync::Semaphore::new(IN_FLIGHT_KIB);
            let room = |msg: &ReceivedMessage| {
                let kib = (msg.body.len() / 1024).clamp(1, IN_FLIGHT_KIB) as u32;
                budget.acquire_many(kib)
            };
            // Deliveries to a paced subscription go at the slots the batch booked for them;
            // those it could not book wait on the queue until theirs.
            let gates = pace_gates(hub, msgs, &batch).await;
            let waited = wait_for_slots(hub, role, msgs, &gates).await;
            let attempted = futures::future::join_all(msgs.iter().zip(gates).zip(waited).map(
                |((msg, gate), waited)| {
                    let (batch, room) = (&batch, &room);
                    async move {
                        let slot = match gate {
                            Gate::Now => None,
                            Gate::At(slot) => Some(slot),
                            Gate::Wait(_) => return Step::Finished(waited),
                            Gate::Covered => return Step::Finished(true),
                        };
                        let _room = room(msg).await.expect("never closed");
                        attempt_message(hub, role, msg, batch, slot).await
                    }
                },
            ))
            .await;
            attempts_over();
            hub.note_push_backs(batch.take_push_backs()).await;
            // The batch's attempts to the delivery log before any message is settled: if they
            // cannot be written, the attempted messages come back and are attempted again.
            let logged = match hub.write_batch_log(&batch).await {
                Ok(()) => true,
                Err(err) => {
                    tracing::warn!(error = %err, "could not write the batch's delivery log; its messages will come back");
                    false
                }
            };
            let done =
                futures::future::join_all(msgs.iter().zip(attempted).map(|(msg, step)| async {
                    let _room = room(msg).await.expect("never closed");
                    settle_message(hub, role, msg, step, logged).await
                }))
                .await;
            // The batch's successes, one odometer write per subscription; what cannot be
            // written now waits in the process for the next batch's fold.
            if let Err(err) = hub.fold_pending().await {
                tracing::warn!(error = %err, waiting = hub.pending_tallies.waiting(), "could not fold the odometer; the next batch tries again");
            }
            done
        }
        QueueRole::Ingest(source) => {
            let results = hub.ingest_batch(source, msgs).await;
            let done = futures::future::join_all(
                msgs.iter()
                    .zip(results)
                    .map(|(msg, result)| settle_ingested(hub, source, msg, result)),
            )
            .await;
            attempts_over();
            done
        }
    }
}

/// Settles one ingest-queue message; `true` when it may be removed: published, a repeat, or
/// refused for good and dead-lettered (never delivered).
async fn settle_ingested(
    hub: &Hub,
    source: IngestSource,
    msg: &ReceivedMessage,
    result: crate::error::Result<crate::service::ingest::Ingested>,
) -> bool {
    match result {
        Ok(_) => true,
        Err(HubError::InProgress { retry_after_secs }) => {
            // Another copy holds the producer id's claim: look again when it has settled (or
            // lapsed), not after the whole visibility timeout.
            let wait = Duration::from_secs(retry_after_secs.max(1));
            let _ = queue_of(hub, QueueRole::Ingest(source))
                .postpone(&msg.receipt, wait)
                .await;
            false
        }
        Err(err) if err.is_transient() => {
            tracing::warn!(message_id = %msg.id, ?source, error = %err, "ingest failed; the message will come back");
            false
        }
        Err(err) => {
            tracing::warn!(message_id = %msg.id, ?source, code = err.code(), error = %err, "ingest message refused: to the dead-letter queue");
            queue_of(hub, QueueRole::Ingest(source))
                .dead_letter(msg.body.clone())
                .await
                .is_ok()
        }
    }
}

/// Fans out events-queue messages together; `true` for each that may be removed. An
/// unreadable message goes to the dead-letter queue on its own.
async fn fan_out_messages(hub: &Hub, msgs: &[ReceivedMessage]) -> Vec<bool> {
    let mut done = vec![false; msgs.len()];
    let (mut events, mut owners) = (Vec::new(), Vec::new());
    for (index, msg) in msgs.iter().enumerate() {
        match serde_json::from_str::<Event>(&msg.body) {
            Ok(event) => {
                events.push(event);
                owners.push(index);
            }
            Err(err) => {
                tracing::error!(message_id = %msg.id, error = %err, "unreadable events message: to the dead-letter queue");
                done[index] = hub.events.dead_letter(msg.body.clone()).await.is_ok();
            }
        }
    }
    let results = hub.fan_out_batch(&events).await;
    for ((index, result), event) in owners.into_iter().zip(results).zip(&events) {
        match result {
            Ok(_) => done[index] = true,
            Err(err) => {
                tracing::warn!(event_id = %event.id, error = %err, "fan-out failed; the message will come back");
                come_back_soon(hub, QueueRole::Events, &msgs[index], &err).await;
            }
        }
    }
    done
}

/// When a deliveries-queue message of a batch may be attempted.
#[derive(Debug, Clone, Copy)]
enum Gate {
    /// At once: its subscription is not paced (or the message is not due yet, or unreadable:
    /// [`attempt_message`] deals with those).
    Now,
    /// At this booked slot.
    At(crate::pacing::Slot),
    /// Not in this batch: hidden on the queue this long, until its slot may be booked.
    Wait(Duration),
    /// A nudge of an ordered line that an earlier nudge of the batch covers (everything it was
    /// sent for was queued before it): removed, so one line is never delivered twice at once.
    Covered,
}

/// After how many receives a message that waits for a slot is sent again as a new one rather
/// than hidden once more: a queue's redrive counts receives, and waiting is not failing.
const WAITS_BEFORE_REQUEUE: u32 = 10;

/// The subscription and time of a deliveries-queue message, read without the payload.
#[derive(serde::Deserialize)]
struct TaskPeek {
    subscription_id: String,
    #[serde(default)]
    not_before_ms: Option<i64>,
    #[serde(default)]
    ordered: bool,
}

/// Books slots for the batch's due deliveries to paced subscriptions, once per subscription
/// (its limit, its back-off): when each message may be attempted.
async fn pace_gates(hub: &Hub, msgs: &[ReceivedMessage], batch: &DeliveryBatch) -> Vec<Gate> {
    let now = hub.now_ms();
    let mut gates = vec![Gate::Now; msgs.len()];
    let mut by_subscription: Vec<(String, Vec<usize>)> = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    for (index, msg) in msgs.iter().enumerate() {
        let Ok(peek) = serde_json::from_str::<TaskPeek>(&msg.body) else {
            continue;
        };
        // An ordered line's nudge: its deliveries book their own slots, one at a time.
        if peek.ordered {
            if lines.contains(&peek.subscription_id) {
                gates[index] = Gate::Covered;
            } else {
                lines.push(peek.subscription_id);
            }
            continue;
        }
        if peek.not_before_ms.is_some_and(|at| at > now) {
            continue;
        }
        match by_subscription
            .iter_mut()
            .find(|(id, _)| *id == peek.subscription_id)
        {
            Some((_, indices)) => indices.push(index),
            None => by_subscription.push((peek.subscription_id, vec![index])),
        }
    }
    let bookings =
        futures::future::join_all(by_subscription.into_iter().map(|(id, indices)| async move {
            let booking = match batch.read(hub, &id).await {
                Ok(Some(sub)) => hub.book_slots(&sub, indices.len()).await,
                other => other.map(|_| None),
            };
            (indices, booking)
        }))
        .await;
    for (indices, booking) in bookings {
        match booking {
            Ok(None) => {}
            Ok(Some(booking)) => {
                let booked = booking.slots_ms.len();
                hub.metrics
                    .slot_waits(indices.len().saturating_sub(booked) as u64);
                for (n, index) in indices.into_iter().enumerate() {
                    gates[index] = match booking.slot(n) {
                        Some(slot) => Gate::At(slot),
                        None => Gate::Wait(booking.wait_of_unbooked(n - booked, now)),
                    };
                }
            }
            Err(err) => {
                // Its pace could not be read or booked: its deliveries wait a moment rather
                // than go unpaced.
                tracing::warn!(error = %err, "could not book delivery slots; the messages come back");
                for index in indices {
                    gates[index] = Gate::Wait(BUSY_BACKOFF);
                }
            }
        }
    }
    gates
}

/// Hides the batch's messages that wait for their slots until then, together (SQS: ten to a
/// call); after many such waits a message is sent again as a new one instead, and this one
/// removed. No attempt is made or counted. `true` for each message that may be removed.
async fn wait_for_slots(
    hub: &Hub,
    role: QueueRole,
    msgs: &[ReceivedMessage],
    gates: &[Gate],
) -> Vec<bool> {
    let queue = queue_of(hub, role);
    let mut removable = vec![false; msgs.len()];
    let (mut holds, mut again, mut sent_again) = (Vec::new(), Vec::new(), Vec::new());
    for (index, (msg, gate)) in msgs.iter().zip(gates).enumerate() {
        let Gate::Wait(wait) = *gate else { continue };
        if msg.receive_count >= WAITS_BEFORE_REQUEUE {
            again.push(crate::ports::OutgoingMessage {
                body: msg.body.clone(),
                delay: wait.min(crate::ports::MAX_SEND_DELAY),
                group: None,
            });
            sent_again.push(index);
        } else {
            holds.push((msg.receipt.clone(), wait.min(MAX_HIDE)));
        }
    }
    if !again.is_empty() && queue.send(again).await.is_ok() {
        for index in sent_again {
            removable[index] = true;
        }
    }
    if !holds.is_empty()
        && let Err(err) = queue.postpone_each(&holds).await
    {
        tracing::warn!(error = %err, "could not hide messages waiting for their slots; they come back after the visibility timeout");
    }
    removable
}

/// Where a deliveries-queue message stands after its part of the batch.
enum Step {
    /// Nothing more to do: `true` when it may be removed.
    Finished(bool),
    /// An attempt was made (or decided against): settle by `verdict` once the batch's log is
    /// written; `now` is when the attempt began. The task is read again from the message then
    /// (only a retry or a dead letter needs it), so a batch of large events is not held twice.
    Attempted { verdict: Verdict, now: i64 },
}

/// Makes one delivery attempt for a deliveries-queue message (its record gathered in `batch`).
///
/// The message carries its own attempt count and earliest time ([`DeliveryTask`]): a retry is
/// a new message with the count raised and the schedule's delay (sent delayed by at most SQS's
/// 15 min, then hidden again on arrival until its time), and an exhausted or unreadable one goes
/// to the dead-letter queue explicitly. So receives that made no attempt (a store error, a
/// throttled or crashed consumer) never use up an attempt, and no delay ever needs a
/// visibility beyond SQS's 12 h limit.
async fn attempt_message(
    hub: &Hub,
    role: QueueRole,
    msg: &ReceivedMessage,
    batch: &DeliveryBatch,
    slot: Option<crate::pacing::Slot>,
) -> Step {
    let queue = queue_of(hub, role);
    let task: DeliveryTask = match serde_json::from_str(&msg.body) {
        Ok(task) => task,
        Err(err) => {
            tracing::error!(message_id = %msg.id, error = %err, "unreadable delivery message: to the dead-letter queue");
            return Step::Finished(queue.dead_letter(msg.body.clone()).await.is_ok());
        }
    };
    let now = hub.now_ms();
    // Never attempted before its time (a receiver's `Retry-After` is a floor).
    if let Some(not_before) = task.not_before_ms
        && not_before > now
    {
        let wait = Duration::from_millis((not_before - now) as u64).min(MAX_HIDE);
        if let Err(err) = queue.postpone(&msg.receipt, wait).await {
            tracing::warn!(subscription_id = %task.subscription_id, error = %err, "could not hide an early message; it comes back after the visibility timeout");
        }
        return Step::Finished(false);
    }
    if matches!(task.payload, TaskPayload::Resume) && task.ordered {
        return match hub.drain_ordered(&task.subscription_id).await {
            Ok(Drained::Empty) => Step::Finished(true),
            Ok(Drained::ComeBackIn(wait)) => {
                if let Err(err) = queue.postpone(&msg.receipt, wait.min(MAX_HIDE)).await {
                    tracing::warn!(subscription_id = %task.subscription_id, error = %err, "could not hide an ordered line's nudge; it comes back after the visibility timeout");
                }
                Step::Finished(false)
            }
            Err(err) => {
                tracing::warn!(subscription_id = %task.subscription_id, error = %err, "could not deliver the ordered line; the nudge comes back");
                come_back_soon(hub, role, msg, &err).await;
                Step::Finished(false)
            }
        };
    }
    if matches!(task.payload, TaskPayload::Resume) {
        return Step::Finished(match hub.release_parked(&task.subscription_id).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(subscription_id = %task.subscription_id, error = %err, "could not release parked deliveries; the message will come back");
                come_back_soon(hub, role, msg, &err).await;
                false
            }
        });
    }
    match hub.deliver_at(&task, batch, slot).await {
        Ok(verdict) => Step::Attempted { verdict, now },
        Err(err) => {
            tracing::warn!(subscription_id = %task.subscription_id, error = %err, "delivery failed before the attempt; the message will come back (no attempt counted)");
            come_back_soon(hub, role, msg, &err).await;
            Step::Finished(false)
        }
    }
}

/// Settles a message after its batch's log was written (`logged`); `true` when it may be
/// removed.
async fn settle_message(
    hub: &Hub,
    role: QueueRole,
    msg: &ReceivedMessage,
    step: Step,
    logged: bool,
) -> bool {
    let (verdict, now) = match step {
        Step::Finished(done) => return done,
        Step::Attempted { .. } if !logged => return false,
        Step::Attempted { verdict, now } => (verdict, now),
    };
    if matches!(verdict, Verdict::Done | Verdict::Parked) {
        return true;
    }
    let task: DeliveryTask = match serde_json::from_str(&msg.body) {
        Ok(task) => task,
        Err(_) => return false, // read once already: cannot happen
    };
    let subscription_id = task.subscription_id.clone();
    match hub.settle(task, &verdict, now).await {
        Ok(()) => true,
        Err(err) => {
            // The message comes back after the visibility timeout and the attempt is made again
            // under the same number: a duplicate at worst, never a loss.
            tracing::warn!(subscription_id = %subscription_id, error = %err, "could not queue the retry or dead letter");
            come_back_soon(hub, role, msg, &err).await;
            false
        }
    }
}
