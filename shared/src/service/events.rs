//! Publishing and fan-out: an accepted event goes on the events queue; fan-out turns it into one
//! delivery task per matching subscription, reading the topic entries of each matching pattern
//! page by page and queueing as it reads, so its memory stays bounded whatever the fan-out.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use serde_json::Value;

use crate::auth::{Caller, SCOPE_PUBLISH};
use crate::context::Hub;
use crate::error::{ErrorCode, HubError, Result};
use crate::model::{Event, new_id, queue_json};
use crate::ports::{ClaimOutcome, KeyClaim, OutgoingMessage};
use crate::topic::Topic;
use crate::validate;

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
/// under DynamoDB's 1 MB page (so one query per page), and ten times what one batch of tasks
/// costs in memory at the largest event.
pub const FANOUT_PAGE: usize = 1000;
/// Delivery tasks sent per queue call during fan-out (the SQS batch size).
pub const FANOUT_BATCH: usize = 10;

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
}

/// A subscription id as long as any (`sub_`, 12 hex digits of time, 16 random).
const WIDEST_SUBSCRIPTION_ID: &str = "sub_0000000000000000000000000000";
/// What a retry adds to a task body at the most (the task's last two fields, widest).
const WIDEST_RETRY_FIELDS: &str =
    r#","attempts_made":4294967295,"not_before_ms":9223372036854775807"#;

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

impl Hub {
    /// `POST /v1/events`. `202` means queued: a key whose event is still being queued by another
    /// request answers `409 in_progress` (retry), never "duplicate".
    pub async fn publish(&self, caller: &Caller, req: PublishRequest) -> Result<Published> {
        caller.require(SCOPE_PUBLISH)?;
        let topic = Topic::parse(&req.topic)?;
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
        let now = self.now_ms();
        let event = Event {
            id: new_id("evt_", now),
            account: caller.account.clone(),
            topic,
            timestamp_ms: now,
            data: req.data,
            labels: req.labels,
            sensitive: req.sensitive,
        };
        let event_json = queue_json(&event);
        let size = delivery_task_bytes(&event_json);
        if size > MAX_QUEUE_MESSAGE_BYTES {
            return Err(HubError::EventTooLarge {
                size,
                limit: MAX_QUEUE_MESSAGE_BYTES,
            });
        }
        if let Some(key) = &req.id {
            let claim = KeyClaim {
                account: caller.account.clone(),
                key: key.clone(),
                event_id: event.id.clone(),
                now_ms: now,
                claim_until_ms: now + CLAIM_LEASE_MS,
                window_until_ms: now + IDEMPOTENCY_WINDOW_MS,
            };
            match self.store.claim_event_key(&claim).await? {
                ClaimOutcome::Claimed => {}
                ClaimOutcome::Queued { event_id } => {
                    return Ok(Published {
                        id: event_id,
                        topic: event.topic,
                        duplicate: true,
                    });
                }
                ClaimOutcome::InFlight { retry_after_ms } => {
                    return Err(HubError::InProgress {
                        retry_after_secs: (retry_after_ms.max(1) as u64).div_ceil(1000),
                    });
                }
            }
        }
        let sent = self
            .events
            .send(vec![OutgoingMessage {
                body: event_json,
                delay: std::time::Duration::ZERO,
            }])
            .await;
        if let Err(err) = sent {
            if let Some(key) = &req.id {
                // Nothing was queued under this key: let the producer's retry through.
                let _ = self
                    .store
                    .release_event_key(&caller.account, key, &event.id)
                    .await;
            }
            return Err(err);
        }
        if let Some(key) = &req.id
            && let Err(err) = self
                .store
                .mark_event_key_queued(&caller.account, key, &event.id)
                .await
        {
            // Queued all the same; the claim lapses after its lease and a later repeat may be
            // queued again (a duplicate, never a loss).
            tracing::warn!(event_id = %event.id, error = %err, "could not mark the idempotency key queued");
        }
        // The request line records the publish; this one is for debugging (RUST_LOG=hub=debug).
        tracing::debug!(event_id = %event.id, account = %caller.account, topic = %event.topic, "event accepted");
        Ok(Published {
            id: event.id,
            topic: event.topic,
            duplicate: false,
        })
    }

    /// Fan-out of one event: a delivery task per live, active subscription of its account whose
    /// patterns and labels match, sent in batches as the topic entries are read page by page.
    /// Returns how many were queued. A failure leaves the event to be fanned out again (tasks
    /// already queued then go out twice, with the same `webhook-id`).
    pub async fn fan_out(&self, event: &Event) -> Result<usize> {
        let event_json = queue_json(event);
        let now = self.now_ms();
        let mut seen = HashSet::new();
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
                        batch.push(OutgoingMessage {
                            body: event_task_body(&entry.subscription_id, &event_json),
                            delay: std::time::Duration::ZERO,
                        });
                        if batch.len() == FANOUT_BATCH {
                            count += batch.len();
                            self.deliveries.send(std::mem::take(&mut batch)).await?;
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
            self.deliveries.send(batch).await?;
        }
        // One line per request and per attempt at the default level; this per-event line is debug.
        tracing::debug!(event_id = %event.id, account = %event.account, topic = %event.topic, deliveries = count, "fanned out");
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeliveryTask, TaskPayload};

    #[test]
    fn the_hand_built_task_body_is_the_serialized_task() {
        let event = Event {
            id: "evt_1".into(),
            account: "a\"b".into(),
            topic: Topic::parse("door.opened").unwrap(),
            timestamp_ms: 1,
            data: serde_json::json!({"x": "\u{ffff}", "n": [1, {"y": null}]}),
            labels: BTreeMap::from([("k".into(), "v".into())]),
            sensitive: BTreeMap::from([("/data/x".into(), 1)]),
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
            subscription_id: new_id("sub_", i64::MAX),
            attempts_made: u32::MAX,
            not_before_ms: Some(i64::MAX),
            ..task
        };
        assert_eq!(
            delivery_task_bytes(&queue_json(&event)),
            queue_json(&widest).len()
        );
    }
}
