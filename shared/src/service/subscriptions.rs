//! The subscription service: subscribe (and refresh), confirm, read, update, unsubscribe,
//! secret rotation. Every read treats a lapsed subscription as absent.

use serde::Deserialize;
use serde_json::Value;

use crate::auth::{Caller, SCOPE_READ, SCOPE_SUBSCRIBE};
use crate::context::Hub;
use crate::error::{ErrorCode, HubError, Result};
use crate::model::{
    DeliveryOrder, DeliveryTask, LabelFilter, PENDING_LIFETIME_MS, ReceiverAuth, Subscription,
    SubscriptionStatus, TaskPayload, new_id, queue_json,
};
use crate::ports::{OutgoingMessage, Page};
use crate::signing::{SignatureScheme, SigningAlgorithm, constant_time_eq, hex, sha256_hex};
use crate::validate;

/// The body of `POST /v1/subscriptions`.
#[derive(Debug, Default, Deserialize)]
pub struct SubscribeRequest {
    /// Where to deliver.
    pub callback_url: String,
    /// Topic patterns.
    pub topics: Option<Vec<String>>,
    /// One topic pattern (the `webhook_subscribe` form).
    pub topic: Option<String>,
    /// The signing secret; generated when absent.
    pub client_secret: Option<String>,
    /// Lease in seconds.
    pub expires: Option<i64>,
    /// Display name.
    pub name: Option<String>,
    /// Echoed in deliveries.
    pub user_data: Option<Value>,
    /// Label filter.
    pub labels: Option<LabelFilter>,
    /// Credentials presented to the receiver.
    pub receiver_auth: Option<ReceiverAuth>,
    /// Extra signature header.
    pub signature_scheme: Option<SignatureScheme>,
    /// `hmac_sha256` (default, `v1`) or `ed25519` (`v1a`: the receiver verifies with a public
    /// key).
    pub signing_algorithm: Option<SigningAlgorithm>,
    /// Which sensitive fields are removed.
    pub secrecy_level: Option<u8>,
    /// Whether to send `subscription.expiring`.
    pub expiry_notice: Option<bool>,
    /// The budget of one attempt, seconds (1–30; default the hub's, 5 s).
    pub timeout: Option<u32>,
    /// Its own delays between attempts, seconds (default the hub's schedule).
    pub retry_schedule: Option<Vec<u64>>,
    /// The most deliveries a second (1 to 1,000; default none).
    pub max_per_second: Option<u32>,
    /// `fifo`: one at a time in publish order (default `unordered`).
    pub ordering: Option<DeliveryOrder>,
    /// The customer the subscription is bound to: it then receives only the events addressed
    /// to that owner and broadcasts. The platform's callers may name any owner (absent:
    /// account-wide); a bound caller's subscriptions are always bound to its own.
    pub owner: Option<String>,
}

/// Distinguishes "absent" from "null" in a PATCH body.
fn nullable<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The body of `PATCH /v1/subscriptions/{id}`: only what is present changes; `null` clears.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// A new callback (goes back to `pending`).
    pub callback_url: Option<String>,
    /// New topic patterns.
    pub topics: Option<Vec<String>>,
    /// One new topic pattern.
    pub topic: Option<String>,
    /// `false` pauses, `true` resumes (and re-enables a disabled subscription).
    pub active: Option<bool>,
    /// Display name.
    #[serde(default, deserialize_with = "nullable")]
    pub name: Option<Option<String>>,
    /// Echoed data.
    #[serde(default, deserialize_with = "nullable")]
    pub user_data: Option<Option<Value>>,
    /// Label filter.
    #[serde(default, deserialize_with = "nullable")]
    pub labels: Option<Option<LabelFilter>>,
    /// Receiver credentials.
    #[serde(default, deserialize_with = "nullable")]
    pub receiver_auth: Option<Option<ReceiverAuth>>,
    /// Extra signature header.
    pub signature_scheme: Option<SignatureScheme>,
    /// Which sensitive fields are removed.
    pub secrecy_level: Option<u8>,
    /// Whether to send `subscription.expiring`.
    pub expiry_notice: Option<bool>,
    /// The budget of one attempt, seconds (`null`: back to the hub's).
    #[serde(default, deserialize_with = "nullable")]
    pub timeout: Option<Option<u32>>,
    /// Its own delays between attempts, seconds (`null`: back to the hub's schedule).
    #[serde(default, deserialize_with = "nullable")]
    pub retry_schedule: Option<Option<Vec<u64>>>,
    /// The most deliveries a second (`null`: no limit).
    #[serde(default, deserialize_with = "nullable")]
    pub max_per_second: Option<Option<u32>>,
    /// `fifo` or `unordered`: for the events fanned out from then on.
    pub ordering: Option<DeliveryOrder>,
    /// A new lease, in seconds from now (60 s to 7 days): refreshes it without restating the
    /// other settings, as subscribing again would.
    pub expires: Option<i64>,
    /// Accepted only as the owner the subscription already has: an owner never changes.
    pub owner: Option<String>,
}

/// How often subscribe starts over after losing a race for its callback.
const SUBSCRIBE_TRIES: u32 = 8;

/// What subscribe did.
pub struct Subscribed {
    /// The subscription as saved.
    pub subscription: Subscription,
    /// `true` for a new subscription (`201`), `false` for a refresh (`200`).
    pub created: bool,
    /// What the receiver verifies with, when this subscribe set a new secret (the create
    /// response shows it; it is never read back in plain from the store for that).
    pub secret: Option<String>,
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::random();
    hex(&bytes)
}

/// A random RFC 4122 version-4 UUID.
pub fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `duplicate_callback_url` for a callback `other` holds; its id is named only to a caller that
/// could reach it.
fn callback_taken(caller: &Caller, other: &Subscription) -> HubError {
    let message = if caller.reaches(other) {
        format!("subscription {} already uses this callback_url", other.id)
    } else {
        "another subscription already uses this callback_url".to_string()
    };
    HubError::invalid(ErrorCode::DuplicateCallbackUrl, message)
}

impl Hub {
    /// A subscription of the caller's account that has not lapsed, or `404`; `403` when the
    /// caller's topic scopes do not cover every one of its topics.
    pub(crate) async fn owned(&self, caller: &Caller, id: &str) -> Result<Subscription> {
        match self.store.get(id).await? {
            Some(sub) if caller.reaches(&sub) && !sub.is_expired(self.now_ms()) => {
                if !caller.may_act_on(&sub.topics) {
                    return Err(HubError::InsufficientScope(format!(
                        "topic:{}",
                        sub.topics
                            .iter()
                            .map(|t| t.as_str())
                            .collect::<Vec<_>>()
                            .join(" topic:")
                    )));
                }
                Ok(sub)
            }
            _ => Err(HubError::NotFound("subscription")),
        }
    }

    /// Starts (or restarts) the confirmation handshake: a new token, 24 h to answer, and the
    /// confirmation message on the deliveries queue once the subscription is saved. For a
    /// subscription bound to an owner it first takes one of the owner's confirmations of the
    /// hour (`429 too_many_confirmations` once they are used up), so that no customer can make
    /// the hub POST at third parties without bound.
    async fn begin_confirmation(&self, sub: &mut Subscription) -> Result<DeliveryTask> {
        if let Some(owner) = sub.bound_owner() {
            const HOUR_MS: i64 = 3600 * 1000;
            let now = self.now_ms();
            let per_hour = self.settings.confirmations_per_owner_hour;
            let key = format!("confirm\0{}\0{owner}", sub.account);
            if !self
                .store
                .take_allowance(&key, now, HOUR_MS, per_hour)
                .await?
            {
                let retry_after_ms = HOUR_MS - now.rem_euclid(HOUR_MS);
                return Err(HubError::TooManyConfirmations {
                    per_hour,
                    retry_after_secs: (retry_after_ms as u64).div_ceil(1000),
                });
            }
        }
        let token = random_token();
        sub.status = SubscriptionStatus::Pending;
        sub.confirmed_at_ms = None;
        sub.confirm_token_sha256 = Some(sha256_hex(token.as_bytes()));
        sub.pending_until_ms = Some(self.now_ms() + PENDING_LIFETIME_MS);
        Ok(DeliveryTask::new(
            sub.id.clone(),
            TaskPayload::Confirmation {
                message_id: uuid_v4(),
                token,
            },
        ))
    }

    /// Fails with `409 owner_subscription_limit_reached` when `owner` already holds as many
    /// live subscriptions (pending ones included) as one customer may.
    async fn check_owner_limit(&self, account: &str, owner: &str) -> Result<()> {
        let limit = self.settings.max_subscriptions_per_owner;
        let now = self.now_ms();
        let mut held = 0;
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .store
                .list(account, Some(owner), 100, cursor.as_deref())
                .await?;
            held += page.items.iter().filter(|s| !s.is_expired(now)).count();
            if held >= limit {
                return Err(HubError::OwnerSubscriptionLimit(limit));
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// Puts a task on the deliveries queue.
    pub async fn enqueue_delivery(&self, task: &DeliveryTask) -> Result<()> {
        self.deliveries
            .send(vec![OutgoingMessage {
                body: queue_json(task),
                delay: std::time::Duration::ZERO,
                group: None,
            }])
            .await
    }

    /// `POST /v1/subscriptions`: a new pending subscription, or a refresh of the caller's live
    /// subscription with the same callback (same id, same confirmed state, new lease and settings).
    /// Two subscribes of one callback at once make one subscription: the callback index is
    /// written only if free, and the loser refreshes the winner's subscription (`200`).
    pub async fn subscribe(&self, caller: &Caller, req: SubscribeRequest) -> Result<Subscribed> {
        let mut tries = 0;
        loop {
            match self.subscribe_once(caller, &req).await {
                Err(HubError::Conflict) if tries < SUBSCRIBE_TRIES => {
                    tries += 1;
                    // Racing subscribes of one callback refresh one another: spread them out.
                    let pause = rand::random_range(5..=25 * tries as u64);
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                other => return other,
            }
        }
    }

    async fn subscribe_once(&self, caller: &Caller, req: &SubscribeRequest) -> Result<Subscribed> {
        caller.require(SCOPE_SUBSCRIBE)?;
        let url = validate::callback_url(&req.callback_url, self.settings.allow_private_targets)?;
        let topics = validate::topics(req.topics.clone(), req.topic.clone())?;
        topics.iter().try_for_each(|t| caller.require_topic(t))?;
        let lease_ms = validate::lease_secs(req.expires)? * 1000;
        if let Some(name) = &req.name {
            validate::name(name)?;
        }
        if let Some(data) = &req.user_data {
            validate::user_data(data)?;
        }
        if let Some(secret) = &req.client_secret {
            validate::client_secret(secret)?;
        }
        validate::signing(
            req.signing_algorithm.unwrap_or_default(),
            req.client_secret.is_some(),
            req.signature_scheme.unwrap_or_default(),
        )?;
        if let Some(labels) = &req.labels {
            validate::label_filter(labels)?;
        }
        if let Some(auth) = &req.receiver_auth {
            validate::receiver_auth(auth)?;
        }
        let secrecy_level = req.secrecy_level.unwrap_or(1);
        validate::secrecy_level(secrecy_level)?;
        if let Some(secs) = req.timeout {
            validate::timeout_secs(secs)?;
        }
        if let Some(delays) = &req.retry_schedule {
            validate::retry_schedule_secs(delays)?;
        }
        if let Some(rate) = req.max_per_second {
            validate::max_per_second(rate)?;
        }
        let bound_to = caller.owner_for(req.owner.as_deref())?;

        let now = self.now_ms();
        let callback_url = url.to_string();
        let existing = self
            .store
            .find_by_callback(&caller.account, bound_to.as_deref(), &callback_url)
            .await?;
        let (previous, lapsed) = match existing {
            Some(sub) if sub.is_expired(now) => (None, Some(sub)),
            other => (other, None),
        };
        if let Some(prev) = &previous {
            // Subscribing again refreshes and replaces: only for a caller that may act on it.
            if !caller.reaches(prev) {
                return Err(callback_taken(caller, prev));
            }
            if !caller.may_act_on(&prev.topics) {
                return Err(HubError::InsufficientScope(
                    "topic scopes covering the subscription that holds this callback_url".into(),
                ));
            }
        }
        if let Some(lapsed) = lapsed {
            // A lapsed lease starts over: clear its leftovers before the new one takes the callback.
            self.store.delete(&lapsed).await?;
        }
        if previous.is_none() {
            let limit = self.settings.max_subscriptions_per_account;
            if self.store.count_subscriptions(&caller.account).await? >= limit {
                return Err(HubError::SubscriptionLimit(limit));
            }
            if let Some(owner) = &bound_to {
                self.check_owner_limit(&caller.account, owner).await?;
            }
        }

        let id = previous
            .as_ref()
            .map_or_else(|| new_id("sub_", now), |prev| prev.id.clone());
        let algorithm = req.signing_algorithm.unwrap_or_default();
        // The secret this subscribe sets: the subscriber's own, or a fresh one when the
        // subscription is new or changes its algorithm (the old one then signs beside it for
        // the overlap, as in a rotation).
        let fresh_secret = match &req.client_secret {
            Some(secret) => Some(secret.clone()),
            None => previous
                .as_ref()
                .is_none_or(|prev| prev.signing_algorithm() != algorithm)
                .then(|| algorithm.generate_secret()),
        };
        let fresh_secret = match fresh_secret {
            Some(plain) => Some(self.seal_signing_secret(&id, &plain).await?),
            None => None,
        };
        let mut sub = match &previous {
            Some(prev) => prev.clone(),
            None => Subscription {
                bound: bound_to.is_some(),
                ..Subscription::new_pending(
                    id.clone(),
                    caller.account.clone(),
                    bound_to.unwrap_or_else(|| caller.owner.clone()),
                    callback_url.clone(),
                    now,
                    fresh_secret
                        .as_ref()
                        .map(|s| s.sealed.clone())
                        .expect("a new subscription gets a secret"),
                )
            },
        };
        sub.topics = topics;
        sub.expires_at_ms = now + lease_ms;
        sub.lease_ms = lease_ms;
        sub.name = req.name.clone();
        sub.user_data = req.user_data.clone();
        sub.labels = req.labels.clone().unwrap_or_default();
        sub.receiver_auth = match &req.receiver_auth {
            Some(auth) => Some(self.seal_receiver_auth(&id, auth).await?),
            None => None,
        };
        sub.signature_scheme = req.signature_scheme.unwrap_or_default();
        sub.secrecy_level = secrecy_level.max(caller.secrecy_floor);
        sub.expiry_notice = req.expiry_notice.unwrap_or(true);
        sub.expiry_notice_sent = false;
        sub.timeout_secs = req.timeout;
        sub.retry_schedule_secs = req.retry_schedule.clone();
        sub.max_per_second = req.max_per_second;
        sub.ordering = req.ordering.unwrap_or_default();
        let shown_secret = fresh_secret.as_ref().map(|s| s.shown.clone());
        if let Some(fresh) = fresh_secret {
            if previous.is_some() && req.client_secret.is_none() {
                sub.retire_secret(fresh.sealed, fresh.public_key, now)?;
            } else {
                sub.secret = fresh.sealed;
                sub.public_key = fresh.public_key;
            }
        }
        self.reseal_subscription(&mut sub).await?;
        if sub.status == SubscriptionStatus::Disabled {
            // Subscribing again is the owner's answer to a disabled subscription.
            sub.status = SubscriptionStatus::Active;
            sub.failing_since_ms = None;
        }
        let confirmation = match sub.status {
            SubscriptionStatus::Pending => Some(self.begin_confirmation(&mut sub).await?),
            _ => None,
        };
        sub.version += 1;
        self.store.save(&sub, previous.as_ref()).await?;
        if let Some(task) = confirmation
            && let Err(err) = self.enqueue_delivery(&task).await
        {
            // A new subscription whose confirmation could not be queued (a full disk, a queue
            // down) is taken back: the caller, told to try again, finds nothing half-made and
            // gets the secret with the subscription that is kept. A refreshed one stays as it
            // was saved; subscribing again sends its confirmation.
            if previous.is_none()
                && let Err(undo) = self.store.delete(&sub).await
            {
                tracing::warn!(subscription_id = %sub.id, error = %undo, "could not take back a subscription whose confirmation was not queued");
            }
            return Err(err);
        }
        Ok(Subscribed {
            subscription: sub,
            created: previous.is_none(),
            secret: shown_secret,
        })
    }

    /// `GET /v1/subscriptions/{id}/confirm?token=…`: the token proves the subscriber reads what
    /// arrives at the callback. Confirming twice is harmless.
    pub async fn confirm(&self, id: &str, token: &str) -> Result<Subscription> {
        let now = self.now_ms();
        let sub = match self.store.get(id).await? {
            Some(sub) if !sub.is_expired(now) => sub,
            _ => return Err(HubError::NotFound("subscription")),
        };
        let matches = sub.confirm_token_sha256.as_deref().is_some_and(|stored| {
            constant_time_eq(stored.as_bytes(), sha256_hex(token.as_bytes()).as_bytes())
        });
        if !matches {
            return Err(HubError::invalid(
                ErrorCode::InvalidToken,
                "the confirmation token does not match",
            ));
        }
        if sub.status != SubscriptionStatus::Pending {
            return Ok(sub);
        }
        let mut confirmed = sub.clone();
        confirmed.status = SubscriptionStatus::Active;
        confirmed.confirmed_at_ms = Some(now);
        confirmed.pending_until_ms = None;
        confirmed.version += 1;
        self.store.save(&confirmed, Some(&sub)).await?;
        tracing::info!(subscription_id = %confirmed.id, account = %confirmed.account, "subscription confirmed");
        Ok(confirmed)
    }

    /// `GET /v1/subscriptions/{id}`.
    pub async fn get_subscription(&self, caller: &Caller, id: &str) -> Result<Subscription> {
        caller.require(SCOPE_READ)?;
        self.owned(caller, id).await
    }

    /// `GET /v1/subscriptions/{id}/secret`: what the receiver verifies with (the HMAC secret, or
    /// an Ed25519 subscription's public key). An HMAC secret forges deliveries, so it takes the
    /// scope that could have set it (`webhooks:subscribe`), not `webhooks:read`.
    pub async fn subscription_secret(&self, caller: &Caller, id: &str) -> Result<String> {
        caller.require(SCOPE_SUBSCRIBE)?;
        let sub = self.owned(caller, id).await?;
        self.verification_key(&sub).await
    }

    /// `GET /v1/subscriptions`: live subscriptions in creation order, `limit` 1–100 (default 50).
    pub async fn list_subscriptions(
        &self,
        caller: &Caller,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Result<Page<Subscription>> {
        caller.require(SCOPE_READ)?;
        let limit = page_limit(limit)?;
        let now = self.now_ms();
        // Store pages are read until one item more than the page is found among those the
        // caller reaches, so the cursor is always one of its own ids, never another
        // customer's (or another topic's) that a store page happened to end on.
        let mut reached = Vec::new();
        let mut after = cursor.map(str::to_string);
        loop {
            let page = self
                .store
                .list(&caller.account, caller.bound_to(), 100, after.as_deref())
                .await?;
            reached.extend(page.items.into_iter().filter(|sub| {
                !sub.is_expired(now) && caller.reaches(sub) && caller.may_act_on(&sub.topics)
            }));
            match page.next_cursor {
                Some(next) if reached.len() <= limit => after = Some(next),
                _ => break,
            }
        }
        Ok(Page::from_overfetch(reached, limit, |s| s.id.clone()))
    }

    /// `PATCH /v1/subscriptions/{id}`.
    pub async fn update_subscription(
        &self,
        caller: &Caller,
        id: &str,
        req: UpdateRequest,
    ) -> Result<Subscription> {
        caller.require(SCOPE_SUBSCRIBE)?;
        let previous = self.owned(caller, id).await?;
        let mut sub = previous.clone();
        if let Some(owner) = &req.owner
            && previous.bound_owner() != Some(owner.as_str())
        {
            return Err(HubError::invalid(
                ErrorCode::ImmutableOwner,
                "a subscription's owner is fixed when it is created; subscribe anew for another owner",
            ));
        }
        if req.topics.is_some() || req.topic.is_some() {
            sub.topics = validate::topics(req.topics, req.topic)?;
            sub.topics
                .iter()
                .try_for_each(|t| caller.require_topic(t))?;
        }
        if let Some(name) = req.name {
            if let Some(name) = &name {
                validate::name(name)?;
            }
            sub.name = name;
        }
        if let Some(data) = req.user_data {
            if let Some(data) = &data {
                validate::user_data(data)?;
            }
            sub.user_data = data;
        }
        if let Some(labels) = req.labels {
            let labels = labels.unwrap_or_default();
            validate::label_filter(&labels)?;
            sub.labels = labels;
        }
        if let Some(auth) = req.receiver_auth {
            sub.receiver_auth = match &auth {
                Some(auth) => {
                    validate::receiver_auth(auth)?;
                    Some(self.seal_receiver_auth(&sub.id, auth).await?)
                }
                None => None,
            };
        }
        if let Some(scheme) = req.signature_scheme {
            validate::signing(sub.signing_algorithm(), false, scheme)?;
            sub.signature_scheme = scheme;
        }
        if let Some(level) = req.secrecy_level {
            validate::secrecy_level(level)?;
            sub.secrecy_level = level.max(caller.secrecy_floor);
        }
        if let Some(notice) = req.expiry_notice {
            sub.expiry_notice = notice;
        }
        if let Some(timeout) = req.timeout {
            if let Some(secs) = timeout {
                validate::timeout_secs(secs)?;
            }
            sub.timeout_secs = timeout;
        }
        if let Some(schedule) = req.retry_schedule.clone() {
            if let Some(delays) = &schedule {
                validate::retry_schedule_secs(delays)?;
            }
            sub.retry_schedule_secs = schedule;
        }
        if let Some(limit) = req.max_per_second {
            if let Some(rate) = limit {
                validate::max_per_second(rate)?;
            }
            sub.max_per_second = limit;
        }
        if let Some(ordering) = req.ordering {
            sub.ordering = ordering;
        }
        if let Some(secs) = req.expires {
            let lease_ms = validate::lease_secs(Some(secs))? * 1000;
            sub.lease_ms = lease_ms;
            sub.expires_at_ms = self.now_ms() + lease_ms;
            sub.expiry_notice_sent = false;
        }
        match (req.active, sub.status) {
            (Some(false), SubscriptionStatus::Active | SubscriptionStatus::Disabled) => {
                sub.status = SubscriptionStatus::Paused
            }
            (Some(true), SubscriptionStatus::Paused | SubscriptionStatus::Disabled) => {
                sub.status = SubscriptionStatus::Active;
                sub.failing_since_ms = None;
            }
            _ => {}
        }
        if sub.status == SubscriptionStatus::Disabled {
            // Any update of a disabled subscription is its owner's go-ahead to try again.
            sub.status = SubscriptionStatus::Active;
            sub.failing_since_ms = None;
        }
        let mut confirmation = None;
        if let Some(raw) = req.callback_url {
            let url =
                validate::callback_url(&raw, self.settings.allow_private_targets)?.to_string();
            if url != sub.callback_url {
                let holder = self
                    .store
                    .find_by_callback(&sub.account, sub.bound_owner(), &url)
                    .await?;
                if let Some(other) = holder {
                    if !other.is_expired(self.now_ms()) {
                        return Err(callback_taken(caller, &other));
                    }
                    // A lapsed holder gives the callback up, as on subscribe.
                    self.store.delete(&other).await?;
                }
                sub.callback_url = url;
                confirmation = Some(self.begin_confirmation(&mut sub).await?);
            }
        }
        sub.version += 1;
        self.reseal_subscription(&mut sub).await?;
        self.store.save(&sub, Some(&previous)).await?;
        if let Some(task) = confirmation {
            self.enqueue_delivery(&task).await?;
        }
        // Resumed (or asked to be active again): its parked deliveries go out. Asked again on
        // an active one, it releases whatever a failed earlier request left parked.
        let resumed = sub.status == SubscriptionStatus::Active
            && (req.active == Some(true)
                || matches!(
                    previous.status,
                    SubscriptionStatus::Paused | SubscriptionStatus::Disabled
                ));
        if resumed {
            self.queue_resume(&sub.id).await?;
        }
        Ok(sub)
    }

    /// `DELETE /v1/subscriptions/{id}`.
    pub async fn unsubscribe(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.require(SCOPE_SUBSCRIBE)?;
        let sub = self.owned(caller, id).await?;
        self.store.delete(&sub).await?;
        tracing::info!(subscription_id = %sub.id, account = %sub.account, "unsubscribed");
        Ok(())
    }

    /// `DELETE /v1/subscriptions?owner=me`: removes every subscription of the caller's own in
    /// its account (a bound caller's: those bound to its customer; a platform caller's: the
    /// account-wide ones its token subject created); returns how many.
    pub async fn unsubscribe_all_of_owner(&self, caller: &Caller) -> Result<usize> {
        caller.require(SCOPE_SUBSCRIBE)?;
        let mut mine = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .store
                .list(&caller.account, caller.bound_to(), 100, cursor.as_deref())
                .await?;
            mine.extend(page.items.into_iter().filter(|s| {
                s.owner == caller.owner
                    && s.bound_owner() == caller.bound_to()
                    && caller.may_act_on(&s.topics)
            }));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        for sub in &mine {
            self.store.delete(sub).await?;
        }
        Ok(mine.len())
    }

    /// `POST /v1/subscriptions/{id}/secret/rotate`: a new secret (given or generated); the old one
    /// keeps signing beside it for 24 h, and so does every earlier one still in its overlap (at
    /// most [`MAX_RETIRING_SECRETS`]).
    pub async fn rotate_secret(
        &self,
        caller: &Caller,
        id: &str,
        new_secret: Option<String>,
    ) -> Result<(Subscription, String)> {
        caller.require(SCOPE_SUBSCRIBE)?;
        let previous = self.owned(caller, id).await?;
        let algorithm = previous.signing_algorithm();
        if let Some(secret) = &new_secret {
            validate::client_secret(secret)?;
            validate::signing(algorithm, true, previous.signature_scheme)?;
        }
        let mut sub = previous.clone();
        let plain = new_secret.unwrap_or_else(|| algorithm.generate_secret());
        let fresh = self.seal_signing_secret(&sub.id, &plain).await?;
        sub.retire_secret(fresh.sealed, fresh.public_key, self.now_ms())?;
        self.reseal_subscription(&mut sub).await?;
        sub.version += 1;
        self.store.save(&sub, Some(&previous)).await?;
        Ok((sub, fresh.shown))
    }

    /// `GET /v1/subscriptions/{id}/deliveries`: the recent attempts, newest first.
    pub async fn deliveries_of(
        &self,
        caller: &Caller,
        id: &str,
        limit: Option<usize>,
    ) -> Result<Vec<crate::model::AttemptRecord>> {
        caller.require(SCOPE_READ)?;
        let limit = page_limit(limit)?;
        let sub = self.owned(caller, id).await?;
        self.store.attempts(&sub.id, limit).await
    }
}

/// A page size: 1–100, default 50.
fn page_limit(limit: Option<usize>) -> Result<usize> {
    let limit = limit.unwrap_or(50);
    if (1..=100).contains(&limit) {
        Ok(limit)
    } else {
        Err(HubError::invalid(
            ErrorCode::InvalidLimit,
            "limit is between 1 and 100",
        ))
    }
}
