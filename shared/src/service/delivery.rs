//! The sender's per-message logic: read the subscription again, build and sign the body, make
//! one attempt, log it, and decide what happens to the message (done, retry later, dead letter).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::api::resources::SubscriptionOut;
use crate::clock::{rfc3339, seconds_ts};
use crate::context::{DeliveryLog, Hub};
use crate::error::Result;
use crate::metrics::AttemptOutcome;
use crate::model::{
    AttemptError, AttemptRecord, DeliveryTask, Event, KeptDelivery, KeptState, ReceiverAuth,
    Subscription, SubscriptionStatus, TaskPayload, queue_json,
};
use crate::pacing::PUSHED_BACK_RETRY;
use crate::ports::{MAX_SEND_DELAY, OutgoingMessage};
use crate::retry::RetrySchedule;
use crate::service::operational::{OperationalTopic, subscription_data};
use crate::service::secrets::OpenCredentials;
use crate::signing::{scheme_header, signature_header};
use crate::trace::spans;
use tracing::Instrument;

/// How recent a subscription's last delivery must be for a push-back (`429`, `503`) to count
/// as throttling, which does not use up the retry schedule.
const THROTTLING_NEEDS_A_DELIVERY_WITHIN_MS: i64 = 60_000;

/// The `user-agent` of every delivery.
pub const USER_AGENT: &str = concat!("webhook-hub/", env!("CARGO_PKG_VERSION"));

/// What to do with a delivery message after an attempt (or a decision not to attempt).
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Remove the message: delivered, or nothing left to do (subscription gone, lapsed, no
    /// longer listening).
    Done,
    /// Remove the message: the subscription is paused or disabled and keeps the delivery
    /// parked until it is resumed.
    Parked,
    /// Try again after this delay (the message stays on the queue, hidden until then).
    RetryIn(Duration),
    /// The receiver pushed back (`429`, `503`): try again after this delay, at the
    /// subscription's pace, without using up a step of its retry schedule.
    Throttled(Duration),
    /// The schedule is exhausted: the message goes to the dead-letter queue.
    Exhausted,
}

/// What one batch of deliveries shares: the subscriptions it has read (eventually consistent),
/// each once, and the attempts it made, written together after it (one write per subscription
/// where the store can).
#[derive(Default)]
pub struct DeliveryBatch {
    reads: std::sync::Mutex<
        std::collections::HashMap<String, Arc<tokio::sync::OnceCell<Option<Subscription>>>>,
    >,
    log: std::sync::Mutex<Vec<(AttemptRecord, i64)>>,
    /// The subscriptions whose receivers pushed back in this batch, with the longest
    /// `Retry-After` they asked for: their pace is cut once for the batch.
    pushed_back:
        std::sync::Mutex<std::collections::HashMap<String, (Subscription, Option<Duration>)>>,
}

impl DeliveryBatch {
    /// The subscription as the batch's one read of it found it.
    pub async fn read(&self, hub: &Hub, id: &str) -> Result<Option<Subscription>> {
        let cell = self
            .reads
            .lock()
            .expect("batch reads lock")
            .entry(id.to_string())
            .or_default()
            .clone();
        cell.get_or_try_init(|| hub.store.get_eventually(id))
            .await
            .cloned()
    }

    /// Notes that `sub`'s receiver pushed back, asking for `retry_after`.
    fn push_back(&self, sub: &Subscription, retry_after: Option<Duration>) {
        let mut pushed = self.pushed_back.lock().expect("batch push-back lock");
        let entry = pushed
            .entry(sub.id.clone())
            .or_insert_with(|| (sub.clone(), None));
        entry.1 = entry.1.max(retry_after);
    }

    /// The push-backs noted, taken out of the batch.
    pub fn take_push_backs(&self) -> Vec<(Subscription, Option<Duration>)> {
        let mut pushed = self.pushed_back.lock().expect("batch push-back lock");
        pushed.drain().map(|(_, v)| v).collect()
    }

    /// Gathers an attempt for the delivery log, kept until `expires_at_ms`.
    fn log(&self, record: &AttemptRecord, expires_at_ms: i64) {
        self.log
            .lock()
            .expect("batch log lock")
            .push((record.clone(), expires_at_ms));
    }
}

/// What the sender does with a task for a subscription as it stands.
enum Wanted {
    /// Send this body (serialized) under this `webhook-id`.
    Send(String, Bytes),
    /// Keep it parked: the subscription is paused or disabled.
    Park,
    /// Nothing: the subscription no longer listens for it.
    Drop,
}

/// The reference tokens of a JSON pointer (RFC 6901), unescaped.
fn pointer_tokens(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Orders two token paths so that removing in this order never shifts a later one: array
/// indices compare as numbers (`10` after `2`), and [`remove_pointers`] walks the order
/// backwards, so a higher index or a deeper path goes first.
fn path_order(a: &[String], b: &[String]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        let order = match (x.parse::<usize>(), y.parse::<usize>()) {
            (Ok(i), Ok(j)) => i.cmp(&j),
            _ => x.cmp(y),
        };
        if order.is_ne() {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// Removes the value at a token path, if present.
fn remove_path(root: &mut Value, tokens: &[String]) {
    let Some((last, parents)) = tokens.split_last() else {
        return;
    };
    let mut node = root;
    for token in parents {
        node = match node {
            Value::Object(map) => match map.get_mut(token) {
                Some(next) => next,
                None => return,
            },
            Value::Array(items) => match token.parse::<usize>().ok().and_then(|i| items.get_mut(i))
            {
                Some(next) => next,
                None => return,
            },
            _ => return,
        };
    }
    match node {
        Value::Object(map) => {
            map.remove(last);
        }
        Value::Array(items) => {
            if let Some(i) = last.parse::<usize>().ok().filter(|i| *i < items.len()) {
                items.remove(i);
            }
        }
        _ => {}
    }
}

/// Removes every value the JSON pointers designate in the document as it was given: each pointer
/// names an element of the original, so removals go from the highest array index and deepest
/// path down and never shift one another.
pub fn remove_pointers<'a>(root: &mut Value, pointers: impl IntoIterator<Item = &'a str>) {
    let mut paths: Vec<Vec<String>> = pointers.into_iter().map(pointer_tokens).collect();
    paths.sort_by(|a, b| path_order(a, b));
    paths.dedup();
    for path in paths.iter().rev() {
        remove_path(root, path);
    }
}

/// The JSON body delivered for an event: the envelope, with every sensitive field at or below the
/// subscription's secrecy level removed.
pub fn event_body(event: &Event, sub: &Subscription) -> Value {
    let mut body = json!({
        "id": event.id,
        "type": event.topic,
        "timestamp": rfc3339(event.timestamp_ms),
        "account": event.account,
        "subscription_id": sub.id,
        "data": event.data,
        "user_data": sub.user_data,
    });
    if let Value::Object(fields) = &mut body {
        if let Some(owner) = &event.owner {
            fields.insert("owner".into(), json!(owner));
        }
        if event.broadcast {
            fields.insert("broadcast".into(), json!(true));
        }
    }
    remove_pointers(
        &mut body,
        event
            .sensitive
            .iter()
            .filter(|(_, level)| **level <= sub.secrecy_level)
            .map(|(pointer, _)| pointer.as_str()),
    );
    body
}

/// The envelope of [`event_body`], borrowed from the event: serialized straight to bytes when no
/// field is to be removed, instead of copying the event's data into a new document first.
/// Its fields are in the order [`event_body`]'s document writes them.
#[derive(serde::Serialize)]
struct BorrowedEnvelope<'a> {
    account: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    broadcast: bool,
    data: &'a Value,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    subscription_id: &'a str,
    timestamp: String,
    #[serde(rename = "type")]
    topic: &'a crate::topic::Topic,
    user_data: &'a Option<Value>,
}

/// [`event_body`] serialized: the bytes that are signed and sent.
pub fn event_body_bytes(event: &Event, sub: &Subscription) -> Bytes {
    let removes_any = event
        .sensitive
        .iter()
        .any(|(_, level)| *level <= sub.secrecy_level);
    let bytes = if removes_any {
        serde_json::to_vec(&event_body(event, sub))
    } else {
        serde_json::to_vec(&BorrowedEnvelope {
            account: &event.account,
            broadcast: event.broadcast,
            data: &event.data,
            id: &event.id,
            owner: event.owner.as_deref(),
            subscription_id: &sub.id,
            timestamp: rfc3339(event.timestamp_ms),
            topic: &event.topic,
            user_data: &sub.user_data,
        })
    };
    Bytes::from(bytes.expect("JSON values serialize"))
}

impl Hub {
    /// Queues delivery tasks: those of an ordered group to the ordered queue, the others to
    /// the deliveries queue (one call where both are one queue, as on the embedded backends).
    pub async fn send_deliveries(&self, messages: Vec<OutgoingMessage>) -> Result<()> {
        let one_queue = Arc::ptr_eq(&self.ordered, &self.deliveries);
        if one_queue || messages.iter().all(|m| m.group.is_none()) {
            return self.deliveries.send(messages).await;
        }
        let (ordered, unordered): (Vec<_>, Vec<_>) =
            messages.into_iter().partition(|m| m.group.is_some());
        if !unordered.is_empty() {
            self.deliveries.send(unordered).await?;
        }
        if !ordered.is_empty() {
            self.ordered.send(ordered).await?;
        }
        Ok(())
    }

    /// The queue `task` came from and goes back to: the ordered queue for an ordered delivery.
    pub fn queue_of_task(&self, task: &DeliveryTask) -> &Arc<dyn crate::ports::Queue> {
        if task.ordered {
            &self.ordered
        } else {
            &self.deliveries
        }
    }

    /// The confirmation link of a subscription.
    pub fn confirmation_url(&self, sub_id: &str, token: &str) -> String {
        format!(
            "{}/v1/subscriptions/{sub_id}/confirm?token={token}",
            self.settings.public_url
        )
    }

    /// What to do with `task` for `sub` now: send it (`webhook-id`, body), park it, or drop it.
    fn wanted(&self, task: &DeliveryTask, sub: &Subscription, now: i64) -> Wanted {
        let send = |(id, body)| Wanted::Send(id, body);
        match &task.payload {
            TaskPayload::Event { event } => {
                // Fan-out decided this from the topic entries; the subscription read before the
                // attempt decides again (a stale entry, a resend, a recover).
                let listening = sub.topics.iter().any(|p| p.covers(&event.topic))
                    && event.is_for(sub.bound_owner())
                    && sub.accepts_labels(&event.labels);
                match sub.status {
                    _ if !listening => Wanted::Drop,
                    SubscriptionStatus::Active => {
                        send((event.id.clone(), event_body_bytes(event, sub)))
                    }
                    status if status.parks_events() => Wanted::Park,
                    _ => Wanted::Drop,
                }
            }
            TaskPayload::Notice { event } => match sub.status {
                SubscriptionStatus::Active => {
                    send((event.id.clone(), event_body_bytes(event, sub)))
                }
                _ => Wanted::Drop,
            },
            TaskPayload::Resume => Wanted::Drop,
            TaskPayload::Confirmation { message_id, token } => {
                let hash = crate::signing::sha256_hex(token.as_bytes());
                let current = sub.status == SubscriptionStatus::Pending
                    && sub.confirm_token_sha256.as_deref() == Some(hash.as_str());
                if !current {
                    return Wanted::Drop;
                }
                let body = json!({
                    "type": "Confirmation",
                    "message": message_id,
                    "sent_ts": seconds_ts(now),
                    "confirmation_url": self.confirmation_url(&sub.id, token),
                    "subscription": SubscriptionOut::from(sub),
                });
                send((
                    format!("msg_{}", message_id.replace('-', "")),
                    Bytes::from(serde_json::to_vec(&body).expect("JSON values serialize")),
                ))
            }
        }
    }

    /// Makes the next attempt of a delivery task (its attempt number is
    /// `task.attempts_made + 1`) and decides what comes next.
    pub async fn deliver(&self, task: &DeliveryTask) -> Result<Verdict> {
        let batch = DeliveryBatch::default();
        let verdict = self.deliver_in_batch(task, &batch).await?;
        self.write_batch_log(&batch).await?;
        self.note_push_backs(batch.take_push_backs()).await;
        Ok(verdict)
    }

    /// [`Hub::deliver`] for one task of a batch: the batch's deliveries to one subscription
    /// share one cheap read of it, so a batch of a hundred to ten subscriptions reads ten items,
    /// not a hundred; the attempt is gathered in `batch` for [`Hub::write_batch_log`], which
    /// the caller runs before it settles any of the batch's messages.
    pub async fn deliver_in_batch(
        &self,
        task: &DeliveryTask,
        batch: &DeliveryBatch,
    ) -> Result<Verdict> {
        self.deliver_at(task, batch, None).await
    }

    /// [`Hub::deliver_in_batch`], sending at the booked `slot` where the subscription is paced:
    /// everything before the request is done first, so the request leaves at its slot however
    /// long that took, and never sooner than one interval after this process's previous request
    /// to the subscription ([`crate::pacing::SendSpacing`]).
    pub async fn deliver_at(
        &self,
        task: &DeliveryTask,
        batch: &DeliveryBatch,
        slot: Option<crate::pacing::Slot>,
    ) -> Result<Verdict> {
        let attempt = task.attempts_made.saturating_add(1);
        let now = self.now_ms();
        // The cheap read first; any answer but "deliver" is read again strongly before the
        // hub acts on it, so a moment-stale copy can never drop a delivery.
        let mut wanted = match batch.read(self, &task.subscription_id).await? {
            Some(sub) if !sub.is_expired(now) => match self.wanted(task, &sub, now) {
                Wanted::Send(id, body) => Some((sub, id, body)),
                _ => None,
            },
            _ => None,
        };
        if wanted.is_none() {
            let sub = match self.store.get(&task.subscription_id).await? {
                Some(sub) if !sub.is_expired(now) => sub,
                _ => {
                    tracing::info!(subscription_id = %task.subscription_id, attempt, "delivery dropped: subscription gone or lapsed");
                    self.settle_kept(task).await?;
                    return Ok(Verdict::Done);
                }
            };
            match self.wanted(task, &sub, now) {
                Wanted::Send(id, body) => wanted = Some((sub, id, body)),
                Wanted::Park => return self.park(task, &sub, now).await,
                Wanted::Drop => {
                    tracing::info!(subscription_id = %sub.id, attempt, status = ?sub.status, "delivery dropped: subscription no longer wants it");
                    self.settle_kept(task).await?;
                    return Ok(Verdict::Done);
                }
            }
        }
        let (sub, message_id, body) = wanted.expect("read above");
        let credentials = self.open_credentials(&sub, now).await?;
        let now = match slot {
            Some(slot) => loop {
                let now = self.now_ms();
                match self.spacing.try_leave(&sub.id, slot, now as f64) {
                    Ok(()) => break now,
                    Err(at) => {
                        let wait = Duration::from_micros(((at - now as f64) * 1000.0) as u64);
                        tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                    }
                }
            },
            None => now,
        };
        let headers = delivery_headers(&sub, &credentials, &message_id, now, &body);
        let span = spans::attempt(task, attempt, &message_id, &sub.callback_url);
        let outcome = match sub.timeout_secs {
            Some(secs) => {
                let budget = Duration::from_secs(u64::from(secs));
                (self.transport)
                    .post_within(&sub.callback_url, headers, body, budget)
                    .instrument(span.clone())
                    .await
            }
            None => {
                (self.transport)
                    .post(&sub.callback_url, headers, body)
                    .instrument(span.clone())
                    .await
            }
        };
        spans::attempted(&span, &outcome);
        drop(span);
        let delivered = outcome.status.is_some_and(|s| (200..300).contains(&s));
        let gone = outcome.status == Some(410);
        let pushed_back = matches!(outcome.status, Some(429 | 503));
        if pushed_back {
            self.metrics.pushed_back();
            batch.push_back(&sub, outcome.retry_after);
        }
        // A push-back from a receiver that is taking deliveries (an event went through within
        // the last minute) is throttling: it does not use up the schedule. One from a receiver that
        // takes nothing is a failure like any other, so a receiver down behind a `503` still
        // ends in the dead-letter queue.
        // (A confirmation is not an event delivery: the odometer counts events only.)
        let pushed_back = pushed_back
            && sub.odometer > 0
            && sub
                .last_delivered_ms
                .is_some_and(|at| now - at < THROTTLING_NEEDS_A_DELIVERY_WITHIN_MS);
        let counts = !matches!(task.payload, TaskPayload::Confirmation { .. });
        // A failure's bookkeeping comes first: whether it disabled the subscription decides
        // whether a retry follows, and the attempt is recorded with that decision.
        let disabled = if counts && !delivered && !gone {
            let failing_since = self.store.record_failure(&sub.id, now).await?;
            self.disable_if_failing_too_long(&sub, failing_since, now)
                .await
                || {
                    self.warn_if_failing(&sub, failing_since, now).await;
                    false
                }
        } else {
            false
        };
        // A push-back is tried again at the subscription's pace and does not use up a step of
        // the schedule: throttling alone never exhausts a delivery the lease has time for.
        let step = attempt.saturating_sub(task.throttled).max(1);
        let retry = if delivered || gone || disabled {
            None
        } else if pushed_back {
            Some(
                outcome
                    .retry_after
                    .map_or(PUSHED_BACK_RETRY, |asked| asked.max(PUSHED_BACK_RETRY)),
            )
        } else {
            match &sub.retry_schedule_secs {
                Some(delays) => {
                    RetrySchedule::of_seconds(delays).next_delay(step, outcome.retry_after)
                }
                None => self.settings.retry.next_delay(step, outcome.retry_after),
            }
        };
        let finished = now + outcome.latency.as_millis() as i64;
        let next_attempt_at_ms = retry
            .map(|delay| finished + delay.as_millis() as i64)
            .filter(|at| *at < sub.lapses_at_ms());
        let record = AttemptRecord {
            subscription_id: sub.id.clone(),
            message_id: message_id.clone(),
            attempt,
            started_at_ms: now,
            latency_ms: outcome.latency.as_millis() as u64,
            status_code: outcome.status,
            error: outcome
                .error
                .or_else(|| (!delivered).then_some(AttemptError::HttpStatus)),
            delivered,
            next_attempt_at_ms,
            counted: counts,
        };
        self.metrics.attempt(
            if delivered {
                AttemptOutcome::delivered
            } else if gone {
                AttemptOutcome::gone
            } else {
                AttemptOutcome::failed
            },
            outcome.latency,
        );
        // A failed attempt is a warning: on Lambda, where the template's level is WARN to keep
        // CloudWatch Logs off the per-delivery bill, failures are still in the logs (and every
        // attempt is in the delivery log).
        macro_rules! attempt_line {
            ($level:ident) => {
                tracing::$level!(
                    subscription_id = %sub.id, account = %sub.account, event_id = %message_id, attempt,
                    status_code = outcome.status, error = record.error.map(AttemptError::as_str), latency_ms = record.latency_ms,
                    delivered, "delivery attempt"
                )
            };
        }
        if delivered {
            attempt_line!(info);
        } else {
            attempt_line!(warn);
        }
        // A lean log keeps failures only: a success is counted by the odometer below.
        if !(delivered && self.settings.delivery_log == DeliveryLog::Lean) {
            // Kept for the retention, and never past the lease (the log goes with its
            // subscription).
            batch.log(&record, sub.expires_at_ms.min(self.retained_until(now)));
        }
        if delivered {
            self.count_delivered(&record, sub.failing_since_ms.is_some())
                .await?;
            self.settle_kept(task).await?;
            return Ok(Verdict::Done);
        }
        if gone {
            // Only the subscription as attempted: one that moved to a new callback meanwhile
            // is not the old receiver's to remove.
            if self.store.remove_if_unchanged(&sub).await? {
                tracing::info!(subscription_id = %sub.id, account = %sub.account, "receiver answered 410 Gone: subscription deleted");
            } else {
                tracing::info!(subscription_id = %sub.id, "410 Gone from a callback the subscription changed during the attempt: left alone");
            }
            return Ok(Verdict::Done);
        }
        if disabled {
            // The delivery that disabled it waits with the others for the subscription to be
            // resumed.
            if task.payload.is_kept_when_failing() {
                return self.park(task, &sub, now).await;
            }
            return Ok(Verdict::Done);
        }
        match (retry, next_attempt_at_ms) {
            (None, _) => {
                self.metrics.exhausted();
                tracing::warn!(subscription_id = %sub.id, event_id = %message_id, attempt, "delivery exhausted: kept for recover, and to the dead-letter queue");
                if task.payload.is_kept_when_failing() {
                    self.keep(task, &sub.id, KeptState::Exhausted, now).await?;
                    self.report_exhausted(task, &sub, &record).await;
                }
                Ok(Verdict::Exhausted)
            }
            (Some(_), None) => {
                tracing::info!(subscription_id = %sub.id, event_id = %message_id, attempt, "delivery dropped: the lease ends before the next attempt");
                self.settle_kept(task).await?;
                Ok(Verdict::Done)
            }
            (Some(delay), Some(_)) => {
                // Kept from the first failure of a series on (a first attempt, or a task from
                // before tasks carried the mark), so `resend` can reach it while it waits.
                // (An ordered one is kept already, queued in its line, and stays there.)
                if task.payload.is_kept_when_failing()
                    && !task.ordered
                    && (task.attempts_made == 0 || !task.kept)
                {
                    self.keep(task, &sub.id, KeptState::Retrying, now).await?;
                }
                Ok(if pushed_back {
                    Verdict::Throttled(delay)
                } else {
                    Verdict::RetryIn(delay)
                })
            }
        }
    }

    /// Writes the attempts `batch` gathered to the delivery log, each subscription's in one
    /// store call. The batch's messages are settled only after this succeeds: when it fails,
    /// they come back and the attempts are made again (a duplicate at worst, never an attempt
    /// that counted without its record).
    pub async fn write_batch_log(&self, batch: &DeliveryBatch) -> Result<()> {
        let gathered = std::mem::take(&mut *batch.log.lock().expect("batch log lock"));
        let mut by_subscription: Vec<(Vec<AttemptRecord>, i64)> = Vec::new();
        let mut index: std::collections::HashMap<String, usize> = Default::default();
        for (record, expires_at_ms) in gathered {
            let slot = *index
                .entry(record.subscription_id.clone())
                .or_insert_with(|| {
                    by_subscription.push((Vec::new(), expires_at_ms));
                    by_subscription.len() - 1
                });
            let (records, expires) = &mut by_subscription[slot];
            *expires = (*expires).max(expires_at_ms);
            records.push(record);
        }
        let writes = by_subscription
            .iter()
            .map(|(records, expires)| self.store.record_attempts(records, *expires));
        futures::future::try_join_all(writes).await.map(drop)
    }

    /// Parks `task`'s delivery with `sub` (paused or disabled) until it is resumed.
    async fn park(&self, task: &DeliveryTask, sub: &Subscription, now: i64) -> Result<Verdict> {
        self.keep(task, &sub.id, KeptState::Parked, now).await?;
        tracing::info!(subscription_id = %sub.id, event_id = task.payload.event_id().unwrap_or_default(), "delivery parked");
        Ok(Verdict::Parked)
    }

    /// Keeps `task`'s delivery with subscription `sub_id` in `state` from `now`.
    async fn keep(
        &self,
        task: &DeliveryTask,
        sub_id: &str,
        state: KeptState,
        now: i64,
    ) -> Result<()> {
        self.store
            .keep_delivery(&KeptDelivery {
                subscription_id: sub_id.to_string(),
                payload: task.payload.clone(),
                state,
                since_ms: now,
                until_ms: Some(self.retained_until(now)),
                progress: None,
            })
            .await
    }

    /// A kept delivery that needs keeping no more (delivered, or dropped) is forgotten.
    async fn settle_kept(&self, task: &DeliveryTask) -> Result<()> {
        match task.payload.event_id() {
            Some(event_id) if task.kept => {
                self.store
                    .forget_delivery(&task.subscription_id, event_id)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// `hub.delivery.exhausted` to the account, except about an operational event itself (a
    /// failing operational subscriber must not feed itself).
    async fn report_exhausted(
        &self,
        task: &DeliveryTask,
        sub: &Subscription,
        last: &AttemptRecord,
    ) {
        let (TaskPayload::Event { event } | TaskPayload::Notice { event }) = &task.payload else {
            return;
        };
        if event.topic.is_operational() {
            return;
        }
        let data = json!({
            "subscription_id": sub.id,
            "event_id": event.id,
            "topic": event.topic,
            "attempts": last.attempt,
            "last_status_code": last.status_code,
            "last_error": last.error,
            "callback_url": sub.callback_url,
        });
        self.emit(sub, OperationalTopic::DeliveryExhausted, data)
            .await;
    }

    /// After `deliver` answered `verdict` for `task`: queues the retry, or dead-letters an
    /// exhausted delivery. `now` is when the attempt began (the retry's earliest time counts
    /// from it).
    pub async fn settle(&self, task: DeliveryTask, verdict: &Verdict, now: i64) -> Result<()> {
        let attempted = task.after(verdict, now);
        match verdict {
            Verdict::Done | Verdict::Parked => Ok(()),
            Verdict::RetryIn(delay) | Verdict::Throttled(delay) => {
                let retry = attempted;
                self.deliveries
                    .send(vec![OutgoingMessage {
                        body: queue_json(&retry),
                        delay: (*delay).min(MAX_SEND_DELAY),
                        group: None,
                    }])
                    .await
            }
            Verdict::Exhausted => {
                self.queue_of_task(&attempted)
                    .dead_letter(queue_json(&attempted))
                    .await
            }
        }
    }

    /// Tells the account once per failure streak that an active subscription has been failing
    /// for [`Settings::warn_after`](crate::Settings), before it is disabled: the warning time is
    /// saved with the subscription (conditional on its version, like the disabling), so
    /// concurrent attempts warn once.
    async fn warn_if_failing(&self, sub: &Subscription, failing_since: Option<i64>, now: i64) {
        let Some(since) = failing_since else {
            return;
        };
        let due = sub.status == SubscriptionStatus::Active
            && now - since >= self.settings.warn_after.as_millis() as i64
            && sub.failing_warned_ms.is_none_or(|warned| warned < since);
        if !due {
            return;
        }
        let mut warned = sub.clone();
        warned.failing_warned_ms = Some(now);
        warned.failing_since_ms = Some(since);
        warned.version += 1;
        if self.store.save(&warned, Some(sub)).await.is_err() {
            return; // changed meanwhile: a later failure decides again
        }
        let details = json!({
            "callback_url": sub.callback_url,
            "failing_since": rfc3339(since),
            "disable_at": rfc3339(since + self.settings.disable_after.as_millis() as i64),
        });
        self.emit(
            sub,
            OperationalTopic::SubscriptionFailing,
            subscription_data(&sub.id, details),
        )
        .await;
    }

    /// Turns an active subscription `disabled` once its deliveries have failed without a success
    /// for longer than the configured time: only the subscription as attempted (a save
    /// conditional on its version), so a change made during the attempt (a new callback, a
    /// pause) is never overwritten by a verdict about the old one. Says whether it disabled it.
    async fn disable_if_failing_too_long(
        &self,
        sub: &Subscription,
        failing_since: Option<i64>,
        now: i64,
    ) -> bool {
        let Some(since) = failing_since else {
            return false;
        };
        if sub.status != SubscriptionStatus::Active
            || now - since < self.settings.disable_after.as_millis() as i64
        {
            return false;
        }
        let mut disabled = sub.clone();
        disabled.status = SubscriptionStatus::Disabled;
        disabled.failing_since_ms = Some(since);
        disabled.version += 1;
        match self.store.save(&disabled, Some(sub)).await {
            Ok(()) => {
                tracing::warn!(subscription_id = %sub.id, account = %sub.account, "subscription disabled after continuous failure");
                let details = json!({
                    "callback_url": sub.callback_url,
                    "failing_since": rfc3339(since),
                });
                self.emit(
                    sub,
                    OperationalTopic::SubscriptionDisabled,
                    subscription_data(&sub.id, details),
                )
                .await;
                true
            }
            Err(err) => {
                tracing::info!(subscription_id = %sub.id, error = %err, "not disabled: the subscription changed during the attempt");
                false
            }
        }
    }
}

impl DeliveryTask {
    /// The task after an attempt that began at `now` and ended in `verdict`: one more attempt
    /// made (one more pushed back on, for a push-back), and when a retry is due, its time.
    pub fn after(&self, verdict: &Verdict, now: i64) -> DeliveryTask {
        let mut next = DeliveryTask {
            attempts_made: self.attempts_made.saturating_add(1),
            ..self.clone()
        };
        if let Verdict::RetryIn(delay) | Verdict::Throttled(delay) = verdict {
            next.not_before_ms = Some(now + delay.as_millis() as i64);
            next.kept = next.kept || next.payload.is_kept_when_failing();
            if matches!(verdict, Verdict::Throttled(_)) {
                next.throttled = next.throttled.saturating_add(1);
            }
        }
        next
    }
}

/// The signed request headers of one attempt.
fn delivery_headers(
    sub: &Subscription,
    credentials: &OpenCredentials,
    message_id: &str,
    now: i64,
    body: &[u8],
) -> Vec<(String, String)> {
    let timestamp = now / 1000;
    let mut headers = vec![
        ("webhook-id".to_string(), message_id.to_string()),
        ("webhook-timestamp".to_string(), timestamp.to_string()),
        (
            "webhook-signature".to_string(),
            signature_header(
                credentials.signing.iter().map(String::as_str),
                message_id,
                timestamp,
                body,
            ),
        ),
        ("content-type".to_string(), "application/json".to_string()),
        ("user-agent".to_string(), USER_AGENT.to_string()),
    ];
    if let Some(legacy) = &credentials.legacy
        && let Some((name, value)) = scheme_header(sub.signature_scheme, legacy, body)
    {
        headers.push((name.to_string(), value));
    }
    match &credentials.receiver_auth {
        Some(ReceiverAuth::Basic { user, password }) => {
            use base64::Engine;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            headers.push(("authorization".to_string(), format!("Basic {token}")));
        }
        Some(ReceiverAuth::Bearer { token }) => {
            headers.push(("authorization".to_string(), format!("Bearer {token}")))
        }
        Some(ReceiverAuth::Header { name, value }) => {
            headers.push((name.to_ascii_lowercase(), value.clone()))
        }
        None => {}
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_pointed_fields() {
        let mut v = json!({"data": {"pin": 1234, "name": "Ann", "list": [1, 2, 3], "a/b": 1}});
        remove_pointers(
            &mut v,
            [
                "/data/pin",
                "/data/list/1",
                "/data/a~1b",
                "/data/missing/deeper",
            ],
        );
        assert_eq!(v, json!({"data": {"name": "Ann", "list": [1, 3]}}));
    }

    #[test]
    fn array_pointers_name_elements_of_the_original() {
        let mut v = json!({"pins": ["a", "b", "c"]});
        remove_pointers(&mut v, ["/pins/0", "/pins/1"]);
        assert_eq!(v, json!({"pins": ["c"]}));
        let list: Vec<usize> = (0..12).collect();
        let mut v = json!({"l": list});
        remove_pointers(&mut v, ["/l/10", "/l/2"]);
        assert_eq!(v, json!({"l": [0, 1, 3, 4, 5, 6, 7, 8, 9, 11]}));
        let mut v = json!({"a": [{"x": 1, "y": 2}, {"x": 3}]});
        remove_pointers(&mut v, ["/a/0/x", "/a/1", "/a/0/y"]);
        assert_eq!(v, json!({"a": [{}]}));
    }
}

#[cfg(test)]
mod decision_tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::auth::Caller;
    use crate::clock::SystemClock;
    use crate::ports::{Transport, TransportOutcome};
    use crate::retry::RetrySchedule;
    use crate::runtime::memory_hub;
    use crate::service::subscriptions::SubscribeRequest;
    use crate::{Hub, Settings};

    /// Answers every attempt with one status and counts the calls.
    struct FixedTransport {
        status: u16,
        calls: Mutex<usize>,
    }

    #[async_trait]
    impl Transport for FixedTransport {
        async fn post(
            &self,
            _url: &str,
            _headers: Vec<(String, String)>,
            _body: Bytes,
        ) -> TransportOutcome {
            *self.calls.lock().unwrap() += 1;
            TransportOutcome {
                status: Some(self.status),
                retry_after: None,
                error: None,
                latency: Duration::ZERO,
            }
        }
    }

    async fn hub_with(
        status: u16,
        schedule: &str,
        lease_secs: i64,
    ) -> (Hub, Arc<FixedTransport>, Arc<SystemClock>, DeliveryTask) {
        let settings = Settings {
            allow_private_targets: true,
            retry: RetrySchedule::parse(schedule).unwrap().with_jitter(0.0),
            ..Settings::default()
        };
        let (mut hub, _) = memory_hub(settings);
        let transport = Arc::new(FixedTransport {
            status,
            calls: Mutex::new(0),
        });
        let clock = Arc::new(SystemClock::default());
        hub.transport = transport.clone();
        hub.clock = clock.clone();
        let caller = Caller::of_account("acme", "o", None);
        let req = SubscribeRequest {
            callback_url: "http://127.0.0.1:9/hook".into(),
            topic: Some("door.opened".into()),
            expires: Some(lease_secs),
            ..SubscribeRequest::default()
        };
        let sub = hub.subscribe(&caller, req).await.unwrap().subscription;
        let mut active = sub.clone();
        active.status = SubscriptionStatus::Active;
        active.version += 1;
        hub.store.save(&active, Some(&sub)).await.unwrap();
        let event = Event::new(
            "evt_1".into(),
            "acme",
            crate::topic::Topic::parse("door.opened").unwrap(),
            hub.now_ms(),
            json!({}),
        );
        let task = DeliveryTask::new(sub.id.clone(), TaskPayload::Event { event });
        (hub, transport, clock, task)
    }

    /// The body sent is the envelope of `event_body` byte for byte, whether it is serialized
    /// borrowed (nothing to remove) or through the document (a sensitive field removed).
    #[tokio::test]
    async fn the_serialized_body_is_the_envelope() {
        let (hub, _, _, task) = hub_with(200, "5s", 3600).await;
        let TaskPayload::Event { event } = &task.payload else {
            unreachable!("an event task");
        };
        let mut sub = hub.store.get(&task.subscription_id).await.unwrap().unwrap();
        sub.user_data = Some(json!({"tenant": "t-1", "quote": "\"x\""}));
        sub.secrecy_level = 1;
        let mut event = event.clone();
        event.data = json!({"pin": 1234, "name": "Ann \u{e9}", "nested": {"list": [1, 2]}});
        let as_document = |event: &Event| serde_json::to_vec(&event_body(event, &sub)).unwrap();
        assert_eq!(event_body_bytes(&event, &sub).to_vec(), as_document(&event));
        // A field above the subscription's level stays: still the borrowed path.
        event.sensitive.insert("/data/pin".into(), 2);
        assert_eq!(event_body_bytes(&event, &sub).to_vec(), as_document(&event));
        // At its level it is removed.
        event.sensitive.insert("/data/pin".into(), 1);
        let removed = event_body_bytes(&event, &sub);
        assert_eq!(removed.to_vec(), as_document(&event));
        let sent: Value = serde_json::from_slice(&removed).unwrap();
        assert!(sent["data"].get("pin").is_none());
        assert_eq!(sent["user_data"]["tenant"], "t-1");
        assert!(sent.get("owner").is_none() && sent.get("broadcast").is_none());
        // The owner (or the broadcast mark) travels in the envelope, on both paths.
        for (owner, broadcast) in [(Some("customer-42"), false), (None, true)] {
            event.owner = owner.map(str::to_string);
            event.broadcast = broadcast;
            for level in [1, 2] {
                event.sensitive.insert("/data/pin".into(), level);
                let body = event_body_bytes(&event, &sub);
                assert_eq!(body.to_vec(), as_document(&event));
                let sent: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(sent["owner"].as_str(), owner);
                assert_eq!(sent["broadcast"].as_bool(), broadcast.then_some(true));
            }
        }
    }

    /// The task as its `n`-th attempt.
    fn attempt(task: &DeliveryTask, n: u32) -> DeliveryTask {
        DeliveryTask {
            attempts_made: n - 1,
            ..task.clone()
        }
    }

    #[tokio::test]
    async fn failures_follow_the_schedule_then_exhaust() {
        let (hub, transport, _, task) = hub_with(500, "5s,5m", 604_800).await;
        assert_eq!(
            hub.deliver(&attempt(&task, 1)).await.unwrap(),
            Verdict::RetryIn(Duration::from_secs(5))
        );
        assert_eq!(
            hub.deliver(&attempt(&task, 2)).await.unwrap(),
            Verdict::RetryIn(Duration::from_secs(300))
        );
        assert_eq!(
            hub.deliver(&attempt(&task, 3)).await.unwrap(),
            Verdict::Exhausted
        );
        assert_eq!(*transport.calls.lock().unwrap(), 3);
    }

    #[tokio::test]
    async fn never_retries_past_the_lease() {
        // A 60 s lease and a 5 min retry: the retry would land after the lease, so it is dropped.
        let (hub, _, _, task) = hub_with(500, "5m", 60).await;
        assert_eq!(
            hub.deliver(&attempt(&task, 1)).await.unwrap(),
            Verdict::Done
        );
    }

    #[tokio::test]
    async fn lapsed_paused_or_deleted_subscriptions_are_not_called() {
        let (hub, transport, clock, task) = hub_with(200, "5s", 60).await;
        clock.advance(61_000);
        assert_eq!(
            hub.deliver(&attempt(&task, 1)).await.unwrap(),
            Verdict::Done
        );
        assert_eq!(
            *transport.calls.lock().unwrap(),
            0,
            "a lapsed subscription is not called"
        );

        let (hub, transport, _, task) = hub_with(200, "5s", 600).await;
        let sub = hub.store.get(&task.subscription_id).await.unwrap().unwrap();
        let mut paused = sub.clone();
        paused.status = SubscriptionStatus::Paused;
        paused.version += 1;
        hub.store.save(&paused, Some(&sub)).await.unwrap();
        assert_eq!(
            hub.deliver(&attempt(&task, 1)).await.unwrap(),
            Verdict::Parked,
            "a paused subscription keeps it for the resume"
        );
        let event_id = task.payload.event_id().unwrap();
        let kept = hub.store.kept_delivery(&sub.id, event_id).await.unwrap();
        assert_eq!(kept.map(|k| k.state), Some(KeptState::Parked));
        hub.store.delete(&paused).await.unwrap();
        assert_eq!(
            hub.deliver(&attempt(&task, 2)).await.unwrap(),
            Verdict::Done
        );
        assert_eq!(
            *transport.calls.lock().unwrap(),
            0,
            "paused and deleted subscriptions are not called"
        );
    }

    #[tokio::test]
    async fn success_counts_and_gone_deletes() {
        let (hub, _, _, task) = hub_with(204, "5s", 600).await;
        assert_eq!(
            hub.deliver(&attempt(&task, 1)).await.unwrap(),
            Verdict::Done
        );
        hub.fold_pending().await.unwrap();
        assert_eq!(
            hub.store
                .get(&task.subscription_id)
                .await
                .unwrap()
                .unwrap()
                .odometer,
            1
        );

        let (hub, _, _, task) = hub_with(410, "5s", 600).await;
        assert_eq!(
            hub.deliver(&attempt(&task, 1)).await.unwrap(),
            Verdict::Done
        );
        assert!(
            hub.store
                .get(&task.subscription_id)
                .await
                .unwrap()
                .is_none()
        );
    }
}
