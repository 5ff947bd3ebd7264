//! The context every service call gets: the [`Hub`] (the ports wired together) and its
//! [`Settings`].

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::ports::{Queue, Store, Transport};
use crate::retry::RetrySchedule;

/// Settings shared by every function and the embedded mode.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL of the API, for confirmation links (no trailing slash).
    pub public_url: String,
    /// Lets callbacks use `http` and reach loopback and private addresses (development only).
    pub allow_private_targets: bool,
    /// Delays between delivery attempts.
    pub retry: RetrySchedule,
    /// How long deliveries may keep failing before the subscription is disabled.
    pub disable_after: Duration,
    /// How long deliveries may keep failing before the account is warned
    /// (`hub.subscription.failing`), once per streak.
    pub warn_after: Duration,
    /// Budget of one delivery attempt, all included.
    pub attempt_timeout: Duration,
    /// How long an ordered subscription's delivery waits after its event was published
    /// (docs/design.md, "Ordered delivery").
    pub order_settle: Duration,
    /// Whether callback host names are looked up in DNS (off in the embedded test mode, so that
    /// fuzzed callbacks never make the hub send a query off the machine).
    pub resolve_names: bool,
    /// Most subscriptions one account may hold (fan-out reads each matching one per event).
    pub max_subscriptions_per_account: usize,
    /// Most subscriptions bound to one owner (a customer), pending ones included.
    pub max_subscriptions_per_owner: usize,
    /// Most confirmation requests the hub sends per hour for the subscriptions bound to one
    /// owner, so a customer cannot make it POST at third parties.
    pub confirmations_per_owner_hour: u32,
    /// Topic entries fan-out reads per store page (its memory holds one page and one batch).
    pub fanout_page: usize,
    /// Which attempts the delivery log keeps.
    pub delivery_log: DeliveryLog,
    /// Who folds successful deliveries into the odometer.
    pub odometer_fold: OdometerFold,
    /// How long delivery logs, kept deliveries and dead letters are kept (the sweeper drops
    /// them after it on SQLite and in memory, TTL and the queues' retention on AWS).
    pub retention: Duration,
    /// Whether events are kept in the history for the retention (`docs/operations.md`, "Event
    /// history"): fan-out writes one record per event.
    pub history: bool,
    /// Most events the history holds on stores without a TTL (SQLite, memory): the sweeper
    /// drops the oldest beyond it.
    pub history_max_events: u64,
    /// Direct publishing: the account each ingest-queue sender (SQS `SenderId`, an IAM user or
    /// role id) publishes to. A sender not listed publishes nothing.
    pub ingest_senders: std::collections::BTreeMap<String, String>,
}

/// Which delivery attempts are stored one by one in a subscription's delivery log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DeliveryLog {
    /// Every attempt (the default).
    #[default]
    Full,
    /// Failed attempts only; successes are counted (the odometer) but not stored one by one,
    /// which saves a write per delivery. Failures are always stored.
    Lean,
}

/// Who folds successful deliveries into the odometer (`docs/design.md`, "The odometer").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OdometerFold {
    /// The sender, after each batch of deliveries: one write per subscription per batch (the
    /// embedded modes, and any deployment without the stream).
    #[default]
    Batch,
    /// The `fold` function, from the delivery log's DynamoDB stream (the AWS template): the
    /// sender writes nothing but the log for a success. Successes a lean log does not store
    /// are still folded by the sender after each batch.
    Stream,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            public_url: "http://127.0.0.1:3000".into(),
            allow_private_targets: false,
            retry: RetrySchedule::default(),
            disable_after: Duration::from_secs(24 * 3600),
            warn_after: Duration::from_secs(3600),
            attempt_timeout: Duration::from_secs(5),
            order_settle: crate::service::ordered::SETTLE,
            resolve_names: true,
            max_subscriptions_per_account: 1000,
            max_subscriptions_per_owner: 25,
            confirmations_per_owner_hour: 50,
            fanout_page: crate::service::events::FANOUT_PAGE,
            delivery_log: DeliveryLog::Full,
            odometer_fold: OdometerFold::Batch,
            ingest_senders: Default::default(),
            retention: DEFAULT_RETENTION,
            history: true,
            history_max_events: DEFAULT_HISTORY_MAX_EVENTS,
        }
    }
}

/// The default retention of delivery logs, kept deliveries and dead letters: the longest lease.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(crate::model::MAX_LEASE_SECS as u64);
/// The default bound on the events the history holds where nothing else bounds it (SQLite,
/// memory): about 1 GB of SQLite file at 1 KB an event.
pub const DEFAULT_HISTORY_MAX_EVENTS: u64 = 1_000_000;
/// The longest retention (what SQS keeps a message at most).
pub const MAX_RETENTION: Duration = Duration::from_secs(14 * 86_400);

/// Everything a service call needs: storage, the two queues, the HTTP transport, the clock.
#[derive(Clone)]
pub struct Hub {
    /// Subscriptions and their indexes.
    pub store: Arc<dyn Store>,
    /// publish → fanout.
    pub events: Arc<dyn Queue>,
    /// fanout and subscribe → sender.
    pub deliveries: Arc<dyn Queue>,
    /// fanout → sender for subscriptions delivered in order, each in its own message group: an
    /// SQS FIFO queue on AWS; the deliveries queue itself on the embedded backends, whose
    /// queues keep groups.
    pub ordered: Arc<dyn Queue>,
    /// Sends webhook requests.
    pub transport: Arc<dyn Transport>,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Settings.
    pub settings: Arc<Settings>,
    /// The process's metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The queues producers inside AWS publish to without the API, where deployed.
    pub ingest: IngestQueues,
    /// Seals and opens stored secrets; holds the portal's session keys.
    pub keys: Arc<crate::keyring::Keyring>,
    /// Successful deliveries waiting for the odometer's fold.
    pub pending_tallies: Arc<crate::service::odometer::PendingTallies>,
    /// This process's last request to each paced subscription (their spacing).
    pub spacing: Arc<crate::pacing::SendSpacing>,
    /// This process's copies of the account catalogs publish checks events against.
    pub catalogs: Arc<crate::service::catalog::Catalogs>,
}

/// The direct-publishing queues (`docs/ingest.md`): each is read by the fan-out, which
/// publishes what it may and dead-letters the rest.
#[derive(Clone, Default)]
pub struct IngestQueues {
    /// `SendMessage`/`SendMessageBatch` by IAM principals; the account comes from the sender.
    pub direct: Option<Arc<dyn Queue>>,
    /// The target of the EventBridge rule; the account comes from the event's `source`, which
    /// the bus policy binds to the principals allowed to put it.
    pub bus: Option<Arc<dyn Queue>>,
}

impl Hub {
    /// Now, in Unix ms.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Until when something written at `now_ms` is retained (the retention).
    pub fn retained_until(&self, now_ms: i64) -> i64 {
        now_ms + self.settings.retention.as_millis() as i64
    }
}
