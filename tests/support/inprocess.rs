//! A hub built in the test process on any backend, with ports that fail on command: for the
//! scenarios whose trigger is a failure (a queue that refuses a send, a store that errs once), or
//! whose evidence is what went onto a queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hub::adapters::dynamodb::DynamoStore;
use hub::adapters::http::HttpTransport;
use hub::adapters::memory::{MemoryQueue, MemoryStore};
use hub::adapters::sqlite::{Durability, SqliteDb, SqliteQueue, SqliteStore};
use hub::adapters::sqs::SqsQueue;
use hub::clock::SystemClock;
use hub::model::{
    AttemptRecord, DeliveredTally, KeptDelivery, KeptEvent, KeptState, Subscription, TopicEntry,
};
use hub::ports::{
    ClaimOutcome, EventQuery, HistoryStore, KeyClaim, KeyStore, OutgoingMessage, PaceStore, Page,
    Queue, ReceivedMessage, Store,
};
use hub::runtime::consume::{QueueRole, consume};
use hub::topic::Pattern;
use hub::{Hub, HubError, Result, Settings};

use crate::{Backend, unique};

/// A hub in this process, its ports wrapped so a test can make them fail and see what was sent.
pub struct InProcess {
    /// The hub (its store, queues and clock are the wrappers below).
    pub hub: Hub,
    /// The clock the hub reads.
    pub clock: Arc<SystemClock>,
    /// The store, failing on command.
    pub store: Arc<FlakyStore>,
    /// The events queue, failing on command and recording what it is sent.
    pub events: Arc<FlakyQueue>,
    /// The deliveries queue, likewise.
    pub deliveries: Arc<FlakyQueue>,
    /// The deliveries queue's dead-letter queue.
    pub deliveries_dead: Arc<dyn Queue>,
    /// The DynamoDB table on moto (the AWS backend only).
    pub table: Option<String>,
}

/// The store, the events and deliveries queues, and the deliveries' dead-letter queue.
type Ports = (
    Arc<dyn Store>,
    Arc<dyn Queue>,
    Arc<dyn Queue>,
    Arc<dyn Queue>,
);

/// How long a received message stays hidden in the in-process queues: short, so a message whose
/// processing failed comes back within the test.
pub const IN_PROCESS_VISIBILITY: Duration = Duration::from_secs(1);
/// The KMS key (on moto) the in-process AWS hubs seal their secrets under.
pub const TEST_KMS_KEY: &str = "alias/webhook-hub-tests";

impl InProcess {
    /// A hub on `backend` (fresh table and queues on moto for `Aws`), private targets allowed.
    pub async fn start(backend: Backend, settings: Settings) -> InProcess {
        let settings = Settings {
            allow_private_targets: true,
            ..settings
        };
        let mut table = None;
        let (store, events, deliveries, deliveries_dead): Ports = match backend {
            Backend::Memory => {
                let dead = Arc::new(MemoryQueue::new(IN_PROCESS_VISIBILITY, u32::MAX, None));
                let events_dead = Arc::new(MemoryQueue::new(IN_PROCESS_VISIBILITY, u32::MAX, None));
                (
                    Arc::new(MemoryStore::default()),
                    Arc::new(MemoryQueue::new(
                        IN_PROCESS_VISIBILITY,
                        5,
                        Some(events_dead),
                    )),
                    Arc::new(MemoryQueue::new(
                        IN_PROCESS_VISIBILITY,
                        30,
                        Some(dead.clone()),
                    )),
                    dead,
                )
            }
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{}.db", unique("inproc")));
                let db = SqliteDb::open(&path, Durability::Normal).expect("database opens");
                let queue = |name: &str, limit: u32, dead: Option<&str>| {
                    SqliteQueue::new(db.clone(), name, IN_PROCESS_VISIBILITY, limit, dead)
                };
                let dead = Arc::new(queue("deliveries-dlq", u32::MAX, None));
                (
                    Arc::new(SqliteStore::new(db.clone())),
                    Arc::new(queue("events", 5, Some("events-dlq"))),
                    Arc::new(queue("deliveries", 30, Some("deliveries-dlq"))),
                    dead,
                )
            }
            Backend::Aws => {
                let name = unique("inproc");
                let (dynamo, sqs) = hub::runtime::aws_clients(None).await;
                let store = DynamoStore::new(dynamo, &name);
                store.ensure_table().await.expect("table");
                table = Some(name.clone());
                let events = SqsQueue::ensure(
                    sqs.clone(),
                    &format!("{name}-events"),
                    IN_PROCESS_VISIBILITY,
                    5,
                )
                .await
                .expect("events queue");
                let deliveries = SqsQueue::ensure(
                    sqs.clone(),
                    &format!("{name}-deliveries"),
                    IN_PROCESS_VISIBILITY,
                    30,
                )
                .await
                .expect("deliveries queue");
                let dead = SqsQueue::open(sqs, &format!("{name}-deliveries-dlq"))
                    .await
                    .expect("dead-letter queue");
                (
                    Arc::new(store),
                    Arc::new(events),
                    Arc::new(deliveries),
                    Arc::new(dead),
                )
            }
        };
        let master: Arc<dyn hub::ports::MasterKey> = match table {
            Some(_) => {
                hub::runtime::ensure_kms_key(TEST_KMS_KEY)
                    .await
                    .expect("KMS key");
                Arc::new(hub::runtime::kms_master_key(TEST_KMS_KEY, None).await)
            }
            None => Arc::new(hub::adapters::master_key::LocalMasterKey::generate()),
        };
        let store = Arc::new(FlakyStore::new(store));
        let events = Arc::new(FlakyQueue::wrap(events));
        let deliveries = Arc::new(FlakyQueue::wrap(deliveries));
        let clock = Arc::new(SystemClock::default());
        let hub = Hub {
            keys: Arc::new(hub::keyring::Keyring::new(master, store.clone())),
            store: store.clone(),
            events: events.clone(),
            deliveries: deliveries.clone(),
            // Ordered deliveries are tested through `serve` (on AWS, its FIFO queue).
            ordered: deliveries.clone(),
            transport: Arc::new(HttpTransport::new(
                true,
                settings.attempt_timeout,
                settings.resolve_names,
            )),
            clock: clock.clone(),
            settings: Arc::new(settings),
            metrics: Arc::default(),
            ingest: Default::default(),
            pending_tallies: Default::default(),
            spacing: Default::default(),
            catalogs: Default::default(),
        };
        InProcess {
            hub,
            clock,
            store,
            events,
            deliveries,
            deliveries_dead,
            table,
        }
    }

    /// Receives and processes messages of `role`'s queue, acknowledging what is done, until
    /// nothing has arrived for `idle`.
    pub async fn drain(&self, role: QueueRole, idle: Duration) {
        let queue: Arc<dyn Queue> = match role {
            QueueRole::Events => self.events.clone(),
            QueueRole::Deliveries | QueueRole::Ordered => self.deliveries.clone(),
            QueueRole::Ingest(_) => hub::runtime::consume::queue_of(&self.hub, role),
        };
        let mut quiet_since = std::time::Instant::now();
        while quiet_since.elapsed() < idle {
            let batch = queue
                .receive(10, Duration::from_millis(500))
                .await
                .expect("receive");
            if !batch.is_empty() {
                quiet_since = std::time::Instant::now();
            }
            for msg in batch {
                if consume(&self.hub, role, &msg).await {
                    queue.ack(&msg.receipt).await.expect("ack");
                }
            }
        }
    }

    /// Every message now on the deliveries dead-letter queue (received and left there).
    pub async fn dead_letters(&self) -> Vec<serde_json::Value> {
        let mut bodies = Vec::new();
        loop {
            let batch = self
                .deliveries_dead
                .receive(10, Duration::from_millis(300))
                .await
                .expect("receive dead letters");
            if batch.is_empty() {
                return bodies;
            }
            for msg in batch {
                bodies.push(serde_json::from_str(&msg.body).expect("JSON dead letter"));
                let _ = self
                    .deliveries_dead
                    .postpone(&msg.receipt, Duration::from_secs(60))
                    .await;
            }
        }
    }
}

/// A [`Store`] that fails the next `n` calls of a kind when told to, and otherwise passes every
/// call through.
pub struct FlakyStore {
    inner: Arc<dyn Store>,
    /// Failures still to inject into `get`.
    pub fail_get: AtomicUsize,
    /// Failures still to inject into `save`.
    pub fail_save: AtomicUsize,
    /// Accounts whose topic-entry reads fail.
    pub poisoned_accounts: Mutex<Vec<String>>,
    /// Callback lookups still to answer "none" (as a concurrent request that looked before
    /// another one saved would see).
    pub blind_finds: AtomicUsize,
    /// Saves still to lose a race: just before each, a concurrent writer renames the stored
    /// subscription to `racer` (a conditional save of its own), so the save finds a newer
    /// version than the one it read.
    pub race_saves: AtomicUsize,
    /// Topic-entry pages read so far.
    pub topic_reads: AtomicUsize,
    /// What the next `due_for_sweep` answers instead of asking the store: copies read before
    /// a concurrent change, as a sweep that looked just before a refresh holds.
    pub stale_sweep_reads: Mutex<Option<Vec<Subscription>>>,
    /// A subscription whose next odometer write fails while the others of the same call are
    /// written (as DynamoDB's one write per subscription can fail in part).
    pub fail_fold_of: Mutex<Option<String>>,
    /// A subscription whose next odometer write is made, then answered with an error (an
    /// answer lost on the way back, which the AWS SDK retries).
    pub lose_fold_answer_of: Mutex<Option<String>>,
}

impl FlakyStore {
    fn new(inner: Arc<dyn Store>) -> Self {
        FlakyStore {
            inner,
            fail_get: AtomicUsize::new(0),
            fail_save: AtomicUsize::new(0),
            poisoned_accounts: Mutex::new(vec![]),
            blind_finds: AtomicUsize::new(0),
            race_saves: AtomicUsize::new(0),
            topic_reads: AtomicUsize::new(0),
            stale_sweep_reads: Mutex::new(None),
            fail_fold_of: Mutex::new(None),
            lose_fold_answer_of: Mutex::new(None),
        }
    }

    /// The store under the wrapper.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }
}

/// Takes one injected failure, if any are left.
fn inject(counter: &AtomicUsize, what: &str) -> Result<()> {
    match counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
        Ok(_) => Err(HubError::backend(format!("injected {what} failure"))),
        Err(_) => Ok(()),
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn get(&self, id: &str) -> Result<Option<Subscription>> {
        inject(&self.fail_get, "get")?;
        self.inner.get(id).await
    }
    async fn find_by_callback(
        &self,
        account: &str,
        bound_to: Option<&str>,
        url: &str,
    ) -> Result<Option<Subscription>> {
        if inject(&self.blind_finds, "find").is_err() {
            return Ok(None);
        }
        self.inner.find_by_callback(account, bound_to, url).await
    }
    async fn save(&self, sub: &Subscription, previous: Option<&Subscription>) -> Result<()> {
        inject(&self.fail_save, "save")?;
        if inject(&self.race_saves, "race").is_err()
            && let Some(current) = self.inner.get(&sub.id).await?
        {
            let mut racer = current.clone();
            racer.name = Some("racer".into());
            racer.version += 1;
            self.inner.save(&racer, Some(&current)).await?;
        }
        self.inner.save(sub, previous).await
    }
    async fn delete(&self, sub: &Subscription) -> Result<()> {
        self.inner.delete(sub).await
    }
    async fn list(
        &self,
        account: &str,
        bound_to: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Subscription>> {
        self.inner.list(account, bound_to, limit, cursor).await
    }
    async fn count_subscriptions(&self, account: &str) -> Result<usize> {
        self.inner.count_subscriptions(account).await
    }
    async fn topic_entries(
        &self,
        account: &str,
        pattern: &Pattern,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<TopicEntry>> {
        self.topic_reads.fetch_add(1, Ordering::SeqCst);
        if self
            .poisoned_accounts
            .lock()
            .unwrap()
            .iter()
            .any(|a| a == account)
        {
            return Err(HubError::backend("injected topic-entry failure"));
        }
        self.inner
            .topic_entries(account, pattern, cursor, limit)
            .await
    }
    async fn claim_event_key(&self, claim: &KeyClaim) -> Result<ClaimOutcome> {
        self.inner.claim_event_key(claim).await
    }
    async fn mark_event_key_queued(&self, account: &str, key: &str, event_id: &str) -> Result<()> {
        self.inner
            .mark_event_key_queued(account, key, event_id)
            .await
    }
    async fn release_event_key(&self, account: &str, key: &str, event_id: &str) -> Result<()> {
        self.inner.release_event_key(account, key, event_id).await
    }
    async fn remove_if_unchanged(&self, sub: &Subscription) -> Result<bool> {
        self.inner.remove_if_unchanged(sub).await
    }
    async fn due_for_sweep(&self, now_ms: i64) -> Result<Vec<Subscription>> {
        if let Some(stale) = self.stale_sweep_reads.lock().unwrap().take() {
            return Ok(stale);
        }
        self.inner.due_for_sweep(now_ms).await
    }
    async fn record_attempts(&self, attempts: &[AttemptRecord], expires_at_ms: i64) -> Result<()> {
        self.inner.record_attempts(attempts, expires_at_ms).await
    }
    async fn attempts(&self, subscription_id: &str, limit: usize) -> Result<Vec<AttemptRecord>> {
        self.inner.attempts(subscription_id, limit).await
    }
    async fn record_failure(&self, id: &str, now_ms: i64) -> Result<Option<i64>> {
        self.inner.record_failure(id, now_ms).await
    }
    async fn add_delivered(&self, tallies: &[DeliveredTally]) -> Result<()> {
        let lost = {
            let mut lose = self.lose_fold_answer_of.lock().unwrap();
            let hit = lose
                .as_ref()
                .is_some_and(|id| tallies.iter().any(|t| &t.subscription_id == id));
            if hit { lose.take() } else { None }
        };
        if lost.is_some() {
            self.inner.add_delivered(tallies).await?;
            return Err(HubError::backend(
                "injected lost answer to an odometer write",
            ));
        }
        let failing = {
            let mut fail = self.fail_fold_of.lock().unwrap();
            let hit = fail
                .as_ref()
                .is_some_and(|id| tallies.iter().any(|t| &t.subscription_id == id));
            if hit { fail.take() } else { None }
        };
        let Some(failing) = failing else {
            return self.inner.add_delivered(tallies).await;
        };
        let others: Vec<DeliveredTally> = tallies
            .iter()
            .filter(|t| t.subscription_id != failing)
            .cloned()
            .collect();
        self.inner.add_delivered(&others).await?;
        Err(HubError::backend("injected odometer write failure"))
    }
    async fn keep_delivery(&self, kept: &KeptDelivery) -> Result<()> {
        self.inner.keep_delivery(kept).await
    }
    async fn kept_delivery(&self, id: &str, event_id: &str) -> Result<Option<KeptDelivery>> {
        self.inner.kept_delivery(id, event_id).await
    }
    async fn kept_deliveries(
        &self,
        id: &str,
        state: KeptState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<KeptDelivery>> {
        self.inner.kept_deliveries(id, state, cursor, limit).await
    }
    async fn forget_delivery(&self, id: &str, event_id: &str) -> Result<()> {
        self.inner.forget_delivery(id, event_id).await
    }
    async fn take_allowance(
        &self,
        key: &str,
        now_ms: i64,
        window_ms: i64,
        limit: u32,
    ) -> Result<bool> {
        self.inner
            .take_allowance(key, now_ms, window_ms, limit)
            .await
    }
}

#[async_trait]
impl hub::ports::CatalogStore for FlakyStore {
    async fn catalog(&self, account: &str) -> Result<hub::catalog::StoredCatalog> {
        self.inner.catalog(account).await
    }
    async fn put_event_type(
        &self,
        account: &str,
        event_type: &hub::catalog::EventType,
    ) -> Result<()> {
        self.inner.put_event_type(account, event_type).await
    }
    async fn put_catalog_settings(
        &self,
        account: &str,
        settings: &hub::catalog::CatalogSettings,
    ) -> Result<()> {
        self.inner.put_catalog_settings(account, settings).await
    }
}

#[async_trait]
impl PaceStore for FlakyStore {
    async fn swap_pace(
        &self,
        subscription_id: &str,
        expected: Option<u64>,
        pace: &hub::pacing::Pace,
    ) -> Result<bool> {
        self.inner.swap_pace(subscription_id, expected, pace).await
    }
}

#[async_trait]
impl HistoryStore for FlakyStore {
    async fn keep_events(&self, events: Vec<KeptEvent>) -> Result<()> {
        self.inner.keep_events(events).await
    }
    async fn kept_event(
        &self,
        account: &str,
        event_id: &str,
        now_ms: i64,
    ) -> Result<Option<KeptEvent>> {
        self.inner.kept_event(account, event_id, now_ms).await
    }
    async fn scan_events(&self, query: &EventQuery) -> Result<Vec<KeptEvent>> {
        self.inner.scan_events(query).await
    }
    async fn trim_events(&self, now_ms: i64, max_events: u64) -> Result<()> {
        self.inner.trim_events(now_ms, max_events).await
    }
}

#[async_trait]
impl KeyStore for FlakyStore {
    async fn key(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.inner.key(name).await
    }
    async fn hub_key(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>> {
        self.inner.hub_key(name, fresh).await
    }
    async fn replace_key(&self, name: &str, expected: &[u8], value: &[u8]) -> Result<bool> {
        self.inner.replace_key(name, expected, value).await
    }
}

/// A [`Queue`] that fails the next `n` sends when told to and records every send and postpone.
pub struct FlakyQueue {
    inner: Arc<dyn Queue>,
    /// Failures still to inject into `send`.
    pub fail_send: AtomicUsize,
    /// Every successful send, in order.
    pub sent: Mutex<VecDeque<Vec<OutgoingMessage>>>,
    /// Every postpone's delay, in order.
    pub postponed: Mutex<Vec<Duration>>,
}

impl FlakyQueue {
    /// `inner`, failing on command.
    pub fn wrap(inner: Arc<dyn Queue>) -> Self {
        FlakyQueue {
            inner,
            fail_send: AtomicUsize::new(0),
            sent: Mutex::new(VecDeque::new()),
            postponed: Mutex::new(vec![]),
        }
    }

    /// The sizes of the sends so far.
    pub fn send_sizes(&self) -> Vec<usize> {
        self.sent.lock().unwrap().iter().map(Vec::len).collect()
    }

    /// Every message body sent so far.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .map(|m| serde_json::from_str(&m.body).expect("JSON message"))
            .collect()
    }
}

#[async_trait]
impl Queue for FlakyQueue {
    async fn send(&self, messages: Vec<OutgoingMessage>) -> Result<()> {
        inject(&self.fail_send, "send")?;
        self.inner.send(messages.clone()).await?;
        self.sent.lock().unwrap().push_back(messages);
        Ok(())
    }
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        self.inner.receive(max, wait).await
    }
    async fn ack(&self, receipt: &str) -> Result<()> {
        self.inner.ack(receipt).await
    }
    async fn postpone(&self, receipt: &str, delay: Duration) -> Result<()> {
        self.inner.postpone(receipt, delay).await?;
        self.postponed.lock().unwrap().push(delay);
        Ok(())
    }
    async fn dead_letter(&self, body: String) -> Result<()> {
        self.inner.dead_letter(body).await
    }
}

/// An active, confirmed subscription of `account` to `topics`, as the store holds one: for
/// seeding in-process hubs without the API.
pub fn active_subscription(
    n: usize,
    account: &str,
    topics: &[&str],
    callback_url: &str,
    now_ms: i64,
    lease_ms: i64,
) -> Subscription {
    let mut sub = Subscription::new_pending(
        format!("sub_{:012x}{:016x}", now_ms, n),
        account.into(),
        account.into(),
        callback_url.into(),
        now_ms,
        hub::keyring::Sealed::plain(hub::signing::generate_secret()),
    );
    sub.topics = topics.iter().map(|t| Pattern::parse(t).unwrap()).collect();
    sub.status = hub::model::SubscriptionStatus::Active;
    sub.expires_at_ms = now_ms + lease_ms;
    sub.lease_ms = lease_ms;
    sub.confirmed_at_ms = Some(now_ms);
    sub.version = 1;
    sub
}
