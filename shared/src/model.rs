//! The domain model: subscriptions, events and the delivery tasks that travel on the queues.
//! Nothing here knows about DynamoDB, SQS or HTTP.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::keyring::Sealed;
use crate::signing::{SignatureScheme, SigningAlgorithm};
use crate::topic::{Pattern, Topic};

/// The longest lease, and the default one: 7 days.
pub const MAX_LEASE_SECS: i64 = 604_800;
/// The shortest lease a subscriber may ask for.
pub const MIN_LEASE_SECS: i64 = 60;
/// How long an unconfirmed subscription waits for its confirmation.
pub const PENDING_LIFETIME_MS: i64 = 24 * 3600 * 1000;
/// How long a rotated-out secret keeps signing beside the new one.
pub const ROTATION_OVERLAP_MS: i64 = 24 * 3600 * 1000;
/// How many rotated-out secrets may sign at once (rotations within one overlap).
pub const MAX_RETIRING_SECRETS: usize = 3;

/// Where a subscription stands in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// Waiting for the subscriber to confirm the callback; gets only the confirmation.
    Pending,
    /// Confirmed; receives every matching event.
    Active,
    /// Paused by its owner (`active: false`).
    Paused,
    /// Turned off by the hub after continuous delivery failure.
    Disabled,
}

impl SubscriptionStatus {
    /// Every status, in the order of a subscription's life.
    pub const ALL: [SubscriptionStatus; 4] = [
        SubscriptionStatus::Pending,
        SubscriptionStatus::Active,
        SubscriptionStatus::Paused,
        SubscriptionStatus::Disabled,
    ];

    /// Whether matching events are parked for it (kept until it is resumed) rather than
    /// delivered: paused and disabled subscriptions.
    pub fn parks_events(self) -> bool {
        matches!(
            self,
            SubscriptionStatus::Paused | SubscriptionStatus::Disabled
        )
    }

    /// Whether fan-out queues matching events for it: to deliver or to park.
    pub fn takes_events(self) -> bool {
        self == SubscriptionStatus::Active || self.parks_events()
    }

    /// The wire name (`pending`, `active`, `paused`, `disabled`).
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Pending => "pending",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Paused => "paused",
            SubscriptionStatus::Disabled => "disabled",
        }
    }
}

/// Credentials the hub presents to the receiver on every delivery; never returned by reads.
/// `S` is how its secret part is held: plain text as a request gives it, [`Sealed`] as it is
/// stored (the user name and the header name are not secret).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReceiverAuth<S = String> {
    /// HTTP Basic authentication.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: S,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: S,
    },
    /// A named header with a fixed value (a simple shared secret).
    Header {
        /// Header name.
        name: String,
        /// Header value.
        value: S,
    },
}

impl<S> ReceiverAuth<S> {
    /// Its secret part.
    pub fn secret(&self) -> &S {
        match self {
            ReceiverAuth::Basic { password, .. } => password,
            ReceiverAuth::Bearer { token } => token,
            ReceiverAuth::Header { value, .. } => value,
        }
    }

    /// The same credentials with `secret` as their secret part.
    pub fn with_secret<T>(&self, secret: T) -> ReceiverAuth<T> {
        match self {
            ReceiverAuth::Basic { user, .. } => ReceiverAuth::Basic {
                user: user.clone(),
                password: secret,
            },
            ReceiverAuth::Bearer { .. } => ReceiverAuth::Bearer { token: secret },
            ReceiverAuth::Header { name, .. } => ReceiverAuth::Header {
                name: name.clone(),
                value: secret,
            },
        }
    }
}

impl<S> std::fmt::Debug for ReceiverAuth<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never let a secret reach a log through `{:?}`.
        match self {
            ReceiverAuth::Basic { .. } => f.write_str("ReceiverAuth::Basic(<redacted>)"),
            ReceiverAuth::Bearer { .. } => f.write_str("ReceiverAuth::Bearer(<redacted>)"),
            ReceiverAuth::Header { name, .. } => {
                write!(f, "ReceiverAuth::Header({name}: <redacted>)")
            }
        }
    }
}

/// A label filter: each key maps to the values it accepts.
pub type LabelFilter = BTreeMap<String, Vec<String>>;

/// A secret that still signs for a while after a rotation.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiringSecret {
    /// The old secret, sealed.
    pub secret: Sealed,
    /// Until when (Unix ms) it keeps signing.
    pub until_ms: i64,
}

/// How a subscription's events go relative to one another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOrder {
    /// As fast as they can, several at once, in no particular order.
    #[default]
    Unordered,
    /// One at a time in publish order: the next waits until the one before it is delivered,
    /// or exhausted, or dropped (docs/design.md "Ordered delivery").
    Fifo,
}

impl DeliveryOrder {
    /// Whether it is the default, [`DeliveryOrder::Unordered`].
    pub fn is_unordered(&self) -> bool {
        *self == DeliveryOrder::Unordered
    }
}

/// A subscription as stored. Its public face is `api::resources::SubscriptionOut`.
#[derive(Clone, Serialize, Deserialize)]
pub struct Subscription {
    /// `sub_…`, time-ordered.
    pub id: String,
    /// The account (tenant) it belongs to.
    pub account: String,
    /// The customer it belongs to: for a subscription bound to an owner, that owner; for an
    /// account-wide one, the subject of the token that created it.
    pub owner: String,
    /// Whether it is bound to its `owner`: it then receives only events addressed to that owner
    /// and broadcasts ([`Event::is_for`]); otherwise it is account-wide. Fixed at creation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bound: bool,
    /// Where deliveries go.
    pub callback_url: String,
    /// Topic patterns it listens to.
    pub topics: Vec<Pattern>,
    /// Life-cycle state.
    pub status: SubscriptionStatus,
    /// Optional display name.
    pub name: Option<String>,
    /// Any JSON, echoed in every delivery.
    pub user_data: Option<Value>,
    /// Label filter events must match.
    pub labels: LabelFilter,
    /// Creation time, Unix ms.
    pub created_at_ms: i64,
    /// Lease end, Unix ms.
    pub expires_at_ms: i64,
    /// Length of the current lease, ms (the expiry notice goes out when a tenth of it remains).
    #[serde(default)]
    pub lease_ms: i64,
    /// When the callback was confirmed, Unix ms.
    pub confirmed_at_ms: Option<i64>,
    /// While pending: when the unconfirmed subscription lapses (24 h after its confirmation was sent).
    #[serde(default)]
    pub pending_until_ms: Option<i64>,
    /// The signing secret (an HMAC secret or an Ed25519 `whsk_` key), sealed.
    pub secret: Sealed,
    /// The `whpk_` public key of an Ed25519 signing key (`None` for HMAC), kept in the clear so
    /// reads show it without opening the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Rotated-out secrets still signing during their overlap, oldest first.
    #[serde(default, alias = "retiring_secret", deserialize_with = "one_or_many")]
    pub retiring_secrets: Vec<RetiringSecret>,
    /// Credentials presented to the receiver, their secret part sealed.
    pub receiver_auth: Option<ReceiverAuth<Sealed>>,
    /// Extra signature header the receiver expects.
    pub signature_scheme: SignatureScheme,
    /// Sensitive fields at or below this level are removed before signing.
    pub secrecy_level: u8,
    /// Whether to send `subscription.expiring` before the lease ends.
    pub expiry_notice: bool,
    /// Whether that notice was already sent for the current lease.
    #[serde(default)]
    pub expiry_notice_sent: bool,
    /// The budget of one attempt to it, seconds (`None`: the hub's, 5 s by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
    /// Its own delays between attempts, seconds (`None`: the hub's schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_schedule_secs: Option<Vec<u64>>,
    /// The most deliveries a second it is sent (`None`: as fast as the hub goes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_second: Option<u32>,
    /// Whether its events go one at a time in publish order.
    #[serde(default, skip_serializing_if = "DeliveryOrder::is_unordered")]
    pub ordering: DeliveryOrder,
    /// Its pace (limit and back-off), kept by the store beside the subscription and changed
    /// only through `PaceStore::swap_pace`, never by a save.
    #[serde(skip)]
    pub pace: Option<crate::pacing::Pace>,
    /// SHA-256 (hex) of the current confirmation token.
    pub confirm_token_sha256: Option<String>,
    /// Optimistic-concurrency version, bumped on every save.
    pub version: u64,
    /// Delivered events (maintained by the store, not by saves).
    #[serde(default)]
    pub odometer: u64,
    /// When an event was last delivered, Unix ms (maintained by the store beside the odometer,
    /// so it holds under the lean delivery log too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered_ms: Option<i64>,
    /// Since when (Unix ms) deliveries have failed without a success in between.
    #[serde(default)]
    pub failing_since_ms: Option<i64>,
    /// When (Unix ms) the account was last warned that it is failing
    /// (`hub.subscription.failing`); a streak that began after it is warned about again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_warned_ms: Option<i64>,
}

impl Subscription {
    /// Makes `fresh` the signing secret; the current one keeps signing beside it for
    /// [`ROTATION_OVERLAP_MS`], and so does every earlier one still in its overlap (at most
    /// [`MAX_RETIRING_SECRETS`] at once: `409 too_many_rotations` beyond).
    pub fn retire_secret(
        &mut self,
        fresh: Sealed,
        public_key: Option<String>,
        now_ms: i64,
    ) -> crate::error::Result<()> {
        self.retiring_secrets.retain(|old| old.until_ms > now_ms);
        if self.retiring_secrets.len() >= MAX_RETIRING_SECRETS {
            return Err(crate::error::HubError::TooManyRotations(
                MAX_RETIRING_SECRETS,
            ));
        }
        let old = std::mem::replace(&mut self.secret, fresh);
        self.public_key = public_key;
        self.retiring_secrets.push(RetiringSecret {
            secret: old,
            until_ms: now_ms + ROTATION_OVERLAP_MS,
        });
        Ok(())
    }

    /// How its deliveries are signed, known without opening the secret.
    pub fn signing_algorithm(&self) -> SigningAlgorithm {
        match (&self.public_key, self.secret.legacy_plain()) {
            (Some(_), _) => SigningAlgorithm::Ed25519,
            (None, Some(plain)) => SigningAlgorithm::of(plain),
            (None, None) => SigningAlgorithm::HmacSha256,
        }
    }

    /// The `whpk_` public key of an Ed25519 subscription (reads show it); `None` for HMAC.
    pub fn public_key(&self) -> Option<String> {
        self.public_key.clone().or_else(|| {
            // Written before sealing: the key is still in plain.
            let plain = self.secret.legacy_plain()?;
            (SigningAlgorithm::of(plain) == SigningAlgorithm::Ed25519)
                .then(|| crate::signing::verification_key(plain))
        })
    }

    /// A new subscription waiting for its confirmation, with the defaults of a subscribe that
    /// sets nothing else: no topics yet, the standard scheme, secrecy level 1, the expiry notice
    /// on, a lease ending now (the caller sets the real one). `secret` is its sealed HMAC secret.
    pub fn new_pending(
        id: String,
        account: String,
        owner: String,
        callback_url: String,
        now_ms: i64,
        secret: Sealed,
    ) -> Self {
        Subscription {
            id,
            account,
            owner,
            bound: false,
            callback_url,
            topics: vec![],
            status: SubscriptionStatus::Pending,
            name: None,
            user_data: None,
            labels: LabelFilter::new(),
            created_at_ms: now_ms,
            expires_at_ms: now_ms,
            lease_ms: 0,
            confirmed_at_ms: None,
            pending_until_ms: None,
            secret,
            public_key: None,
            retiring_secrets: vec![],
            receiver_auth: None,
            signature_scheme: SignatureScheme::Standard,
            secrecy_level: 1,
            expiry_notice: true,
            expiry_notice_sent: false,
            timeout_secs: None,
            retry_schedule_secs: None,
            max_per_second: None,
            ordering: DeliveryOrder::Unordered,
            pace: None,
            confirm_token_sha256: None,
            version: 0,
            odometer: 0,
            last_delivered_ms: None,
            failing_since_ms: None,
            failing_warned_ms: None,
        }
    }

    /// The owner it is bound to; `None` for an account-wide subscription.
    pub fn bound_owner(&self) -> Option<&str> {
        self.bound.then_some(self.owner.as_str())
    }

    /// When it stops existing: the lease end, or earlier while it waits for confirmation.
    pub fn lapses_at_ms(&self) -> i64 {
        match (self.status, self.pending_until_ms) {
            (SubscriptionStatus::Pending, Some(until)) => until.min(self.expires_at_ms),
            _ => self.expires_at_ms,
        }
    }

    /// When the `subscription.expiring` notice is due, if it is still to be sent.
    pub fn notice_at_ms(&self) -> Option<i64> {
        let pending = self.status == SubscriptionStatus::Active
            && self.expiry_notice
            && !self.expiry_notice_sent;
        pending.then(|| self.expires_at_ms - (self.lease_ms / 10).min(24 * 3600 * 1000))
    }

    /// When the sweeper next has something to do with it: send the notice, or remove it.
    pub fn sweep_at_ms(&self) -> i64 {
        self.notice_at_ms()
            .map_or(self.lapses_at_ms(), |n| n.min(self.lapses_at_ms()))
    }

    /// Whether it has lapsed at `now_ms`; every read treats a lapsed subscription as absent.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.lapses_at_ms() <= now_ms
    }

    /// The secrets that sign a delivery at `now_ms`: the current one, and every rotated-out one
    /// whose overlap has not ended.
    pub fn signing_secrets(&self, now_ms: i64) -> Vec<&Sealed> {
        let mut secrets = vec![&self.secret];
        secrets.extend(
            self.retiring_secrets
                .iter()
                .rev()
                .filter(|old| old.until_ms > now_ms)
                .map(|old| &old.secret),
        );
        secrets
    }

    /// The one secret a single-signature legacy header (`X-Logi-Verify`, `X-PDK-SIGNATURE`) is
    /// made with at `now_ms`: the oldest secret still in its overlap, else the current one. Such
    /// receivers hold one secret, so they keep verifying with the one they have until the
    /// overlap ends, then switch (see docs/design.md, "Secret rotation").
    pub fn legacy_secret(&self, now_ms: i64) -> &Sealed {
        self.retiring_secrets
            .iter()
            .find(|old| old.until_ms > now_ms)
            .map_or(&self.secret, |old| &old.secret)
    }

    /// Whether an event's labels satisfy this subscription's filter: every key of the filter must
    /// hold one of its values.
    pub fn accepts_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        labels_match(&self.labels, labels)
    }
}

/// Label matching shared by the subscription and its fan-out index entry.
pub fn labels_match(filter: &LabelFilter, labels: &BTreeMap<String, String>) -> bool {
    filter.iter().all(|(key, accepted)| {
        labels
            .get(key)
            .is_some_and(|value| accepted.iter().any(|a| a == value))
    })
}

/// What fan-out needs to know of a subscription, kept beside each of its topic entries so one
/// `Query` per pattern answers fan-out without reading the subscriptions themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicEntry {
    /// The subscription.
    pub subscription_id: String,
    /// Its status when last saved.
    pub status: SubscriptionStatus,
    /// Its lease end, Unix ms.
    pub expires_at_ms: i64,
    /// Its label filter.
    pub labels: LabelFilter,
    /// The owner it is bound to (`None`: account-wide), so fan-out applies the customer
    /// boundary from the entries it reads anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Whether its deliveries go one at a time in publish order: fan-out puts them in the
    /// subscription's line and nudges it (`Hub::queue_ordered`) instead of queueing them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ordered: bool,
}

impl TopicEntry {
    /// The entry a subscription writes under each of its topic patterns.
    pub fn of(sub: &Subscription) -> Self {
        TopicEntry {
            subscription_id: sub.id.clone(),
            status: sub.status,
            expires_at_ms: sub.lapses_at_ms(),
            labels: sub.labels.clone(),
            owner: sub.bound_owner().map(str::to_string),
            ordered: sub.ordering == DeliveryOrder::Fifo,
        }
    }

    /// Whether fan-out should enqueue a delivery of `event` for this entry at `now_ms` (the
    /// sender then delivers or parks it).
    pub fn wants(&self, event: &Event, now_ms: i64) -> bool {
        self.status.takes_events()
            && self.expires_at_ms > now_ms
            && event.is_for(self.owner.as_deref())
            && labels_match(&self.labels, &event.labels)
    }
}

/// A published event, as it travels from publish to fan-out to the sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `evt_…`; also the `webhook-id` of every delivery of it.
    pub id: String,
    /// The publishing account.
    pub account: String,
    /// The topic.
    pub topic: Topic,
    /// Publication time, Unix ms.
    pub timestamp_ms: i64,
    /// The payload.
    pub data: Value,
    /// Labels matched against subscription filters.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// JSON pointers of sensitive fields and their levels.
    #[serde(default)]
    pub sensitive: BTreeMap<String, u8>,
    /// The customer (owner) it concerns; `None` for an event of the platform's alone, or a
    /// broadcast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Sent on purpose to every customer: subscriptions bound to any owner receive it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub broadcast: bool,
    /// Its trace context: the span of its publish, which its fan-out and every delivery
    /// attempt continue (docs/operations.md, "Traces"). Travels with the event through the
    /// queues; never part of what a receiver gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::trace::TraceParent>,
}

impl Event {
    /// An unaddressed event with no labels and no sensitive fields (the hub's own notices start
    /// here).
    pub fn new(
        id: String,
        account: impl Into<String>,
        topic: Topic,
        timestamp_ms: i64,
        data: Value,
    ) -> Self {
        Event {
            id,
            account: account.into(),
            topic,
            timestamp_ms,
            data,
            labels: BTreeMap::new(),
            sensitive: BTreeMap::new(),
            owner: None,
            broadcast: false,
            trace: None,
        }
    }

    /// The customer boundary, in one place (`docs/design.md`, "Customers: who receives what"):
    /// an account-wide subscription (`bound_owner` `None`) receives every event of its account;
    /// one bound to an owner receives the events addressed to that owner and broadcasts, never
    /// another owner's and never an unaddressed one.
    pub fn is_for(&self, bound_owner: Option<&str>) -> bool {
        match bound_owner {
            None => true,
            Some(owner) => self.broadcast || self.owner.as_deref() == Some(owner),
        }
    }
}

/// What a message on the deliveries queue asks the sender to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryTask {
    /// The subscription to deliver to (read again before every attempt).
    pub subscription_id: String,
    /// What to deliver.
    pub payload: TaskPayload,
    /// Real attempts made so far. The message carries its own count, so a receive that made no
    /// attempt (a throttled or crashed consumer, a store error) never uses up an attempt.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts_made: u32,
    /// Not to be attempted before this time (Unix ms): the retry schedule's next slot, or a
    /// receiver's `Retry-After`. A message that arrives earlier is hidden again until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<i64>,
    /// Whether the subscription keeps a copy of this delivery ([`KeptDelivery`]) to settle
    /// once it is delivered: set from the first failed attempt on, and on deliveries that
    /// resend, recover or a resume queued again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kept: bool,
    /// How many of the attempts made the receiver pushed back on (`429`, `503`): they are
    /// retried at the subscription's pace and do not use up its retry schedule.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub throttled: u32,
    /// Whether it belongs to its subscription's ordered line: a nudge (with `Resume`), sent in
    /// the subscription's message group of the ordered queue, or a delivery the line is making
    /// (which stays `queued` while it fails and dead-letters to the ordered queue's DLQ).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ordered: bool,
}

impl DeliveryTask {
    /// A first attempt of `payload` for `subscription_id`.
    pub fn new(subscription_id: impl Into<String>, payload: TaskPayload) -> Self {
        DeliveryTask {
            subscription_id: subscription_id.into(),
            payload,
            attempts_made: 0,
            not_before_ms: None,
            kept: false,
            throttled: 0,
            ordered: false,
        }
    }

    /// A kept delivery queued again from the start of the schedule (resend, recover).
    pub fn again(kept: &KeptDelivery) -> Self {
        DeliveryTask {
            kept: true,
            ..DeliveryTask::new(kept.subscription_id.clone(), kept.payload.clone())
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Accepts a list, one object (the older single `retiring_secret`) or `null`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<RetiringSecret>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<RetiringSecret>),
        One(RetiringSecret),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        Some(OneOrMany::Many(list)) => list,
        Some(OneOrMany::One(one)) => vec![one],
        None => vec![],
    })
}

/// A message body for a queue: JSON in which the two characters SQS refuses in a message
/// (U+FFFE and U+FFFF, which serde_json writes raw) are escaped. JSON strings are the only
/// place they can occur, so the escaped text decodes to the same value.
pub fn queue_json<T: Serialize>(value: &T) -> String {
    let text = serde_json::to_string(value).expect("model types serialize");
    if !text.contains(['\u{fffe}', '\u{ffff}']) {
        return text;
    }
    text.replace('\u{fffe}', "\\ufffe")
        .replace('\u{ffff}', "\\uffff")
}

/// The kinds of delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskPayload {
    /// An event matched by the subscription's topics.
    Event {
        /// The event.
        event: Event,
    },
    /// A lifecycle notice sent by the hub itself (e.g. `subscription.expiring`); not topic-matched.
    Notice {
        /// The notice, shaped as an event.
        event: Event,
    },
    /// The ownership check sent on subscribe and on a callback change.
    Confirmation {
        /// The confirmation's `message` uuid (also its `webhook-id`).
        message_id: String,
        /// The capability token the `confirmation_url` carries.
        token: String,
    },
    /// Not a delivery: the subscription was resumed, so its parked deliveries go out now, in
    /// event-time order, a page per message.
    Resume,
}

impl TaskPayload {
    /// Whether a failing delivery of it is kept with its subscription (events and notices:
    /// what `resend`, `recover` and parking work on; never a confirmation).
    pub fn is_kept_when_failing(&self) -> bool {
        self.event_id().is_some()
    }

    /// The id of the event or notice it carries (`None` for a confirmation or a resume).
    pub fn event_id(&self) -> Option<&str> {
        match self {
            TaskPayload::Event { event } | TaskPayload::Notice { event } => Some(&event.id),
            TaskPayload::Confirmation { .. } | TaskPayload::Resume => None,
        }
    }
}

/// Why an attempt did not deliver: the closed set the delivery log and the attempt log lines
/// show, under these wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptError {
    /// The attempt's budget (DNS, connect, TLS, response) ran out.
    Timeout,
    /// No connection could be made.
    Connect,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// The callback resolves only to addresses deliveries may not reach (or is not `https`).
    ForbiddenTarget,
    /// The response body could not be read.
    Body,
    /// Any other failure of the HTTP exchange.
    Transport,
    /// The stored callback URL does not parse.
    InvalidUrl,
    /// The receiver answered, with a status that is not 2xx.
    HttpStatus,
}

impl AttemptError {
    /// The wire name (`forbidden_target`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptError::Timeout => "timeout",
            AttemptError::Connect => "connect",
            AttemptError::Tls => "tls",
            AttemptError::ForbiddenTarget => "forbidden_target",
            AttemptError::Body => "body",
            AttemptError::Transport => "transport",
            AttemptError::InvalidUrl => "invalid_url",
            AttemptError::HttpStatus => "http_status",
        }
    }
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One delivery attempt, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The subscription.
    pub subscription_id: String,
    /// The `webhook-id` delivered.
    pub message_id: String,
    /// 1 for the first try.
    pub attempt: u32,
    /// When it started, Unix ms.
    pub started_at_ms: i64,
    /// How long it took, ms.
    pub latency_ms: u64,
    /// The receiver's status code, if it answered.
    pub status_code: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<AttemptError>,
    /// Whether it counted as delivered.
    pub delivered: bool,
    /// When the hub will try again, Unix ms; `None` when this attempt was the last (delivered,
    /// gone, exhausted, or the lease ends first). Recorded so the schedule the hub chose (a
    /// `Retry-After` floor, the backoff) can be read back, not inferred from clocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at_ms: Option<i64>,
    /// Whether a success counts on the odometer: every delivery of an event or notice does, a
    /// confirmation does not. The odometer's fold reads it from the record.
    #[serde(default = "counts_by_default", skip_serializing_if = "is_true")]
    pub counted: bool,
}

fn counts_by_default() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Successful deliveries to one subscription, counted together: the odometer's fold adds them
/// in one write (`docs/design.md`, "The odometer"), after the batch that made them (embedded
/// modes, a lean log on AWS) or from the delivery log's stream (AWS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredTally {
    /// The subscription.
    pub subscription_id: String,
    /// How many deliveries to add to its odometer (0 when it only ends a failure streak).
    pub delivered: u64,
    /// When the latest of them was made, Unix ms.
    pub last_delivered_ms: i64,
    /// Ends the subscription's failure streak (a success after failures).
    pub ends_streak: bool,
    /// The stream records folded, first and last sequence number, when the tally comes from
    /// the delivery log's stream: the store adds a span once, so a retried stream batch never
    /// counts twice.
    pub stream_span: Option<(u128, u128)>,
    /// The batch fold's mark on this write: a store adds a tally whose mark is the last one it
    /// added for the subscription only once, so a write applied but answered with an error (a
    /// lost answer, an SDK retry) is not counted again when the fold tries it again.
    pub fold_mark: Option<u64>,
}

impl DeliveredTally {
    /// Adds what `other` (the same subscription's) counted.
    pub fn merge(&mut self, other: &DeliveredTally) {
        self.delivered += other.delivered;
        self.last_delivered_ms = self.last_delivered_ms.max(other.last_delivered_ms);
        self.ends_streak |= other.ends_streak;
    }

    /// Adds one delivery made at `at_ms`.
    pub fn add(&mut self, at_ms: i64, counted: bool, ends_streak: bool) {
        self.delivered += u64::from(counted);
        self.last_delivered_ms = self.last_delivered_ms.max(at_ms);
        self.ends_streak |= ends_streak;
    }
}

/// Where a delivery the hub keeps with its subscription stands: the record behind resend,
/// recover and parking (`docs/operations.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeptState {
    /// Failed at least once and a retry is queued (or it was resent or recovered and is on its
    /// way again).
    Retrying,
    /// Every attempt of the schedule failed: `recover` and `resend` can queue it again.
    Exhausted,
    /// Held while the subscription is paused or disabled; delivered in event-time order when it
    /// is resumed.
    Parked,
    /// In an ordered subscription's line, waiting its turn (or failing at its head): delivered
    /// one at a time in event order.
    Queued,
}

impl KeptState {
    /// Its wire name (as serialized), which the stores also index by.
    pub fn as_str(self) -> &'static str {
        match self {
            KeptState::Retrying => "retrying",
            KeptState::Exhausted => "exhausted",
            KeptState::Parked => "parked",
            KeptState::Queued => "queued",
        }
    }
}

/// A delivery the hub keeps with its subscription (never a confirmation): from its first failed
/// attempt until it is delivered, and while it is parked. Keyed by subscription and event id
/// (event ids are time-ordered, so the key order is the event order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptDelivery {
    /// The subscription it is for.
    pub subscription_id: String,
    /// What to deliver (an event or a hub notice).
    pub payload: TaskPayload,
    /// Where it stands.
    pub state: KeptState,
    /// When it entered that state, Unix ms (`recover` selects exhausted ones by it).
    pub since_ms: i64,
    /// When it may be dropped, Unix ms: `since_ms` plus the retention (`--retention`); kept
    /// deliveries written before the retention existed last [`KeptDelivery::LIFETIME_MS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<i64>,
    /// At the head of an ordered line: the attempts made so far and when the next is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<LineProgress>,
}

/// How far the delivery at the head of an ordered line went: it is tried again in place, so
/// its count and its next time are kept with it rather than in a queue message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineProgress {
    /// Attempts made.
    pub attempts_made: u32,
    /// Of those, the ones the receiver pushed back on.
    pub throttled: u32,
    /// When the next one is due, Unix ms.
    pub next_attempt_at_ms: i64,
}

impl KeptDelivery {
    /// How long a kept delivery outlives its last change: the longest lease, after which its
    /// subscription has lapsed unless refreshed (a removed subscription takes its kept
    /// deliveries along at once).
    pub const LIFETIME_MS: i64 = MAX_LEASE_SECS * 1000;

    /// The event id (`webhook-id`) it delivers; its key beside the subscription id.
    pub fn event_id(&self) -> &str {
        self.payload.event_id().unwrap_or_default()
    }

    /// When its store entry may be dropped.
    pub fn expires_at_ms(&self) -> i64 {
        self.until_ms.unwrap_or(self.since_ms + Self::LIFETIME_MS)
    }
}

/// An event id (`evt_`): 12 hex digits of its publication time (Unix ms), then this process's
/// random 24-bit mark and a 40-bit sequence. Ids one process makes sort in the order it made
/// them, within one millisecond too (while its clock does not step back); ids of different
/// processes sort by time, then, within one millisecond, by their processes' marks
/// (`docs/design.md`, "Publish order"). The parked-release order and the history follow it.
pub fn new_event_id(now_ms: i64) -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static MARK: OnceLock<u32> = OnceLock::new();
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let mark = *MARK.get_or_init(|| rand::random::<u32>() & 0xff_ffff);
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed) & 0xff_ffff_ffff;
    format!(
        "evt_{:012x}{mark:06x}{seq:010x}",
        now_ms as u64 & 0xffff_ffff_ffff
    )
}

/// A time-ordered id with a prefix: 12 hex digits of Unix ms, then 16 random hex digits.
pub fn new_id(prefix: &str, now_ms: i64) -> String {
    let random: u64 = rand::random();
    format!(
        "{prefix}{:012x}{random:016x}",
        now_ms as u64 & 0xffff_ffff_ffff
    )
}

/// When a time-ordered id (`new_id`'s) was made, Unix ms; `None` for an id of another shape.
pub fn id_time_ms(id: &str) -> Option<i64> {
    let (_, rest) = id.split_once('_')?;
    let hex = rest.get(..12)?;
    i64::from_str_radix(hex, 16).ok()
}

/// The most subscription ids an event's history record lists: a larger fan-out records its count
/// and the first ids only (about 33 KB of ids, far from DynamoDB's 400 KB item).
pub const HISTORY_SUBSCRIPTIONS: usize = 1000;

/// An event as the history keeps it (`docs/operations.md`, "Event history"): the event with its
/// payload, the subscriptions fan-out queued it for, and until when it is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptEvent {
    /// The event, as published.
    pub event: Event,
    /// The subscriptions it was fanned out to, at most [`HISTORY_SUBSCRIPTIONS`] of them.
    pub subscriptions: Vec<String>,
    /// How many subscriptions it was fanned out to in all (more than `subscriptions` holds when
    /// the fan-out was larger than the record lists).
    pub fanned_out: u64,
    /// When it may be dropped, Unix ms (the retention from its publication).
    pub until_ms: i64,
}

impl KeptEvent {
    /// Whether the record lists every subscription the event was fanned out to.
    pub fn lists_every_subscription(&self) -> bool {
        self.fanned_out as usize <= self.subscriptions.len()
    }

    /// Whether the event was fanned out to `sub`: listed, or (a fan-out larger than the record
    /// lists) matched by `sub` by the rule fan-out applies (topics, customer boundary, labels),
    /// whatever its status now.
    pub fn went_to(&self, sub: &Subscription) -> bool {
        self.subscriptions.contains(&sub.id)
            || (!self.lists_every_subscription()
                && sub.account == self.event.account
                && sub.topics.iter().any(|p| p.covers(&self.event.topic))
                && self.event.is_for(sub.bound_owner())
                && sub.accepts_labels(&self.event.labels))
    }
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn event_ids_sort_in_the_order_made_within_one_millisecond() {
        let ids: Vec<String> = (0..10_000)
            .map(|_| new_event_id(1_764_000_000_000))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids);
        for id in &ids {
            assert_eq!(id.len(), 4 + 28);
            assert_eq!(id_time_ms(id), Some(1_764_000_000_000));
        }
        assert!(
            new_event_id(1_764_000_000_001) > ids[9_999],
            "a later millisecond sorts after"
        );
    }
}
