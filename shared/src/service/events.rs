//! Publishing and fan-out: an accepted event goes on the events queue; fan-out turns it into one
//! delivery task per matching subscription with one store query per matching pattern.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::{Caller, SCOPE_PUBLISH};
use crate::error::{HubError, Result};
use crate::hub::Hub;
use crate::model::{DeliveryTask, Event, TaskPayload, new_id};
use crate::ports::OutgoingMessage;
use crate::validate;

/// How long a producer's event `id` is remembered to drop repeats.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// Largest serialized `data` of an event (the SQS message limit, less the envelope).
pub const MAX_EVENT_DATA_BYTES: usize = 240 * 1024;

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
    pub topic: String,
    /// `true` when this was a repeat of an `id` seen within 24 h (not fanned out again).
    pub duplicate: bool,
}

impl Hub {
    /// `POST /v1/events`.
    pub async fn publish(&self, caller: &Caller, req: PublishRequest) -> Result<Published> {
        caller.require(SCOPE_PUBLISH)?;
        validate::topic(&req.topic)?;
        if serde_json::to_vec(&req.data)
            .map(|v| v.len())
            .unwrap_or(usize::MAX)
            > MAX_EVENT_DATA_BYTES
        {
            return Err(HubError::PayloadTooLarge(MAX_EVENT_DATA_BYTES));
        }
        if req.labels.len() > 50
            || req
                .labels
                .iter()
                .any(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 256)
        {
            return Err(HubError::invalid(
                "invalid_labels",
                "at most 50 labels, keys 1-128 and values up to 256 characters",
            ));
        }
        for (pointer, level) in &req.sensitive {
            if !pointer.starts_with('/') || !(1..=2).contains(level) {
                return Err(HubError::invalid(
                    "invalid_sensitive",
                    "sensitive maps JSON pointers (starting with /) to level 1 or 2",
                ));
            }
        }
        let now = self.now_ms();
        let (id, key) = match &req.id {
            Some(key) => {
                if key.is_empty() || key.len() > 128 {
                    return Err(HubError::invalid(
                        "invalid_event_id",
                        "id is 1 to 128 characters",
                    ));
                }
                let digest = Sha256::digest(format!("{}\0{key}", caller.account).as_bytes());
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                (format!("evt_{hex}"), Some(key.as_str()))
            }
            None => (new_id("evt_", now), None),
        };
        if let Some(key) = key
            && !self
                .store
                .claim_event_key(&caller.account, key, now, now + IDEMPOTENCY_WINDOW_MS)
                .await?
        {
            return Ok(Published {
                id,
                topic: req.topic,
                duplicate: true,
            });
        }
        let event = Event {
            id: id.clone(),
            account: caller.account.clone(),
            topic: req.topic.clone(),
            timestamp_ms: now,
            data: req.data,
            labels: req.labels,
            sensitive: req.sensitive,
        };
        let body = serde_json::to_string(&event).map_err(HubError::backend)?;
        let sent = self
            .events
            .send(vec![OutgoingMessage {
                body,
                delay: std::time::Duration::ZERO,
            }])
            .await;
        if let Err(err) = sent {
            if let Some(key) = key {
                // Let the producer's retry through: nothing was queued under this key.
                let _ = self.store.release_event_key(&caller.account, key).await;
            }
            return Err(err);
        }
        tracing::info!(event_id = %id, account = %caller.account, topic = %req.topic, "event accepted");
        Ok(Published {
            id,
            topic: req.topic,
            duplicate: false,
        })
    }

    /// Fan-out of one event: a delivery task per live, active subscription of its account whose
    /// patterns and labels match. Returns how many were queued.
    pub async fn fan_out(&self, event: &Event) -> Result<usize> {
        let patterns = validate::patterns_matching(&event.topic);
        let entries = self.store.topic_entries(&event.account, &patterns).await?;
        let now = self.now_ms();
        let mut seen = HashSet::new();
        let mut messages = Vec::new();
        for entry in entries {
            if entry.wants(event, now) && seen.insert(entry.subscription_id.clone()) {
                let task = DeliveryTask {
                    subscription_id: entry.subscription_id,
                    payload: TaskPayload::Event {
                        event: event.clone(),
                    },
                };
                messages.push(OutgoingMessage {
                    body: serde_json::to_string(&task).map_err(HubError::backend)?,
                    delay: std::time::Duration::ZERO,
                });
            }
        }
        let count = messages.len();
        self.deliveries.send(messages).await?;
        tracing::info!(event_id = %event.id, account = %event.account, topic = %event.topic, deliveries = count, "fanned out");
        Ok(count)
    }
}
