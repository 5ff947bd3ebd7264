//! The public contract's response bodies, one type each (as `openapi.yaml` names them):
//! what a client reads is decided here and only here, never by the model's storage shape.
//! `tests/openapi.rs` checks every one against the document.

use crate::trace::TraceParent;
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::clock::{rfc3339, seconds_ts};
use crate::model::{
    AttemptError, AttemptRecord, DeliveryOrder, KeptEvent, ReceiverAuth, Subscription,
    SubscriptionStatus,
};
use crate::service::history::{DeliveryStatus, EventView};
use crate::signing::{SignatureScheme, SigningAlgorithm};
use crate::topic::{Pattern, Topic};

/// The kind of receiver credentials a subscription presents; the credentials themselves are
/// never returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverAuthKind {
    /// HTTP Basic.
    Basic,
    /// A bearer token.
    Bearer,
    /// A named header.
    Header,
}

impl<S> From<&ReceiverAuth<S>> for ReceiverAuthKind {
    fn from(auth: &ReceiverAuth<S>) -> Self {
        match auth {
            ReceiverAuth::Basic { .. } => ReceiverAuthKind::Basic,
            ReceiverAuth::Bearer { .. } => ReceiverAuthKind::Bearer,
            ReceiverAuth::Header { .. } => ReceiverAuthKind::Header,
        }
    }
}

/// `Subscription`: a subscription as every read shows it (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionOut {
    /// `sub_…`.
    pub id: String,
    /// Its account.
    pub account: String,
    /// The customer it is bound to (`bound`), or the subject of the token that created it.
    pub owner: String,
    /// Whether it is bound to its `owner` (it receives only that customer's events and
    /// broadcasts) rather than account-wide.
    pub bound: bool,
    /// Where deliveries go.
    pub callback_url: String,
    /// Its topic patterns.
    pub topics: Vec<Pattern>,
    /// Its state.
    pub status: SubscriptionStatus,
    /// Display name.
    pub name: Option<String>,
    /// Echoed in every delivery.
    pub user_data: Option<Value>,
    /// Label filter.
    pub labels: BTreeMap<String, Vec<String>>,
    /// Extra signature header.
    pub signature_scheme: SignatureScheme,
    /// `v1` HMAC or `v1a` Ed25519.
    pub signing_algorithm: SigningAlgorithm,
    /// The `whpk_` key an Ed25519 subscription's receiver verifies with (`null` for HMAC): public,
    /// so every read shows it.
    pub public_key: Option<String>,
    /// Which sensitive fields are removed.
    pub secrecy_level: u8,
    /// Whether `subscription.expiring` is sent.
    pub expiry_notice: bool,
    /// Its own attempt budget, seconds (`null`: the hub's, 5 s by default).
    pub timeout: Option<u32>,
    /// Its own delays between attempts, seconds (`null`: the hub's schedule).
    pub retry_schedule: Option<Vec<u64>>,
    /// The most deliveries a second (`null`: no limit).
    pub max_per_second: Option<u32>,
    /// `unordered`, or `fifo`: one at a time in publish order.
    pub ordering: DeliveryOrder,
    /// How fast it is delivered to now: its limit and its back-off.
    pub pace: PaceOut,
    /// The kind of receiver credentials, if any.
    pub receiver_auth: Option<ReceiverAuthKind>,
    /// Lease end, Unix seconds with three decimals.
    pub validity_ts: f64,
    /// Lease end.
    pub expires_at: String,
    /// Creation time.
    pub created_at: String,
    /// Confirmation time.
    pub confirmed_at: Option<String>,
    /// Delivered events.
    pub odometer: u64,
    /// When an event was last delivered (`null` before the first).
    pub last_delivered_at: Option<String>,
}

impl From<&Subscription> for SubscriptionOut {
    fn from(sub: &Subscription) -> Self {
        SubscriptionOut {
            id: sub.id.clone(),
            account: sub.account.clone(),
            owner: sub.owner.clone(),
            bound: sub.bound,
            callback_url: sub.callback_url.clone(),
            topics: sub.topics.clone(),
            status: sub.status,
            name: sub.name.clone(),
            user_data: sub.user_data.clone(),
            labels: sub.labels.clone(),
            signature_scheme: sub.signature_scheme,
            signing_algorithm: sub.signing_algorithm(),
            public_key: sub.public_key(),
            secrecy_level: sub.secrecy_level,
            expiry_notice: sub.expiry_notice,
            timeout: sub.timeout_secs,
            retry_schedule: sub.retry_schedule_secs.clone(),
            max_per_second: sub.max_per_second,
            ordering: sub.ordering,
            pace: PaceOut::of(sub),
            receiver_auth: sub.receiver_auth.as_ref().map(ReceiverAuthKind::from),
            validity_ts: seconds_ts(sub.expires_at_ms),
            expires_at: rfc3339(sub.expires_at_ms),
            created_at: rfc3339(sub.created_at_ms),
            confirmed_at: sub.confirmed_at_ms.map(rfc3339),
            odometer: sub.odometer,
            last_delivered_at: sub.last_delivered_ms.map(rfc3339),
        }
    }
}

/// `Pace`: how fast a subscription is delivered to, as its last delivery batch left it.
#[derive(Debug, Clone, Serialize)]
pub struct PaceOut {
    /// The rate in force, deliveries a second: the lower of its limit and its back-off
    /// (`null`: as fast as the hub goes).
    pub per_second: Option<f64>,
    /// Whether it is backing off because its receiver pushed back (`429`, `503`).
    pub backing_off: bool,
    /// The back-off rate, deliveries a second, while backing off.
    pub backoff_per_second: Option<f64>,
    /// When its receiver last pushed back.
    pub pushed_back_at: Option<String>,
}

impl PaceOut {
    /// The pace of `sub`.
    pub fn of(sub: &Subscription) -> Self {
        let pace = sub.pace.clone().unwrap_or_default();
        // Rounded to a hundredth: it is a rate shown, not a value to compute with.
        let shown = |rate: f64| (rate * 100.0).round() / 100.0;
        PaceOut {
            per_second: pace.rate(sub.max_per_second).map(shown),
            backing_off: pace.backoff_per_second.is_some(),
            backoff_per_second: pace.backoff_per_second.map(shown),
            pushed_back_at: pace.pushed_back_ms.map(rfc3339),
        }
    }
}

/// `CreatedSubscription`: the create response, the one time the secret is shown unasked.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedSubscriptionOut {
    /// The subscription.
    #[serde(flatten)]
    pub subscription: SubscriptionOut,
    /// Its signing secret.
    pub secret: String,
}

/// `SubscriptionPage`: one page of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionPageOut {
    /// The subscriptions.
    pub data: Vec<SubscriptionOut>,
    /// Where the next page starts, if there is one.
    pub next_cursor: Option<String>,
}

/// `Attempt`: one delivery attempt of the delivery log.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptOut {
    /// The `webhook-id` delivered.
    pub message_id: String,
    /// 1 for the first try.
    pub attempt: u32,
    /// When it started.
    pub timestamp: String,
    /// The receiver's status, if it answered.
    pub status_code: Option<u16>,
    /// How long it took.
    pub latency_ms: u64,
    /// Why it failed, if it did.
    pub error: Option<AttemptError>,
    /// Whether it counted as delivered.
    pub delivered: bool,
    /// When the hub will try again; `null` when this attempt was the last.
    pub next_attempt_at: Option<String>,
}

impl From<&AttemptRecord> for AttemptOut {
    fn from(record: &AttemptRecord) -> Self {
        AttemptOut {
            message_id: record.message_id.clone(),
            attempt: record.attempt,
            timestamp: rfc3339(record.started_at_ms),
            status_code: record.status_code,
            latency_ms: record.latency_ms,
            error: record.error,
            delivered: record.delivered,
            next_attempt_at: record.next_attempt_at_ms.map(rfc3339),
        }
    }
}

/// The delivery log: `{"data": [Attempt…]}`.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptPageOut {
    /// The attempts, newest first.
    pub data: Vec<AttemptOut>,
}

/// `Secret`: a subscription's signing secret (read, or new after a rotation).
#[derive(Debug, Clone, Serialize)]
pub struct SecretOut {
    /// The secret.
    pub secret: String,
}

/// The answer to removing every subscription of the caller's own.
#[derive(Debug, Clone, Serialize)]
pub struct DeletedOut {
    /// How many were removed.
    pub deleted: usize,
}

/// The answer to a publish.
#[derive(Debug, Clone, Serialize)]
pub struct PublishedOut {
    /// The event id (`evt_…`), the `webhook-id` of its deliveries.
    pub id: String,
    /// Its topic.
    pub topic: Topic,
    /// Whether this repeated an `id` already queued within 24 h.
    pub duplicate: bool,
    /// Where `data` did not match its type's schema, accepted because the account only warns;
    /// absent when it matched (or nothing was checked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schema_violations: Vec<crate::catalog::Violation>,
}

/// One event's answer in a batch publish, at its `index` in the request.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum PublishItemOut {
    /// Queued, or a repeat of an `id` already queued: `status` 202, as a single publish.
    Accepted {
        /// Its place in the request's `events`.
        index: usize,
        /// 202.
        status: u16,
        /// The event id (`evt_…`).
        id: String,
        /// Its topic.
        topic: Topic,
        /// Whether this repeated an `id` already queued within 24 h (or earlier in the batch).
        duplicate: bool,
        /// Where `data` did not match its schema, accepted (warn).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        schema_violations: Vec<crate::catalog::Violation>,
    },
    /// Refused, with the status, `code` and `message` it would have had on its own.
    Refused {
        /// Its place in the request's `events`.
        index: usize,
        /// The HTTP status it would have had alone.
        status: u16,
        /// The stable error code.
        code: crate::error::ErrorCode,
        /// What is wrong.
        message: String,
        /// Where `data` did not match its schema (a `schema_violation`).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        violations: Vec<crate::catalog::Violation>,
    },
}

impl PublishItemOut {
    /// Whether the event was accepted.
    pub fn accepted(&self) -> bool {
        matches!(self, PublishItemOut::Accepted { .. })
    }
}

/// The answer to a batch publish: one item per event, in order, and the counts. `200` when
/// every event was accepted, `207` when any was refused.
#[derive(Debug, Clone, Serialize)]
pub struct PublishBatchOut {
    /// One answer per event.
    pub data: Vec<PublishItemOut>,
    /// How many were accepted (duplicates included).
    pub accepted: usize,
    /// How many were refused.
    pub failed: usize,
}

/// Any response body as JSON.
pub fn to_json(body: &impl Serialize) -> Value {
    serde_json::to_value(body).expect("response types serialize")
}

/// `Resent`: `resend`'s answer: the delivery is queued again under its `webhook-id`.
#[derive(Debug, Clone, Serialize)]
pub struct ResentOut {
    /// The event (`webhook-id`) queued again.
    pub event_id: String,
}

/// `Recovered`: `recover`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveredOut {
    /// How many deliveries were queued again.
    pub requeued: usize,
    /// Whether the window holds more: call again with the same window for the next batch
    /// (with `"include": "all"`, passing `next_cursor` as `cursor`).
    pub more: bool,
    /// With `"include": "all"`, where the next call goes on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `Event`: a kept event of the history, as the caller may see it.
#[derive(Debug, Clone, Serialize)]
pub struct EventOut {
    /// `evt_…`, the `webhook-id` of its deliveries.
    pub id: String,
    /// Its topic.
    pub topic: Topic,
    /// When it was published.
    pub timestamp: String,
    /// The customer it was addressed to, if any.
    pub owner: Option<String>,
    /// Whether it was a broadcast to every customer.
    pub broadcast: bool,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its payload, with the fields the caller's customers never receive removed.
    pub data: Value,
    /// Its sensitive fields and their levels (the platform's own callers only).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sensitive: BTreeMap<String, u8>,
    /// How many subscriptions it was fanned out to (of the whole account).
    pub fanned_out: u64,
    /// When the history drops it.
    pub kept_until: String,
    /// The trace it belongs to (32 hex digits), where its producer sent a `traceparent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl From<&KeptEvent> for EventOut {
    fn from(kept: &KeptEvent) -> Self {
        let event = &kept.event;
        EventOut {
            id: event.id.clone(),
            topic: event.topic.clone(),
            timestamp: rfc3339(event.timestamp_ms),
            owner: event.owner.clone(),
            broadcast: event.broadcast,
            labels: event.labels.clone(),
            data: event.data.clone(),
            sensitive: event.sensitive.clone(),
            fanned_out: kept.fanned_out,
            kept_until: rfc3339(kept.until_ms),
            trace_id: event.trace.as_ref().map(TraceParent::trace_id_hex),
        }
    }
}

/// `EventPage`: a page of the history, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct EventPageOut {
    /// The events.
    pub data: Vec<EventOut>,
    /// Where the next page starts, if more may follow (a page can be short, even empty, when a
    /// filter is selective: follow the cursor until it is `null`).
    pub next_cursor: Option<String>,
}

/// `EventDelivery`: one delivery of a kept event.
#[derive(Debug, Clone, Serialize)]
pub struct EventDeliveryOut {
    /// The subscription.
    pub subscription_id: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Its attempts still in the delivery log, oldest first.
    pub attempts: Vec<AttemptOut>,
    /// The body as this subscription receives it (its secrecy level, its `user_data`).
    pub body: Value,
}

/// `EventDetail`: one kept event with its deliveries in the caller's reach.
#[derive(Debug, Clone, Serialize)]
pub struct EventDetailOut {
    /// The event.
    #[serde(flatten)]
    pub event: EventOut,
    /// Its deliveries.
    pub deliveries: Vec<EventDeliveryOut>,
    /// Whether more deliveries exist than shown (name one with `subscription_id`).
    pub more_deliveries: bool,
}

impl From<&EventView> for EventDetailOut {
    fn from(view: &EventView) -> Self {
        EventDetailOut {
            event: EventOut::from(&view.kept),
            deliveries: view
                .deliveries
                .iter()
                .map(|d| EventDeliveryOut {
                    subscription_id: d.subscription_id.clone(),
                    status: d.status,
                    attempts: d.attempts.iter().map(AttemptOut::from).collect(),
                    body: d.body.clone(),
                })
                .collect(),
            more_deliveries: view.more_deliveries,
        }
    }
}

/// `TestEventSent`: the test event queued for one subscription.
#[derive(Debug, Clone, Serialize)]
pub struct TestEventOut {
    /// The test event (`webhook-id`).
    pub event_id: String,
    /// Its topic, `hub.test`.
    pub topic: &'static str,
}

/// `PortalSession`: a minted portal session.
#[derive(Debug, Clone, Serialize)]
pub struct PortalSessionOut {
    /// The portal with the token in its fragment: hand this to the customer.
    pub url: String,
    /// The token alone (`whpt_…`), for a platform that opens the portal its own way.
    pub token: String,
    /// The customer the session is for.
    pub owner: String,
    /// The topic patterns it allows.
    pub topics: Vec<Pattern>,
    /// `read` or `write`.
    pub access: crate::service::portal::PortalAccess,
    /// The lowest secrecy level the customer's subscriptions may have.
    pub secrecy_floor: u8,
    /// When the link stops working.
    pub expires_at: String,
}

impl From<&crate::service::portal::MintedSession> for PortalSessionOut {
    fn from(minted: &crate::service::portal::MintedSession) -> Self {
        PortalSessionOut {
            url: minted.url.clone(),
            token: minted.token.clone(),
            owner: minted.session.owner.clone(),
            topics: minted.session.topics.clone(),
            access: minted.session.access,
            secrecy_floor: minted.session.secrecy_floor,
            expires_at: rfc3339(minted.session.expires_at_ms),
        }
    }
}

/// `EventType`: one declared topic of the catalog, as every read shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EventTypeOut {
    /// The topic it declares.
    pub topic: Topic,
    /// What the event means.
    pub description: String,
    /// The JSON Schema (2020-12) of its `data`, or `null`.
    pub schema: Option<Value>,
    /// Example `data` payloads.
    pub examples: Vec<Value>,
    /// On its way out.
    pub deprecated: bool,
    /// Removed from the catalog (shown only when archived ones are asked for).
    pub archived: bool,
    /// When it was first declared (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

impl From<&crate::catalog::EventType> for EventTypeOut {
    fn from(t: &crate::catalog::EventType) -> Self {
        EventTypeOut {
            topic: t.topic.clone(),
            description: t.description.clone(),
            schema: t.schema.clone(),
            examples: t.examples.clone(),
            deprecated: t.deprecated,
            archived: t.archived,
            created_at: rfc3339(t.created_ms),
            updated_at: rfc3339(t.updated_ms),
        }
    }
}

/// `EventTypeList`: the catalog, in topic order (read whole: no further page).
#[derive(Debug, Clone, Serialize)]
pub struct EventTypePageOut {
    /// The types.
    pub data: Vec<EventTypeOut>,
    /// Always `null`: a catalog is one page.
    pub next_cursor: Option<String>,
}

/// `Settings`: the account's settings for checking events against the catalog at publish.
pub type SettingsOut = crate::catalog::CatalogSettings;
