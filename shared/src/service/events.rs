//! Publishing and fan-out: an accepted event goes on the events queue; fan-out turns it into one
//! delivery task per matching subscription, reading the topic entries of each matching pattern
//! page by page and queueing as it reads, so its memory stays bounded whatever the fan-out.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;
use serde_json::Value;

use crate::auth::{Caller, SCOPE_PUBLISH};
use crate::context::Hub;
use crate::error::{ErrorCode, HubError, Result};
use crate::model::{Event, HISTORY_SUBSCRIPTIONS, TopicEntry, new_event_id, queue_json};
use crate::ports::{ClaimOutcome, KeyClaim, OutgoingMessage};
use crate::topic::{OPERATIONAL_PREFIX, Pattern, Topic};
use crate::trace::spans;
use crate::validate;
use tracing::Instrument;

/// How long a producer's event `id` is remembered to drop repeats.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// How long a claimed key waits for its event to be queued before another publish may take it
/// over (the first one died or timed out between claim and send).
pub const CLAIM_LEASE_MS: i64 = 30_000;
/// Largest serialized `data` of an event.
pub const MAX_EVENT_DATA_BYTES: usize = 240 * 1024;
/// Largest message a queue carries (SQS: 256 KiB); the delivery task of every event must fit.
pub const MAX_QUEUE_MESSAGE_BYTES: usize = 256 * 1024;
/// Topic entries read per store page during fan-out, by default: about 200 KB of entries, well
/// under DynamoDB's 1 MB page (so one query per page), and a fifth of the task bodies one send
/// call may hold ([`FANOUT_SEND_BYTES`]).
pub const FANOUT_PAGE: usize = 1000;
/// Delivery tasks sent per queue call during fan-out, at most (a queue splits a call into its
/// own batches: SQS's ten per request, sent one after another as before). On SQLite a call is
/// one writer operation to wait for: sent ten at a time, a fan-out batch of 16 events waited on
/// two of them, and the fan-out bounded the SQLite mode (docs/sqlite.md).
pub const FANOUT_BATCH: usize = 100;
/// Task bytes one fan-out send call carries at most: a hundred small events go in one call,
/// large ones a MiB at a time, so the task bodies held at once stay bounded.
const FANOUT_SEND_BYTES: usize = 1024 * 1024;
/// Events of one batch publish sent per queue call (the SQS batch size): a chunk succeeds or
/// fails as one, so each event's answer is exact.
const PUBLISH_CHUNK: usize = 10;

/// Whether a fan-out's pending tasks make a full send call.
fn send_is_due(tasks: usize, bytes: usize) -> bool {
    tasks >= FANOUT_BATCH || bytes >= FANOUT_SEND_BYTES
}

/// The body of `POST /v1/events`.
#[derive(Debug, Deserialize)]
pub struct PublishRequest {
    /// The topic (no wildcards).
    pub topic: String,
    /// The payload.
    pub data: Value,
    /// The producer's idempotency key: a repeat within 24 h is not delivered twice.
    pub id: Option<String>,
    /// Labels for subscription filters.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// JSON pointers of sensitive fields and their levels (1 or 2).
    #[serde(default)]
    pub sensitive: BTreeMap<String, u8>,
    /// The customer the event concerns: subscriptions bound to that owner receive it (and the
    /// account-wide ones). Without it (and without `broadcast`) only account-wide
    /// subscriptions do.
    pub owner: Option<String>,
    /// `true` sends it on purpose to every customer's subscriptions as well (never with
    /// `owner`).
    #[serde(default)]
    pub broadcast: bool,
    /// The trace context the event carries: its publish's span (in the producer's trace where
    /// the request had a `traceparent`); never read from the body.
    #[serde(skip)]
    pub trace: Option<crate::trace::TraceParent>,
}

/// What publish answers.
#[derive(Debug)]
pub struct Published {
    /// The event id (`evt_…`).
    pub id: String,
    /// The topic.
    pub topic: Topic,
    /// `true` when this was a repeat of an `id` queued within 24 h (not queued again).
    pub duplicate: bool,
    /// Where `data` did not match its type's schema, accepted all the same because the account
    /// only warns (docs/catalog.md); empty otherwise.
    pub schema_violations: Vec<crate::catalog::Violation>,
}

/// A subscription id as long as any (`sub_`, 12 hex digits of time, 16 random).
const WIDEST_SUBSCRIPTION_ID: &str = "sub_0000000000000000000000000000";
/// What a retry adds to a task body at the most (the task's last three fields, widest).
const WIDEST_RETRY_FIELDS: &str = r#","attempts_made":4294967295,"not_before_ms":9223372036854775807,"kept":true,"throttled":4294967295"#;

/// The size of the largest delivery task an event can become (its queue JSON given): what the
/// deliveries queue must carry for it, retries included.
pub fn delivery_task_bytes(event_json: &str) -> usize {
    event_task_body(WIDEST_SUBSCRIPTION_ID, event_json).len() + WIDEST_RETRY_FIELDS.len()
}

/// The deliveries-queue body of `event` for one subscription, built around the event's JSON
/// (serialized once per event, not once per subscriber). Equal to `queue_json` of the task.
fn event_task_body(subscription_id: &str, event_json: &str) -> String {
    let id = serde_json::to_string(subscription_id).expect("strings serialize");
    format!(r#"{{"subscription_id":{id},"payload":{{"kind":"event","event":{event_json}}}}}"#)
}

/// The queue message of an event's delivery task to the subscription of `entry` (not an
/// ordered one: those wait in their line, [`Hub::queue_ordered`]).
fn event_task_message(entry: &TopicEntry, event_json: &str) -> OutgoingMessage {
    OutgoingMessage {
        body: event_task_body(&entry.subscription_id, event_json),
        delay: std::time::Duration::ZERO,
        group: None,
    }
}

/// The owner an event is addressed to, checked: a name or a broadcast, not both; a caller bound
/// to a customer publishes only to that customer (its events are addressed to it whatever it
/// names, and it may not broadcast).
fn addressee(caller: &Caller, owner: Option<&str>, broadcast: bool) -> Result<Option<String>> {
    if broadcast && owner.is_some() {
        return Err(HubError::invalid(
            ErrorCode::InvalidOwner,
            "an event is addressed to one `owner` or is a `broadcast` to every customer, not both",
        ));
    }
    if broadcast && caller.bound_to().is_some() {
        return Err(HubError::InsufficientScope(
            "broadcast (a caller bound to a customer publishes to that customer only)".into(),
        ));
    }
    caller.owner_for(owner)
}

/// Most events one batch publish takes.
pub const MAX_BATCH_EVENTS: usize = 100;

/// One event checked and built, on its way to the events queue.
pub(crate) struct Prepared {
    pub(crate) event: Event,
    json: String,
    pub(crate) key: Option<String>,
    /// What the catalog accepted despite the schema (warn).
    pub(crate) warnings: Vec<crate::catalog::Violation>,
}

impl Hub {
    /// `POST /v1/events`. `202` means queued: a key whose event is still being queued by another
    /// request answers `409 in_progress` (retry), never "duplicate".
    pub async fn publish(&self, caller: &Caller, req: PublishRequest) -> Result<Published> {
        caller.require(SCOPE_PUBLISH)?;
        self.publish_each(caller, vec![Ok(req)])
            .await
            .pop()
            .expect("one result per event")
    }

    /// `POST /v1/events` with `{"events": [...]}`: up to [`MAX_BATCH_EVENTS`] events, each
    /// checked, deduplicated on its own `id` and queued on its own, so one bad event refuses only
    /// itself. Items that did not parse come in as their error. One result per item, in order.
    pub async fn publish_batch(
        &self,
        caller: &Caller,
        items: Vec<Result<PublishRequest>>,
    ) -> Result<Vec<Result<Published>>> {
        caller.require(SCOPE_PUBLISH)?;
        if items.is_empty() || items.len() > MAX_BATCH_EVENTS {
            return Err(HubError::invalid(
                ErrorCode::InvalidBatch,
                format!("`events` holds 1 to {MAX_BATCH_EVENTS} events"),
            ));
        }
        Ok(self.publish_each(caller, items).await)
    }

    /// Checks and builds one event, against the account's catalog (`catalog`); `None` for the
    /// key when the producer gave no `id`.
    pub(crate) fn prepare(
        &self,
        caller: &Caller,
        req: PublishRequest,
        catalog: &crate::catalog::CatalogView,
        now: i64,
    ) -> Result<Prepared> {
        let topic = Topic::parse(&req.topic)?;
        if topic.is_operational() {
            return Err(HubError::invalid(
                ErrorCode::ReservedTopic,
                format!(
                    "topics under `{OPERATIONAL_PREFIX}` are the hub's own operational events; \
                     publish under another name"
                ),
            ));
        }
        if serde_json::to_vec(&req.data).map_or(usize::MAX, |v| v.len()) > MAX_EVENT_DATA_BYTES {
            return Err(HubError::PayloadTooLarge(MAX_EVENT_DATA_BYTES));
        }
        validate::event_data(&req.data)?;
        validate::event_labels(&req.labels)?;
        validate::sensitive(&req.sensitive)?;
        if let Some(key) = &req.id
            && (key.is_empty() || key.len() > 128)
        {
            return Err(HubError::invalid(
                ErrorCode::InvalidEventId,
                "id is 1 to 128 characters",
            ));
        }
        let owner = addressee(caller, req.owner.as_deref(), req.broadcast)?;
        let warnings = self.check_against_catalog(catalog, &topic, &req.data)?;
        let event = Event {
            labels: req.labels,
            sensitive: req.sensitive,
            owner,
            broadcast: req.broadcast,
            // The publish's span, in the producer's trace where it came with one.
            trace: req.trace,
            ..Event::new(new_event_id(now), &caller.account, topic, now, req.data)
        };
        let json = queue_json(&event);
        let size = delivery_task_bytes(&json);
        if size > MAX_QUEUE_MESSAGE_BYTES {
            return Err(HubError::EventTooLarge {
                size,
                limit: MAX_QUEUE_MESSAGE_BYTES,
            });
        }
        Ok(Prepared {
            event,
            json,
            key: req.id,
            warnings,
        })
    }

    /// Claims the producer's key of one event: `Ok(None)` when this request may queue it,
    /// `Ok(Some(published))` for a repeat already queued.
    pub(crate) async fn claim(&self, prepared: &Prepared, now: i64) -> Result<Option<Published>> {
        let Some(key) = &prepared.key else {
            return Ok(None);
        };
        let claim = KeyClaim {
            account: prepared.event.account.clone(),
            key: key.clone(),
            event_id: prepared.event.id.clone(),
            now_ms: now,
            claim_until_ms: now + CLAIM_LEASE_MS,
            window_until_ms: now + IDEMPOTENCY_WINDOW_MS,
        };
        match self.store.claim_event_key(&claim).await? {
            ClaimOutcome::Claimed => Ok(None),
            ClaimOutcome::Queued { event_id } => Ok(Some(Published {
                id: event_id,
                topic: prepared.event.topic.clone(),
                duplicate: true,
                schema_violations: Vec::new(),
            })),
            ClaimOutcome::InFlight { retry_after_ms } => Err(HubError::InProgress {
                retry_after_secs: (retry_after_ms.max(1) as u64).div_ceil(1000),
            }),
        }
    }

    /// Queues one chunk of claimed events (one queue call: a `SendMessageBatch` on SQS), then
    /// settles their keys: marked queued on success, released on failure so the producer's
    /// retry goes through (a queue that took part of the chunk then sees those twice, with
    /// their keys: a duplicate, never a loss).
    async fn queue_chunk(&self, chunk: Vec<Prepared>) -> Vec<Result<Published>> {
        let messages = chunk
            .iter()
            .map(|p| OutgoingMessage {
                body: p.json.clone(),
                delay: std::time::Duration::ZERO,
                group: None,
            })
            .collect();
        let sent = self.events.send(messages).await;
        if sent.is_ok() {
            self.metrics.published(chunk.len() as u64);
        }
        let settle = chunk.iter().map(|p| async {
            let Some(key) = &p.key else { return };
            let (account, id) = (&p.event.account, &p.event.id);
            if sent.is_ok() {
                if let Err(err) = self.store.mark_event_key_queued(account, key, id).await {
                    // Queued all the same; the claim lapses after its lease and a later repeat
                    // may be queued again (a duplicate, never a loss).
                    tracing::warn!(event_id = %id, error = %err, "could not mark the idempotency key queued");
                }
            } else {
                let _ = self.store.release_event_key(account, key, id).await;
            }
        });
        futures::future::join_all(settle).await;
        chunk
            .into_iter()
            .map(|p| match &sent {
                Ok(()) => {
                    self.accepted_despite_schema(&p.event, &p.warnings);
                    // The request line records the publish; this one is for debugging.
                    tracing::debug!(event_id = %p.event.id, account = %p.event.account, topic = %p.event.topic, "event accepted");
                    Ok(Published {
                        id: p.event.id,
                        topic: p.event.topic,
                        duplicate: false,
                        schema_violations: p.warnings,
                    })
                }
                Err(err) => Err(err.clone()),
            })
            .collect()
    }

    /// Publishes each item on its own: checked, its key claimed (a key repeated within the
    /// items answers as its first occurrence did), queued in chunks of the queue's batch size.
    async fn publish_each(
        &self,
        caller: &Caller,
        items: Vec<Result<PublishRequest>>,
    ) -> Vec<Result<Published>> {
        let now = self.now_ms();
        let count = items.len();
        let catalog = match self.catalog_view(&caller.account).await {
            Ok(catalog) => catalog,
            Err(err) => return (0..count).map(|_| Err(err.clone())).collect(),
        };
        let mut results: Vec<Option<Result<Published>>> = (0..count).map(|_| None).collect();
        let mut first_of_key: HashMap<String, usize> = HashMap::new();
        let mut repeats = Vec::new();
        let mut candidates = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            match item.and_then(|req| self.prepare(caller, req, &catalog, now)) {
                Err(err) => results[index] = Some(Err(err)),
                Ok(prepared) => match &prepared.key {
                    Some(key) if first_of_key.contains_key(key) => {
                        repeats.push((index, first_of_key[key]))
                    }
                    key => {
                        if let Some(key) = key {
                            first_of_key.insert(key.clone(), index);
                        }
                        candidates.push((index, prepared));
                    }
                },
            }
        }
        let claims =
            futures::future::join_all(candidates.iter().map(|(_, p)| self.claim(p, now))).await;
        let mut to_queue = Vec::new();
        for ((index, prepared), claimed) in candidates.into_iter().zip(claims) {
            match claimed {
                Ok(None) => to_queue.push((index, prepared)),
                Ok(Some(duplicate)) => results[index] = Some(Ok(duplicate)),
                Err(err) => results[index] = Some(Err(err)),
            }
        }
        let mut chunks: Vec<(Vec<usize>, Vec<Prepared>)> = Vec::new();
        for (index, prepared) in to_queue {
            match chunks.last_mut() {
                Some((indexes, chunk)) if chunk.len() < PUBLISH_CHUNK => {
                    indexes.push(index);
                    chunk.push(prepared);
                }
                _ => chunks.push((vec![index], vec![prepared])),
            }
        }
        let (indexes, chunks): (Vec<_>, Vec<_>) = chunks.into_iter().unzip();
        let queued =
            futures::future::join_all(chunks.into_iter().map(|c| self.queue_chunk(c))).await;
        for (indexes, outcomes) in indexes.into_iter().zip(queued) {
            for (index, outcome) in indexes.into_iter().zip(outcomes) {
                results[index] = Some(outcome);
            }
        }
        for (index, first) in repeats {
            let answer = match results[first]
                .as_ref()
                .expect("first occurrences are settled")
            {
                Ok(published) => Ok(Published {
                    id: published.id.clone(),
                    topic: published.topic.clone(),
                    duplicate: true,
                    schema_violations: Vec::new(),
                }),
                Err(err) => Err(err.clone()),
            };
            results[index] = Some(answer);
        }
        results
            .into_iter()
            .map(|r| r.expect("every item is settled"))
            .collect()
    }

    /// Fan-out of one event: a delivery task per live, active subscription of its account whose
    /// patterns and labels match, sent in batches as the topic entries are read page by page.
    /// Returns how many were queued. A failure leaves the event to be fanned out again (tasks
    /// already queued then go out twice, with the same `webhook-id`).
    pub async fn fan_out(&self, event: &Event) -> Result<usize> {
        let span = spans::fan_out(event);
        let count = self.fan_out_paged(event).instrument(span.clone()).await;
        if let Ok(count) = count {
            spans::fanned_out(&span, count);
        }
        count
    }

    /// [`Hub::fan_out`] without its span (the batch fan-out's own span covers an event it
    /// leaves to this).
    async fn fan_out_paged(&self, event: &Event) -> Result<usize> {
        let event_json = queue_json(event);
        let now = self.now_ms();
        let mut seen = HashSet::new();
        let mut listed = Vec::new();
        let mut batch = Vec::with_capacity(FANOUT_BATCH);
        let mut count = 0;
        for pattern in event.topic.patterns() {
            let mut cursor: Option<String> = None;
            loop {
                let page = self
                    .store
                    .topic_entries(
                        &event.account,
                        &pattern,
                        cursor.as_deref(),
                        self.settings.fanout_page,
                    )
                    .await?;
                for entry in page.items {
                    if entry.wants(event, now) && seen.insert(entry.subscription_id.clone()) {
                        if listed.len() < HISTORY_SUBSCRIPTIONS {
                            listed.push(entry.subscription_id.clone());
                        }
                        if entry.ordered {
                            count += 1;
                            self.queue_ordered(&entry.subscription_id, [event]).await?;
                            continue;
                        }
                        batch.push(event_task_message(&entry, &event_json));
                        if send_is_due(batch.len(), batch.len() * event_json.len()) {
                            count += batch.len();
                            self.send_deliveries(std::mem::take(&mut batch)).await?;
                        }
                    }
                }
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        if !batch.is_empty() {
            count += batch.len();
            self.send_deliveries(batch).await?;
        }
        // A large fan-out is known only once it is sent: its record comes after its deliveries.
        if self.settings.history {
            self.keep_history(vec![self.history_record(event, listed, seen.len())])
                .await?;
        }
        // One line per request and per attempt at the default level; this per-event line is debug.
        tracing::debug!(event_id = %event.id, account = %event.account, topic = %event.topic, deliveries = count, "fanned out");
        Ok(count)
    }
}

impl Hub {
    /// Sends the pending delivery tasks of a batch fan-out (emptying `pending`); each event
    /// with a task in a failed send fails.
    async fn send_tasks(
        &self,
        pending: &mut Vec<(usize, OutgoingMessage)>,
        results: &mut [Option<Result<usize>>],
    ) {
        if pending.is_empty() {
            return;
        }
        let (owners, messages): (Vec<usize>, Vec<OutgoingMessage>) = pending.drain(..).unzip();
        if let Err(err) = self.send_deliveries(messages).await {
            for index in owners {
                results[index] = Some(Err(err.clone()));
            }
        }
    }

    /// Fan-out of the events one consumer received together (an SQS batch): each
    /// `(account, pattern)` is read once for all of them, and their delivery tasks go out
    /// together in batches of [`FANOUT_BATCH`]. A pattern with more than one page of entries
    /// (a large fan-out) is left to [`Hub::fan_out`], event by event, so memory stays bounded.
    /// One result per event, in order: an event whose tasks could not all be sent fails (and
    /// comes back; tasks already sent then go out twice, with the same `webhook-id`).
    pub async fn fan_out_batch(&self, events: &[Event]) -> Vec<Result<usize>> {
        // One span per event, open for the batch's work (which the events share).
        let spans: Vec<tracing::Span> = events.iter().map(spans::fan_out).collect();
        let results = self.fan_out_together(events).await;
        for (span, result) in spans.iter().zip(&results) {
            if let Ok(count) = result {
                spans::fanned_out(span, *count);
            }
        }
        results
    }

    /// [`Hub::fan_out_batch`] without the spans.
    async fn fan_out_together(&self, events: &[Event]) -> Vec<Result<usize>> {
        let now = self.now_ms();
        let mut wanted: Vec<(String, Pattern)> = Vec::new();
        for event in events {
            for pattern in event.topic.patterns() {
                let key = (event.account.clone(), pattern);
                if !wanted.contains(&key) {
                    wanted.push(key);
                }
            }
        }
        let pages = futures::future::join_all(wanted.iter().map(|(account, pattern)| {
            self.store
                .topic_entries(account, pattern, None, self.settings.fanout_page)
        }))
        .await;
        // `None` for a pattern read event by event instead: more than a page of entries (a
        // large fan-out), or a read that failed (`fan_out` reads, and fails, on its own).
        let entries: HashMap<(String, Pattern), Option<Vec<TopicEntry>>> = wanted
            .into_iter()
            .zip(pages)
            .map(|(key, page)| {
                let whole = page.ok().filter(|p| p.next_cursor.is_none());
                (key, whole.map(|p| p.items))
            })
            .collect();
        let mut results: Vec<Option<Result<usize>>> = (0..events.len()).map(|_| None).collect();
        // Who each event goes to, decided before anything is sent, so its history record is
        // kept before its first delivery can reach a receiver (who may look the event up).
        let mut plans: Vec<(usize, Vec<&TopicEntry>)> = Vec::new();
        let mut streamed = Vec::new();
        for (index, event) in events.iter().enumerate() {
            let read: Option<Vec<&Vec<TopicEntry>>> = event
                .topic
                .patterns()
                .iter()
                .map(|p| entries[&(event.account.clone(), p.clone())].as_ref())
                .collect();
            let Some(read) = read else {
                streamed.push(index);
                continue;
            };
            let mut seen = HashSet::new();
            let targets: Vec<&TopicEntry> = read
                .into_iter()
                .flatten()
                .filter(|entry| entry.wants(event, now) && seen.insert(&entry.subscription_id))
                .collect();
            plans.push((index, targets));
        }
        let records = plans
            .iter()
            .filter(|_| self.settings.history)
            .map(|(index, targets)| {
                let listed = targets.iter().take(HISTORY_SUBSCRIPTIONS);
                let listed = listed.map(|e| e.subscription_id.clone()).collect();
                self.history_record(&events[*index], listed, targets.len())
            })
            .collect();
        if let Err(err) = self.keep_history(records).await {
            for (index, _) in &plans {
                results[*index] = Some(Err(err.clone()));
            }
            plans.clear();
        }
        // At most one batch of task bodies in memory: each goes out as soon as it is full.
        // Ordered subscriptions' deliveries go to their lines, each subscription's together.
        let mut pending: Vec<(usize, OutgoingMessage)> = Vec::with_capacity(FANOUT_BATCH);
        let mut pending_bytes = 0;
        let mut lines: Vec<(&str, Vec<usize>)> = Vec::new();
        for (index, targets) in &plans {
            let event_json = queue_json(&events[*index]);
            for entry in targets {
                if entry.ordered {
                    match lines
                        .iter_mut()
                        .find(|(id, _)| *id == entry.subscription_id)
                    {
                        Some((_, line)) => line.push(*index),
                        None => lines.push((&entry.subscription_id, vec![*index])),
                    }
                    continue;
                }
                pending.push((*index, event_task_message(entry, &event_json)));
                pending_bytes += event_json.len();
                if send_is_due(pending.len(), pending_bytes) {
                    self.send_tasks(&mut pending, &mut results).await;
                    pending_bytes = 0;
                }
            }
        }
        self.send_tasks(&mut pending, &mut results).await;
        for (subscription_id, line) in lines {
            let queued = self
                .queue_ordered(subscription_id, line.iter().map(|index| &events[*index]))
                .await;
            if let Err(err) = queued {
                for index in line {
                    results[index] = Some(Err(err.clone()));
                }
            }
        }
        for (index, targets) in &plans {
            if results[*index].is_none() {
                results[*index] = Some(Ok(targets.len()));
                let event = &events[*index];
                tracing::debug!(event_id = %event.id, account = %event.account, topic = %event.topic, deliveries = targets.len(), "fanned out");
            }
        }
        for index in streamed {
            // Also where a page read failed: `fan_out` reads (and fails) on its own.
            results[index] = Some(self.fan_out_paged(&events[index]).await);
        }
        results
            .into_iter()
            .map(|r| r.expect("every event is settled"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeliveryTask, TaskPayload};

    #[test]
    fn the_hand_built_task_body_is_the_serialized_task() {
        let event = Event {
            labels: BTreeMap::from([("k".into(), "v".into())]),
            sensitive: BTreeMap::from([("/data/x".into(), 1)]),
            owner: Some("customer-\"1".into()),
            ..Event::new(
                "evt_1".into(),
                "a\"b",
                Topic::parse("door.opened").unwrap(),
                1,
                serde_json::json!({"x": "\u{ffff}", "n": [1, {"y": null}]}),
            )
        };
        let task = DeliveryTask::new(
            "sub_\"1",
            TaskPayload::Event {
                event: event.clone(),
            },
        );
        assert_eq!(
            event_task_body("sub_\"1", &queue_json(&event)),
            queue_json(&task)
        );
        let back: DeliveryTask = serde_json::from_str(&queue_json(&task)).unwrap();
        assert_eq!(back, task);
        let widest = DeliveryTask {
            subscription_id: crate::model::new_id("sub_", i64::MAX),
            attempts_made: u32::MAX,
            not_before_ms: Some(i64::MAX),
            kept: true,
            throttled: u32::MAX,
            ..task
        };
        assert_eq!(
            delivery_task_bytes(&queue_json(&event)),
            queue_json(&widest).len()
        );
    }
}
