//! Publishing from inside AWS without the API (`docs/ingest.md`): producers send the publish
//! body straight to an ingest queue (`SendMessage`/`SendMessageBatch`), or put events on the
//! hub's EventBridge bus, whose rule sends them to a second queue. The fan-out reads both and
//! publishes each message exactly as `POST /v1/events` would (the same checks, idempotency
//! keys and limits), or refuses it for good (the consumer dead-letters it; nothing is
//! delivered). Trust comes from IAM: on the direct queue the account is the one mapped to the
//! sender SQS vouches for (`SenderId`); on the bus queue, which only the rule may send to, it is
//! named by the event's `source`, which the bus policy binds to the principals allowed to use it.

use serde_json::Value;

use crate::auth::Caller;
use crate::context::Hub;
use crate::error::{ErrorCode, HubError, Result};
use crate::ports::ReceivedMessage;
use crate::service::events::{Prepared, PublishRequest};
use crate::signing::sha256_hex;
use crate::trace::{TraceParent, spans};

/// The EventBridge `source` of hub events: `webhook-hub.<account>`.
pub const BUS_SOURCE_PREFIX: &str = "webhook-hub.";

/// Which ingest queue a message came from: it decides whose account it publishes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IngestSource {
    /// Sent by an IAM principal; the account is the one mapped to its sender id.
    Direct,
    /// Sent by the EventBridge rule; the account is named by the event's `source`.
    Bus,
}

/// What became of an ingested message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// Published: fanned out to this many deliveries.
    Published {
        /// The event id (`webhook-id`), the same on every redelivery of the message.
        id: String,
        /// Deliveries queued.
        deliveries: usize,
    },
    /// A repeat of a producer `id` already published within the window.
    Duplicate {
        /// The event id published the first time.
        id: String,
    },
}

impl Hub {
    /// Publishes one ingest-queue message. `Err` with [`HubError::is_transient`] means try
    /// again later; any other `Err` refuses the message for good (to be dead-lettered).
    pub async fn ingest(&self, source: IngestSource, msg: &ReceivedMessage) -> Result<Ingested> {
        self.ingest_batch(source, std::slice::from_ref(msg))
            .await
            .pop()
            .expect("one result per message")
    }

    /// Publishes the messages of one ingest batch together, one result each, in order: each is
    /// checked and its producer id claimed on its own, then the accepted events are fanned out
    /// together ([`Hub::fan_out_batch`]: each pattern read once, tasks sent ten at a time).
    pub async fn ingest_batch(
        &self,
        source: IngestSource,
        msgs: &[ReceivedMessage],
    ) -> Vec<Result<Ingested>> {
        let now = self.now_ms();
        let mut results: Vec<Option<Result<Ingested>>> = (0..msgs.len()).map(|_| None).collect();
        let mut ready = Vec::new();
        let prepared = futures::future::join_all(
            msgs.iter()
                .map(|msg| self.ingest_prepared(source, msg, now)),
        )
        .await;
        for (index, prepared) in prepared.into_iter().enumerate() {
            match prepared {
                Ok(Ok(prepared)) => ready.push((index, prepared)),
                Ok(Err(repeat)) => results[index] = Some(Ok(repeat)),
                Err(err) => results[index] = Some(Err(err)),
            }
        }
        let events: Vec<crate::model::Event> = ready.iter().map(|(_, p)| p.event.clone()).collect();
        let fanned = self.fan_out_batch(&events).await;
        for ((index, prepared), fanned) in ready.into_iter().zip(fanned) {
            let event = &prepared.event;
            results[index] = Some(match fanned {
                Ok(deliveries) => {
                    if let Some(key) = &prepared.key
                        && let Err(err) = self
                            .store
                            .mark_event_key_queued(&event.account, key, &event.id)
                            .await
                    {
                        tracing::warn!(event_id = %event.id, error = %err, "could not mark the idempotency key queued");
                    }
                    self.metrics.published(1);
                    self.accepted_despite_schema(event, &prepared.warnings);
                    // The fan-out line records it too; this one is for debugging, as publish's is.
                    tracing::debug!(event_id = %event.id, account = %event.account, topic = %event.topic, ?source, deliveries, "event ingested");
                    Ok(Ingested::Published {
                        id: event.id.clone(),
                        deliveries,
                    })
                }
                Err(err) => {
                    if let Some(key) = &prepared.key {
                        let _ = self
                            .store
                            .release_event_key(&event.account, key, &event.id)
                            .await;
                    }
                    Err(err)
                }
            });
        }
        results
            .into_iter()
            .map(|r| r.expect("every message is settled"))
            .collect()
    }

    /// One message checked and built into an event with its producer id claimed: `Ok(Ok(_))`
    /// to fan out, `Ok(Err(_))` for a repeat already published.
    async fn ingest_prepared(
        &self,
        source: IngestSource,
        msg: &ReceivedMessage,
        now: i64,
    ) -> Result<std::result::Result<Prepared, Ingested>> {
        let (caller, mut req) = self.ingest_request(source, msg)?;
        let queue = match source {
            IngestSource::Direct => "ingest",
            IngestSource::Bus => "bus-ingest",
        };
        let span = spans::ingest(queue, &msg.id, msg.trace.as_ref());
        req.trace = TraceParent::carried(&span, msg.trace.as_ref());
        let catalog = self.catalog_view(&caller.account).await?;
        let mut prepared = self.prepare(&caller, req, &catalog, now)?;
        // Stable across redeliveries of the message (its id and send time), so a repeat carries
        // the same `webhook-id`; time-ordered like every event id.
        let at = msg.sent_at_ms.unwrap_or(now);
        prepared.event.id = format!(
            "evt_{:012x}{}",
            at as u64 & 0xffff_ffff_ffff,
            &sha256_hex(msg.id.as_bytes())[..16]
        );
        prepared.event.timestamp_ms = at;
        if let Some(repeat) = self.claim(&prepared, now).await? {
            tracing::info!(event_id = %repeat.id, account = %caller.account, ?source, "ingested message repeats a published id");
            return Ok(Err(Ingested::Duplicate { id: repeat.id }));
        }
        Ok(Ok(prepared))
    }

    /// The publishing account and the publish body of a message.
    fn ingest_request(
        &self,
        source: IngestSource,
        msg: &ReceivedMessage,
    ) -> Result<(Caller, PublishRequest)> {
        let body: Value = serde_json::from_str(&msg.body).map_err(|e| {
            HubError::invalid(ErrorCode::InvalidJson, format!("invalid JSON body: {e}"))
        })?;
        let (account, owner, body) = match source {
            IngestSource::Direct => {
                let sender = msg.sender.as_deref().unwrap_or_default();
                // A role's sender id carries its session after a colon: the role decides.
                let principal = sender.split(':').next().unwrap_or_default();
                let account = self.settings.ingest_senders.get(principal).ok_or_else(|| {
                    HubError::invalid(
                        ErrorCode::UnknownPublisher,
                        format!("sender `{sender}` is mapped to no account (HUB_INGEST_SENDERS)"),
                    )
                })?;
                (account.clone(), format!("sqs:{principal}"), body)
            }
            IngestSource::Bus => {
                let account = body["source"]
                    .as_str()
                    .and_then(|s| s.strip_prefix(BUS_SOURCE_PREFIX))
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| {
                        HubError::invalid(
                            ErrorCode::UnknownPublisher,
                            format!("an event's source must be `{BUS_SOURCE_PREFIX}<account>`"),
                        )
                    })?
                    .to_string();
                // The detail is the publish body without the topic, which is the detail-type.
                let mut publish = match &body["detail"] {
                    Value::Object(detail) => detail.clone(),
                    _ => {
                        return Err(HubError::invalid(
                            ErrorCode::InvalidJson,
                            "an event's detail is the publish body: {\"data\": …, \"id\"?, \"labels\"?, \"sensitive\"?}",
                        ));
                    }
                };
                publish.insert("topic".into(), body["detail-type"].clone());
                let owner = format!("events:{}", body["account"].as_str().unwrap_or_default());
                (account, owner, Value::Object(publish))
            }
        };
        let req: PublishRequest = serde_json::from_value(body).map_err(|e| {
            HubError::invalid(ErrorCode::InvalidJson, format!("invalid publish body: {e}"))
        })?;
        Ok((Caller::of_account(account, owner, None), req))
    }
}
