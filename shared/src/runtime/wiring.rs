//! Wiring: the composition roots that build a [`Hub`] from its adapters, on AWS, on SQLite or
//! in memory, and the provisioning step that creates the AWS resources.

use std::sync::Arc;
use std::time::Duration;

use super::config::{AwsResources, QUEUE_VISIBILITY};
use crate::adapters::dynamodb::DynamoStore;
use crate::adapters::http::HttpTransport;
use crate::adapters::kms::KmsMasterKey;
use crate::adapters::master_key::LocalMasterKey;
use crate::adapters::memory::{MemoryQueue, MemoryStore};
use crate::adapters::sqs::SqsQueue;
use crate::clock::SystemClock;
use crate::context::{Hub, Settings};
use crate::error::Result;
use crate::keyring::Keyring;
use crate::ports::MasterKey;

/// Receives after which the deliveries queue's redrive moves a message to its dead-letter
/// queue. Attempts are counted in the message itself, so this only guards against a message
/// that can never be processed: enough for a 7-day `Retry-After` hidden 12 h at a time (15
/// receives) plus store outages. `template.yaml` sets the same.
pub const DELIVERY_RECEIVE_LIMIT: u32 = 30;
/// Receives after which the events queue's redrive moves a message to its dead-letter queue.
pub const EVENTS_RECEIVE_LIMIT: u32 = 5;

/// DynamoDB and SQS clients from the standard AWS environment, counting their calls into
/// `counter` when one is given (benchmarks and cost tests).
pub async fn aws_clients(
    counter: Option<&crate::adapters::CallCounter>,
) -> (aws_sdk_dynamodb::Client, aws_sdk_sqs::Client) {
    let config = crate::adapters::aws_http::sdk_config().await;
    let mut dynamo = aws_sdk_dynamodb::config::Builder::from(&config);
    let mut sqs = aws_sdk_sqs::config::Builder::from(&config);
    if let Some(counter) = counter {
        dynamo = dynamo.interceptor(counter.clone());
        sqs = sqs.interceptor(counter.clone());
    }
    (
        aws_sdk_dynamodb::Client::from_conf(dynamo.build()),
        aws_sdk_sqs::Client::from_conf(sqs.build()),
    )
}

/// The master key of an AWS deployment: the KMS key `key_id` (id, ARN or alias), counting its
/// calls into `counter` when one is given.
pub async fn kms_master_key(
    key_id: &str,
    counter: Option<&crate::adapters::CallCounter>,
) -> KmsMasterKey {
    let config = crate::adapters::aws_http::sdk_config().await;
    let mut kms = aws_sdk_kms::config::Builder::from(&config);
    if let Some(counter) = counter {
        kms = kms.interceptor(counter.clone());
    }
    KmsMasterKey::new(kms.build(), key_id)
}

/// Creates whatever is missing of the table and the queues (with their dead-letter queues) with
/// the keys, indexes, TTL and redrive `template.yaml` declares: a step of its own, for emulators
/// and first runs (`webhook-hub serve --create-resources`), never done by a deployed function.
pub async fn provision_aws(resources: &AwsResources, queue_visibility: Duration) -> Result<()> {
    let (dynamo, sqs) = aws_clients(None).await;
    DynamoStore::new(dynamo, &resources.table)
        .ensure_table()
        .await?;
    ensure_kms_key(&resources.kms_key_id).await?;
    SqsQueue::ensure(
        sqs.clone(),
        &resources.events_queue,
        queue_visibility,
        EVENTS_RECEIVE_LIMIT,
    )
    .await?;
    SqsQueue::ensure(
        sqs.clone(),
        &resources.deliveries_queue,
        queue_visibility,
        DELIVERY_RECEIVE_LIMIT,
    )
    .await?;
    SqsQueue::ensure_fifo(sqs.clone(), &resources.ordered_queue(), queue_visibility).await?;
    for name in [&resources.ingest_queue, &resources.bus_ingest_queue]
        .into_iter()
        .flatten()
    {
        SqsQueue::ensure(sqs.clone(), name, queue_visibility, EVENTS_RECEIVE_LIMIT).await?;
    }
    Ok(())
}

/// Creates the KMS key an `alias/…` names unless it exists (provisioning, emulators).
pub async fn ensure_kms_key(alias: &str) -> Result<()> {
    let config = crate::adapters::aws_http::sdk_config().await;
    KmsMasterKey::ensure(&aws_sdk_kms::Client::new(&config), alias).await
}

/// `account`'s event-type catalog in the DynamoDB table `resources` names (`webhook-hub catalog
/// export`: the table alone, no queue or key).
pub async fn aws_catalog(
    resources: &AwsResources,
    account: &str,
) -> Result<crate::catalog::StoredCatalog> {
    use crate::ports::CatalogStore;
    let config = crate::adapters::aws_http::sdk_config().await;
    DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), &resources.table)
        .catalog(account)
        .await
}

/// A hub on the DynamoDB table and SQS queues `resources` names.
pub async fn aws_hub(settings: Settings, resources: &AwsResources) -> Result<Hub> {
    // One load of the AWS configuration for every client (it is most of a cold start's
    // configuration work); the KMS client makes no call until a secret is first used.
    let config = crate::adapters::aws_http::sdk_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let master = KmsMasterKey::new(aws_sdk_kms::Config::from(&config), &resources.kms_key_id);
    let store = DynamoStore::new(dynamo, &resources.table);
    let events = SqsQueue::open(sqs.clone(), &resources.events_queue).await?;
    let deliveries = SqsQueue::open(sqs.clone(), &resources.deliveries_queue).await?;
    let ordered = SqsQueue::open(sqs.clone(), &resources.ordered_queue())
        .await?
        .dead_lettering_with(&deliveries);
    let mut hub = assemble(
        settings,
        Arc::new(store),
        Arc::new(events),
        Arc::new(deliveries),
        Arc::new(master),
    );
    hub.ordered = Arc::new(ordered);
    for (name, slot) in [
        (&resources.ingest_queue, &mut hub.ingest.direct),
        (&resources.bus_ingest_queue, &mut hub.ingest.bus),
    ] {
        if let Some(name) = name {
            let queue: Arc<dyn crate::ports::Queue> =
                Arc::new(SqsQueue::open(sqs.clone(), name).await?);
            *slot = Some(queue);
        }
    }
    Ok(hub)
}

/// The dead-letter queue of the deliveries queue, as `SqsQueue::ensure` names it.
pub async fn aws_deliveries_dead_letters(resources: &AwsResources) -> Result<SqsQueue> {
    let config = crate::adapters::aws_http::sdk_config().await;
    let name = resources
        .deliveries_queue
        .rsplit('/')
        .next()
        .unwrap_or_default();
    SqsQueue::open(aws_sdk_sqs::Client::new(&config), &format!("{name}-dlq")).await
}

/// The in-memory queues of the embedded mode, with their dead-letter queues.
pub struct MemoryQueues {
    /// Dead letters of the events queue.
    pub events_dead: Arc<MemoryQueue>,
    /// Dead letters of the deliveries queue.
    pub deliveries_dead: Arc<MemoryQueue>,
}

/// A hub entirely in process memory.
pub fn memory_hub(settings: Settings) -> (Hub, MemoryQueues) {
    let events_dead = Arc::new(MemoryQueue::new(QUEUE_VISIBILITY, u32::MAX, None));
    let deliveries_dead = Arc::new(MemoryQueue::new(QUEUE_VISIBILITY, u32::MAX, None));
    let events = MemoryQueue::new(
        QUEUE_VISIBILITY,
        EVENTS_RECEIVE_LIMIT,
        Some(events_dead.clone()),
    );
    let deliveries = MemoryQueue::new(
        QUEUE_VISIBILITY,
        DELIVERY_RECEIVE_LIMIT,
        Some(deliveries_dead.clone()),
    );
    let hub = assemble(
        settings,
        Arc::new(MemoryStore::default()),
        Arc::new(events),
        Arc::new(deliveries),
        // The data lives as long as the process: so does its master key.
        Arc::new(LocalMasterKey::generate()),
    );
    (
        hub,
        MemoryQueues {
            events_dead,
            deliveries_dead,
        },
    )
}

/// The dead-letter queues of the SQLite-backed embedded mode.
#[cfg(feature = "sqlite")]
pub struct SqliteQueues {
    /// Dead letters of the deliveries queue.
    pub deliveries_dead: Arc<crate::adapters::sqlite::SqliteQueue>,
    /// The database, to flush before the process exits.
    pub db: crate::adapters::sqlite::SqliteDb,
}

/// A hub whose store and queues live in the SQLite database at `path` (created if missing,
/// `0600`), its secrets sealed under data keys `master` wraps: what `webhook-hub serve` runs by
/// default. Fails with a message for the operator when the file cannot be used (another process
/// holds it, it is not a webhook-hub database, it is corrupt).
#[cfg(feature = "sqlite")]
pub fn sqlite_hub(
    settings: Settings,
    master: Arc<dyn MasterKey>,
    path: &std::path::Path,
    options: impl Into<crate::adapters::sqlite::DbOptions>,
    visibility: Duration,
) -> std::result::Result<(Hub, SqliteQueues), String> {
    use crate::adapters::sqlite::{Admission, SqliteDb, SqliteQueue, SqliteStore};
    let db = SqliteDb::open(path, options)?;
    let queue = |name: &str, limit: u32, dead: Option<&str>| {
        SqliteQueue::new(db.clone(), name, visibility, limit, dead)
    };
    let deliveries_dead = Arc::new(queue("deliveries-dlq", u32::MAX, None));
    let events =
        queue("events", EVENTS_RECEIVE_LIMIT, Some("events-dlq")).admitting(Admission::NewWork);
    let deliveries = queue("deliveries", DELIVERY_RECEIVE_LIMIT, Some("deliveries-dlq"));
    let hub = assemble(
        settings,
        Arc::new(SqliteStore::new(db.clone())),
        Arc::new(events),
        Arc::new(deliveries),
        master,
    );
    Ok((
        hub,
        SqliteQueues {
            deliveries_dead,
            db,
        },
    ))
}

/// A hub from its ports, with the system clock and the HTTP transport.
pub fn assemble(
    settings: Settings,
    store: Arc<dyn crate::ports::Store>,
    events: Arc<dyn crate::ports::Queue>,
    deliveries: Arc<dyn crate::ports::Queue>,
    master: Arc<dyn MasterKey>,
) -> Hub {
    let transport = HttpTransport::new(
        settings.allow_private_targets,
        settings.attempt_timeout,
        settings.resolve_names,
    );
    Hub {
        keys: Arc::new(Keyring::new(master, store.clone())),
        store,
        events,
        ordered: deliveries.clone(),
        deliveries,
        transport: Arc::new(transport),
        clock: Arc::new(SystemClock::default()),
        settings: Arc::new(settings),
        metrics: Arc::default(),
        ingest: Default::default(),
        pending_tallies: Default::default(),
        spacing: Default::default(),
        catalogs: Default::default(),
    }
}
