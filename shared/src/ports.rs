//! The ports: what the services need from the outside world. Each has an in-memory adapter (the
//! embedded mode and tests) and an AWS adapter (DynamoDB, SQS), plus the HTTP transport.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::model::{AttemptRecord, Subscription, TopicEntry};

/// One page of a listing.
#[derive(Debug, Default)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts, if there is one.
    pub next_cursor: Option<String>,
}

/// Storage of subscriptions, their fan-out entries, event ids and delivery logs.
///
/// Adapters store what they are given; the services decide what an expired item means.
#[async_trait]
pub trait Store: Send + Sync {
    /// The subscription with this id, expired or not.
    async fn get(&self, id: &str) -> Result<Option<Subscription>>;
    /// The subscription of `account` with this callback URL, expired or not.
    async fn find_by_callback(
        &self,
        account: &str,
        callback_url: &str,
    ) -> Result<Option<Subscription>>;
    /// Writes `sub` with its callback index and a topic entry per pattern, and removes what
    /// `previous` had that `sub` no longer has. Fails with `Conflict` when the stored version is
    /// not `previous`'s (or something exists when `previous` is `None`).
    async fn save(&self, sub: &Subscription, previous: Option<&Subscription>) -> Result<()>;
    /// Removes a subscription with every item that belongs to it.
    async fn delete(&self, sub: &Subscription) -> Result<()>;
    /// A page of an account's subscriptions in creation order.
    async fn list(
        &self,
        account: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Subscription>>;
    /// The topic entries of `account` under any of `patterns` (one query per pattern).
    async fn topic_entries(&self, account: &str, patterns: &[String]) -> Result<Vec<TopicEntry>>;
    /// Claims an idempotency key until `expires_at_ms`; `false` when already claimed.
    async fn claim_event_key(
        &self,
        account: &str,
        key: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<bool>;
    /// Gives up a claim (the event could not be queued).
    async fn release_event_key(&self, account: &str, key: &str) -> Result<()>;
    /// Removes a subscription the sweeper found lapsed, with its topic entries and callback
    /// index, unless it changed since (a refresh): `false` then. Its delivery log is left to TTL.
    async fn remove_lapsed(&self, sub: &Subscription) -> Result<bool>;
    /// Subscriptions whose [`Subscription::sweep_at_ms`] has come by `now_ms`, found through an
    /// index by time bucket: the cost grows with what is due, not with the table.
    async fn due_for_sweep(&self, now_ms: i64) -> Result<Vec<Subscription>>;
    /// Appends to a subscription's delivery log.
    async fn record_attempt(&self, attempt: &AttemptRecord, expires_at_ms: i64) -> Result<()>;
    /// The most recent attempts, newest first.
    async fn attempts(&self, subscription_id: &str, limit: usize) -> Result<Vec<AttemptRecord>>;
    /// Notes the outcome of a delivery: a success adds one to the odometer and clears the
    /// failure streak; a failure starts the streak at `now_ms` unless one is running. Returns
    /// since when the subscription has been failing, if it is.
    async fn record_outcome(
        &self,
        subscription_id: &str,
        delivered: bool,
        now_ms: i64,
    ) -> Result<Option<i64>>;
}

/// A message to enqueue.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// The JSON body.
    pub body: String,
    /// Delay before it becomes visible (SQS caps it at 15 min).
    pub delay: Duration,
}

/// A message received from a queue by a poller.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    /// Stable message id.
    pub id: String,
    /// Handle to acknowledge or postpone it.
    pub receipt: String,
    /// The JSON body.
    pub body: String,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
}

/// A work queue with SQS semantics: at-least-once, visibility timeouts, a dead-letter queue after
/// a number of receives.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Enqueues messages (batched by the adapter as the service allows).
    async fn send(&self, messages: Vec<OutgoingMessage>) -> Result<()>;
    /// Waits up to `wait` for up to `max` visible messages.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>>;
    /// Removes a processed message.
    async fn ack(&self, receipt: &str) -> Result<()>;
    /// Makes a message visible again after `delay` (a retry), counting toward the dead-letter limit.
    async fn postpone(&self, receipt: &str, delay: Duration) -> Result<()>;
}

/// The outcome of one HTTP delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportOutcome {
    /// The status code, when the receiver answered.
    pub status: Option<u16>,
    /// `Retry-After` of a 429 or 503, when given in seconds or as an HTTP date.
    pub retry_after: Option<Duration>,
    /// The error kind when there was no (complete) answer: `timeout`, `connect`, `tls`,
    /// `forbidden_target`, `body`.
    pub error: Option<String>,
    /// Wall time of the attempt.
    pub latency: Duration,
}

/// Sends one signed webhook request.
#[async_trait]
pub trait Transport: Send + Sync {
    /// POSTs `body` to `url` with `headers`, within the attempt budget.
    async fn post(
        &self,
        url: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> TransportOutcome;
}
