//! The ports: what the services need from the outside world. Each has an in-memory adapter (the
//! embedded mode and tests) and an AWS adapter (DynamoDB, SQS), plus the HTTP transport.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::model::{
    AttemptError, AttemptRecord, DeliveredTally, KeptDelivery, KeptEvent, KeptState, Subscription,
    SubscriptionStatus, TopicEntry,
};
use crate::topic::Pattern;

/// One page of a listing.
#[derive(Debug, Default)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts, if there is one.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The page rule every store follows: read one item more than `limit`; if it came, the page
    /// is cut to `limit` and the next one starts after its last item (`cursor_of`).
    pub fn from_overfetch(
        mut items: Vec<T>,
        limit: usize,
        cursor_of: impl Fn(&T) -> String,
    ) -> Self {
        let next_cursor = (items.len() > limit).then(|| {
            items.truncate(limit);
            items.last().map(&cursor_of).unwrap_or_default()
        });
        Page { items, next_cursor }
    }
}

/// The keys concern of storage: the hub's own small named values (the wrapped data keys, the
/// portal's sealed session keys), shared by every process of a deployment without
/// configuration. Every adapter passes the same contract (`tests/it/keys.rs`).
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// What is stored under `name`, if anything.
    async fn key(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Stores `fresh` under `name` unless something is there already, and returns what is
    /// there afterwards: the first call anywhere wins, every later one reads the winner's.
    async fn hub_key(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>>;
    /// Replaces what is under `name` with `value` if it is still `expected`: `false` (and
    /// nothing written) when another writer got there first.
    async fn replace_key(&self, name: &str, expected: &[u8], value: &[u8]) -> Result<bool>;
}

/// The master key: wraps and unwraps the data keys secrets are sealed with (a key file or an
/// environment key on `serve`, a KMS key on AWS). It is called once per data key per process,
/// never per secret.
#[async_trait]
pub trait MasterKey: Send + Sync {
    /// Names this master key, stored beside every wrapping it makes (a fingerprint of a local
    /// key, `kms:` and the key id of a KMS key): never the key itself.
    fn id(&self) -> &str;
    /// Whether a wrapping made by the master key named `id` is one this key may open.
    fn opens(&self, id: &str) -> bool {
        self.id() == id
    }
    /// `data_key` wrapped (encrypted and authenticated).
    async fn wrap(&self, data_key: &[u8]) -> Result<Vec<u8>>;
    /// The data key inside `wrapped`; an error when this master key did not wrap it.
    async fn unwrap(&self, wrapped: &[u8]) -> Result<Vec<u8>>;
}

/// Whose events a history query selects within its account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every event of the account (the platform's own callers).
    Everyone,
    /// The events addressed to this owner (the platform filtering by customer).
    AddressedTo(String),
    /// What a customer's subscriptions may receive: the events addressed to it and broadcasts
    /// (a caller bound to the customer).
    Customer(String),
}

/// A history query: one account's kept events in a time window, filtered, a page at a time.
#[derive(Debug, Clone)]
pub struct EventQuery {
    /// The account.
    pub account: String,
    /// Only events under this pattern.
    pub topic: Option<Pattern>,
    /// Whose events.
    pub audience: Audience,
    /// Only events fanned out to this subscription.
    pub subscription_id: Option<String>,
    /// Published at or after this time, Unix ms.
    pub since_ms: i64,
    /// Published before this time, Unix ms.
    pub until_ms: i64,
    /// Continue after this event id (the previous page's `next_cursor`).
    pub cursor: Option<String>,
    /// Most events on the page.
    pub limit: usize,
    /// Oldest first (`recover`'s order) rather than newest first (the listing's).
    pub oldest_first: bool,
    /// Now, Unix ms: an event past its `until_ms` is absent (a TTL may not have removed it yet).
    pub now_ms: i64,
}

/// Most kept events a history query reads for one page: a page that found fewer matches
/// within them ends early with a cursor, so a selective filter never makes one call long.
pub const HISTORY_SCAN: usize = 1000;

impl EventQuery {
    /// Whether a kept event read in the query's window and order belongs on its page: the one
    /// filter every store applies (after reading by account, time and order).
    pub fn matches(&self, kept: &KeptEvent) -> bool {
        let event = &kept.event;
        event.account == self.account
            && kept.until_ms > self.now_ms
            && (self.since_ms..self.until_ms).contains(&event.timestamp_ms)
            && self.topic.as_ref().is_none_or(|p| p.covers(&event.topic))
            && match &self.audience {
                Audience::Everyone => true,
                Audience::AddressedTo(owner) => event.owner.as_deref() == Some(owner),
                Audience::Customer(owner) => event.is_for(Some(owner)),
            }
            && self
                .subscription_id
                .as_ref()
                .is_none_or(|id| kept.subscriptions.iter().any(|s| s == id))
    }

    /// The event ids the query reads between, in id order (ids are time-ordered): from the
    /// window's start (or after the cursor, oldest first) up to the window's end (or before the
    /// cursor, newest first).
    pub fn id_bounds(&self) -> (std::ops::Bound<String>, std::ops::Bound<String>) {
        use std::ops::Bound::{Excluded, Included};
        let at = |ms: i64| format!("evt_{:012x}", ms.clamp(0, 0xffff_ffff_ffff));
        let (mut low, mut high) = (Included(at(self.since_ms)), Excluded(at(self.until_ms)));
        if let Some(cursor) = &self.cursor {
            if self.oldest_first {
                low = Excluded(cursor.clone());
            } else {
                high = Excluded(cursor.clone());
            }
        }
        (low, high)
    }

    /// The page of what a store read (in the query's order, at most [`HISTORY_SCAN`] + 1
    /// events): the matches up to `limit`, and a cursor when more may follow (the page is full
    /// and more were read, or the scan bound was reached).
    pub fn page_of(&self, read: Vec<KeptEvent>) -> Page<KeptEvent> {
        let scanned_all = read.len() <= HISTORY_SCAN;
        let mut items = Vec::new();
        let mut last_read: Option<String> = None;
        for kept in read.into_iter().take(HISTORY_SCAN) {
            if items.len() == self.limit {
                // One more match exists beyond the page: the page ends at its last item.
                if self.matches(&kept) {
                    let next = items.last().map(|k: &KeptEvent| k.event.id.clone());
                    return Page {
                        items,
                        next_cursor: next,
                    };
                }
                last_read = Some(kept.event.id.clone());
                continue;
            }
            last_read = Some(kept.event.id.clone());
            if self.matches(&kept) {
                items.push(kept);
            }
        }
        let next_cursor = if scanned_all { None } else { last_read };
        Page { items, next_cursor }
    }
}

/// The history concern of storage: events kept with their payloads for the retention, read back
/// by id and by query. Every adapter passes the same contract (`tests/it/history.rs`).
#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// Keeps `events` (a repeat of an event id replaces it: fan-out may run twice). Owned, so a
    /// store in memory keeps them without a copy.
    async fn keep_events(&self, events: Vec<KeptEvent>) -> Result<()>;
    /// The kept event with this id in `account`, if it is kept and not past its `until_ms`
    /// at `now_ms`.
    async fn kept_event(
        &self,
        account: &str,
        event_id: &str,
        now_ms: i64,
    ) -> Result<Option<KeptEvent>>;
    /// What the store reads for `query`: kept events of the account in its window and order,
    /// after its cursor, at most [`HISTORY_SCAN`] + 1 of them (filters applied or not; the
    /// caller pages them with [`EventQuery::page_of`]).
    async fn scan_events(&self, query: &EventQuery) -> Result<Vec<KeptEvent>>;
    /// Drops kept events past their `until_ms` at `now_ms` and, beyond the newest `max_events`,
    /// the oldest ones: for stores without a TTL of their own (DynamoDB's TTL needs nothing).
    async fn trim_events(&self, _now_ms: i64, _max_events: u64) -> Result<()> {
        Ok(())
    }
}

/// Where a subscription's pace (its limit's schedule and its back-off, [`crate::pacing`]) is
/// kept: beside the subscription, read with it (`Subscription::pace`), and changed only by a
/// swap over the version it was read at, so concurrent sender batches (several Lambda
/// invocations at once) book from one schedule and a save of the subscription never
/// overwrites it.
#[async_trait]
pub trait PaceStore: Send + Sync {
    /// Replaces the pace of `subscription_id` by `pace` if its stored version is `expected`
    /// (`None`: it has none yet); `false` when it changed meanwhile or the subscription is gone.
    async fn swap_pace(
        &self,
        subscription_id: &str,
        expected: Option<u64>,
        pace: &crate::pacing::Pace,
    ) -> Result<bool>;
}

/// The catalog concern of storage: each account's event types and its catalog settings
/// (docs/catalog.md). A catalog is small (at most [`crate::catalog::MAX_EVENT_TYPES`] types)
/// and read whole. Every adapter passes the same contract (`tests/it/catalog.rs`).
#[async_trait]
pub trait CatalogStore: Send + Sync {
    /// Every event type of `account` (archived ones included), in topic order, and its
    /// settings; read strongly, so a change is seen by the next read anywhere.
    async fn catalog(&self, account: &str) -> Result<crate::catalog::StoredCatalog>;
    /// Writes `event_type` into `account`'s catalog, replacing the type of the same topic.
    async fn put_event_type(
        &self,
        account: &str,
        event_type: &crate::catalog::EventType,
    ) -> Result<()>;
    /// Replaces `account`'s catalog settings.
    async fn put_catalog_settings(
        &self,
        account: &str,
        settings: &crate::catalog::CatalogSettings,
    ) -> Result<()>;
}

/// Storage of subscriptions, their fan-out entries, event ids and delivery logs.
///
/// Adapters store what they are given; the services decide what an expired item means.
#[async_trait]
pub trait Store: KeyStore + HistoryStore + PaceStore + CatalogStore + Send + Sync {
    /// The subscription with this id, expired or not.
    async fn get(&self, id: &str) -> Result<Option<Subscription>>;
    /// The same, possibly a moment stale (DynamoDB's eventually consistent read: half the read
    /// units). For the sender's happy path only: a decision not to deliver is always taken on
    /// [`Store::get`]. Stores without a cheaper read answer as `get` does.
    async fn get_eventually(&self, id: &str) -> Result<Option<Subscription>> {
        self.get(id).await
    }
    /// The subscription with this callback URL among those of `account` bound to `bound_to`
    /// (`None`: the account-wide ones), expired or not. A callback URL is unique within each
    /// of these namespaces, not across them: one customer's registration never holds another's.
    async fn find_by_callback(
        &self,
        account: &str,
        bound_to: Option<&str>,
        callback_url: &str,
    ) -> Result<Option<Subscription>>;
    /// Writes `sub` with its callback index and a topic entry per pattern, and removes what
    /// `previous` had that `sub` no longer has. Fails with `Conflict` when the stored version is
    /// not `previous`'s (or something exists when `previous` is `None`).
    async fn save(&self, sub: &Subscription, previous: Option<&Subscription>) -> Result<()>;
    /// Removes a subscription with every item that belongs to it.
    async fn delete(&self, sub: &Subscription) -> Result<()>;
    /// A page of an account's subscriptions in creation order after the id `cursor`: all of
    /// them when `bound_to` is `None`, else only those bound to that owner (read through an
    /// index of their own, so a customer's page costs what its own subscriptions cost).
    async fn list(
        &self,
        account: &str,
        bound_to: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Subscription>>;
    /// How many subscriptions `account` holds (lapsed ones not yet swept included).
    async fn count_subscriptions(&self, account: &str) -> Result<usize>;
    /// One page (at most `limit`) of the topic entries of `account` under `pattern`, in
    /// subscription-id order after `cursor`: fan-out reads them page by page. It must see every
    /// subscription change answered before it (a subscriber confirmed before an event was
    /// published receives it); it need not see writes nobody waited for.
    async fn topic_entries(
        &self,
        account: &str,
        pattern: &Pattern,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<TopicEntry>>;
    /// Claims a producer's idempotency key for `claim.event_id` (see [`KeyClaim`]).
    async fn claim_event_key(&self, claim: &KeyClaim) -> Result<ClaimOutcome>;
    /// Marks a claim as queued: from now on the key answers [`ClaimOutcome::Queued`].
    async fn mark_event_key_queued(&self, account: &str, key: &str, event_id: &str) -> Result<()>;
    /// Gives up a claim that is still `event_id`'s and not queued (the event could not be queued).
    async fn release_event_key(&self, account: &str, key: &str, event_id: &str) -> Result<()>;
    /// Removes a subscription with its topic entries and callback index unless it changed since
    /// `sub` was read (its version moved on): `false` then. The sweeper removes lapsed
    /// subscriptions with it, the sender those whose receiver answered `410`. Its delivery log
    /// is left to TTL.
    async fn remove_if_unchanged(&self, sub: &Subscription) -> Result<bool>;
    /// Subscriptions whose [`Subscription::sweep_at_ms`] has come by `now_ms`, found through an
    /// index by time bucket: the cost grows with what is due, not with the table.
    async fn due_for_sweep(&self, now_ms: i64) -> Result<Vec<Subscription>>;
    /// Appends attempts of one subscription (one batch's, in the order made) to its delivery
    /// log, in one write where the store can (DynamoDB: one item), kept until `expires_at_ms`.
    async fn record_attempts(&self, attempts: &[AttemptRecord], expires_at_ms: i64) -> Result<()>;
    /// The most recent attempts, newest first.
    async fn attempts(&self, subscription_id: &str, limit: usize) -> Result<Vec<AttemptRecord>>;
    /// The attempts of one delivery (`event_id`, published at `event_ms`) still in the log,
    /// oldest first. By default read from the log's newest [`ATTEMPTS_SEARCHED`].
    async fn attempts_of_event(
        &self,
        subscription_id: &str,
        event_id: &str,
        _event_ms: i64,
    ) -> Result<Vec<AttemptRecord>> {
        let mut found: Vec<AttemptRecord> = self
            .attempts(subscription_id, ATTEMPTS_SEARCHED)
            .await?
            .into_iter()
            .filter(|a| a.message_id == event_id)
            .collect();
        found.reverse();
        Ok(found)
    }
    /// Notes a failed delivery: starts the failure streak at `now_ms` unless one is running.
    /// Returns since when the subscription has been failing (`None` once it is gone).
    async fn record_failure(&self, subscription_id: &str, now_ms: i64) -> Result<Option<i64>>;
    /// Folds successful deliveries into their subscriptions' odometers, one write per
    /// subscription: adds the count, sets the last delivery, ends the failure streak where the
    /// tally says so. A tally with a stream span already folded is skipped; a subscription gone
    /// meanwhile is skipped.
    async fn add_delivered(&self, tallies: &[DeliveredTally]) -> Result<()>;
    /// Keeps `kept` with its subscription, replacing what was kept for the same event; it
    /// lives until [`KeptDelivery::expires_at_ms`] or until the subscription is deleted.
    async fn keep_delivery(&self, kept: &KeptDelivery) -> Result<()>;
    /// What `subscription_id` keeps for `event_id`, if anything.
    async fn kept_delivery(
        &self,
        subscription_id: &str,
        event_id: &str,
    ) -> Result<Option<KeptDelivery>>;
    /// A page (at most `limit`) of the deliveries `subscription_id` keeps in `state`, in event
    /// order (event ids are time-ordered) after the event id `cursor`.
    async fn kept_deliveries(
        &self,
        subscription_id: &str,
        state: KeptState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<KeptDelivery>>;
    /// Drops what `subscription_id` keeps for `event_id` (delivered, or gone with it).
    async fn forget_delivery(&self, subscription_id: &str, event_id: &str) -> Result<()>;
    /// How many subscriptions there are in each status (lapsed ones included until swept), for
    /// the metrics; `None` where counting would mean reading the whole table (DynamoDB).
    async fn count_by_status(&self) -> Result<Option<Vec<(SubscriptionStatus, u64)>>> {
        Ok(None)
    }
    /// Drops what has outlived its window (idempotency keys, delivery logs, kept deliveries) and gives the space
    /// back, for stores that have no TTL of their own; the sweeper calls it after each sweep.
    /// DynamoDB's TTL and the memory store's own pruning need nothing here.
    async fn prune(&self, _now_ms: i64) -> Result<()> {
        Ok(())
    }
    /// Takes one use of the allowance `key` in the fixed window of `window_ms` that holds
    /// `now_ms`: `true` while fewer than `limit` were taken in that window (and counts this
    /// one), `false` once it is used up (and counts nothing). Kept until the window ends.
    async fn take_allowance(
        &self,
        key: &str,
        now_ms: i64,
        window_ms: i64,
        limit: u32,
    ) -> Result<bool>;
}

/// How many of a subscription's newest attempts a delivery's attempts are looked for in.
pub const ATTEMPTS_SEARCHED: usize = 1000;

/// A producer's idempotency key being claimed by a publish.
#[derive(Debug, Clone)]
pub struct KeyClaim {
    /// The publishing account.
    pub account: String,
    /// The producer's `id`.
    pub key: String,
    /// The event id this publish would queue.
    pub event_id: String,
    /// Now, Unix ms.
    pub now_ms: i64,
    /// Until when an unqueued claim holds; after that it counts as abandoned and may be re-taken.
    pub claim_until_ms: i64,
    /// Until when a queued key drops repeats (the idempotency window).
    pub window_until_ms: i64,
}

/// What claiming an idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key is ours: queue the event, then mark the key queued.
    Claimed,
    /// Another publish holds the key and has not queued its event yet: retry after this long.
    InFlight {
        /// How long until that claim is queued or abandoned, ms.
        retry_after_ms: i64,
    },
    /// An event was queued under this key within the window: a repeat.
    Queued {
        /// The id of the queued event.
        event_id: String,
    },
}

/// A message to enqueue.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// The JSON body.
    pub body: String,
    /// Delay before it becomes visible (SQS caps it at 15 min).
    pub delay: Duration,
    /// Its ordered group, if any: a message of a group is handed out only once every earlier
    /// message of the group is gone (acknowledged or dead-lettered), one at a time, like an SQS
    /// FIFO queue's message group. Sent without delay.
    pub group: Option<String>,
}

/// The longest a received message can be hidden in one go: SQS allows 12 h from the receive, less
/// a margin for the time spent since.
pub const MAX_HIDE: Duration = Duration::from_secs(12 * 3600 - 300);

/// The longest delay SQS gives a message when it is sent.
pub const MAX_SEND_DELAY: Duration = Duration::from_secs(900);

/// What a queue holds, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Messages held: waiting, delayed or in flight.
    pub depth: u64,
    /// Age of the oldest message held, if any (since it was sent).
    pub oldest_age: Option<Duration>,
}

/// A message received from a queue by a poller.
#[derive(Debug, Clone, Default)]
pub struct ReceivedMessage {
    /// Stable message id.
    pub id: String,
    /// Handle to acknowledge or postpone it.
    pub receipt: String,
    /// The JSON body.
    pub body: String,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
    /// Who sent it, as the queue vouches (SQS's `SenderId`: the IAM user or role id); `None`
    /// where the queue does not say. Direct publishing maps it to an account.
    pub sender: Option<String>,
    /// When it was sent, Unix ms, where the queue says (SQS's `SentTimestamp`).
    pub sent_at_ms: Option<i64>,
    /// The producer's trace context, where the message carried one (SQS: a `traceparent`
    /// message attribute, or the `AWSTraceHeader` X-Ray sets); read by the ingest queues only.
    pub trace: Option<crate::trace::TraceParent>,
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
    /// Removes several processed messages, in as few calls as the queue allows (the embedded
    /// poller settles a batch at once).
    async fn ack_all(&self, receipts: &[String]) -> Result<()> {
        for receipt in receipts {
            self.ack(receipt).await?;
        }
        Ok(())
    }
    /// Hides a received message for `delay` more (at most [`MAX_HIDE`]); it comes back then.
    async fn postpone(&self, receipt: &str, delay: Duration) -> Result<()>;
    /// Hides several received messages for `delay` more, in as few calls as the queue allows
    /// (the embedded poller parks and renews messages by the batch). Best effort, like
    /// [`Queue::postpone`] one by one: a receipt that is no longer valid is skipped.
    async fn postpone_all(&self, receipts: &[String], delay: Duration) -> Result<()> {
        for receipt in receipts {
            self.postpone(receipt, delay).await?;
        }
        Ok(())
    }
    /// Hides received messages, each for its own `delay` (at most [`MAX_HIDE`]), in as few calls
    /// as the queue allows: the sender hides a batch's deliveries that wait for their slots so.
    /// Best effort, like [`Queue::postpone`] one by one; the first error is returned.
    async fn postpone_each(&self, holds: &[(String, Duration)]) -> Result<()> {
        // At once, as the sender hid them before (the SQLite writer commits them together).
        let hidden = futures::future::join_all(
            holds
                .iter()
                .map(|(receipt, delay)| self.postpone(receipt, *delay)),
        )
        .await;
        hidden.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
    }
    /// Keeps received messages hidden for `delay` more while this process holds them (the
    /// embedded poller's parked messages), where [`Queue::postpone_all`] delays them on purpose
    /// (a retry). The SQLite queue shows held messages again at once when a process restarts
    /// under the file's lock (nobody else can hold them); elsewhere this is `postpone_all`.
    async fn hold_all(&self, receipts: &[String], delay: Duration) -> Result<()> {
        self.postpone_all(receipts, delay).await
    }
    /// Puts a message body on this queue's dead-letter queue (an exhausted or unreadable
    /// message, kept for inspection and redrive).
    async fn dead_letter(&self, body: String) -> Result<()>;
    /// Drops what its dead-letter queue received before `before_ms` (Unix ms): the retention,
    /// enforced by the sweeper for queues that have none of their own. Returns how many went.
    /// SQS keeps dead letters for the queue's `MessageRetentionPeriod` and needs nothing here.
    async fn prune_dead_letters(&self, _before_ms: i64) -> Result<u64> {
        Ok(0)
    }
    /// How many messages it holds and how old the oldest is, for the metrics; `None` where the
    /// queue cannot say cheaply.
    async fn stats(&self) -> Result<Option<QueueStats>> {
        Ok(None)
    }
}

/// The outcome of one HTTP delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportOutcome {
    /// The status code, when the receiver answered.
    pub status: Option<u16>,
    /// `Retry-After` of a 429 or 503, when given in seconds or as an HTTP date.
    pub retry_after: Option<Duration>,
    /// Why there was no (complete) answer, if there was none.
    pub error: Option<AttemptError>,
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
    /// The same within `budget` instead (a subscription's own timeout). Transports without a
    /// budget of their own (test doubles) post as [`Transport::post`] does.
    async fn post_within(
        &self,
        url: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
        _budget: Duration,
    ) -> TransportOutcome {
        self.post(url, headers, body).await
    }
}
