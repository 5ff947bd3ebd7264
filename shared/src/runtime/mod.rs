//! Wiring: settings from the environment, a [`Hub`] on AWS or in memory, the queue consumers
//! shared by Lambda and the embedded pollers, and the Lambda entry points.

pub mod consume;
pub mod embedded;
pub mod lambda;

use std::sync::Arc;
use std::time::Duration;

use crate::adapters::dynamodb::DynamoStore;
use crate::adapters::http::HttpTransport;
use crate::adapters::memory::{MemoryQueue, MemoryStore};
use crate::adapters::sqs::SqsQueue;
use crate::clock::SystemClock;
use crate::error::Result;
use crate::hub::{Hub, Settings};
use crate::retry::{RetrySchedule, parse_duration};

/// Visibility timeout of the queues: 6× the consumers' 30 s timeout.
pub const QUEUE_VISIBILITY: Duration = Duration::from_secs(180);
/// Receives after which the deliveries queue's redrive moves a message to its dead-letter
/// queue. Attempts are counted in the message itself, so this only guards against a message
/// that can never be processed: enough for a 7-day `Retry-After` hidden 12 h at a time (15
/// receives) plus store outages. `template.yaml` sets the same.
pub const DELIVERY_RECEIVE_LIMIT: u32 = 30;
/// Receives after which the events queue's redrive moves a message to its dead-letter queue.
pub const EVENTS_RECEIVE_LIMIT: u32 = 5;

/// Names of the AWS resources, from `HUB_TABLE`, `HUB_EVENTS_QUEUE`, `HUB_DELIVERIES_QUEUE`.
#[derive(Debug, Clone)]
pub struct AwsResources {
    /// The DynamoDB table.
    pub table: String,
    /// The events queue (name or URL).
    pub events_queue: String,
    /// The deliveries queue (name or URL).
    pub deliveries_queue: String,
}

impl AwsResources {
    /// From the environment, with the documented defaults.
    pub fn from_env() -> Self {
        let var = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        AwsResources {
            table: var("HUB_TABLE", "webhook-hub"),
            events_queue: var("HUB_EVENTS_QUEUE", "webhook-hub-events"),
            deliveries_queue: var("HUB_DELIVERIES_QUEUE", "webhook-hub-deliveries"),
        }
    }
}

/// Reads an environment variable, treating empty as unset.
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Parses a boolean flag value (`1`, `true`, `yes`, `on`).
pub fn truthy(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// Settings of the Lambda functions from `HUB_PUBLIC_URL`, `HUB_RETRY_SCHEDULE`,
/// `HUB_DISABLE_AFTER`, `HUB_ATTEMPT_TIMEOUT` and `HUB_MAX_SUBSCRIPTIONS_PER_ACCOUNT`.
///
/// Nothing here can lift the SSRF guard: `HUB_ALLOW_PRIVATE_TARGETS` is read by
/// `webhook-hub serve` alone (one stray variable must not let a deployed function reach the
/// Runtime API, the instance metadata or the VPC).
pub fn settings_from_env() -> Result<Settings> {
    let mut settings = Settings::default();
    if let Some(url) = env_var("HUB_PUBLIC_URL") {
        settings.public_url = url.trim_end_matches('/').to_string();
    }
    if let Some(limit) = env_var("HUB_MAX_SUBSCRIPTIONS_PER_ACCOUNT") {
        settings.max_subscriptions_per_account = limit.parse().map_err(|_| {
            crate::HubError::invalid(
                "invalid_setting",
                "HUB_MAX_SUBSCRIPTIONS_PER_ACCOUNT is a positive integer",
            )
        })?;
    }
    if let Some(schedule) = env_var("HUB_RETRY_SCHEDULE") {
        settings.retry = RetrySchedule::parse(&schedule)?;
    }
    if let Some(after) = env_var("HUB_DISABLE_AFTER") {
        settings.disable_after = parse_duration(&after)?;
    }
    if let Some(timeout) = env_var("HUB_ATTEMPT_TIMEOUT") {
        settings.attempt_timeout = parse_duration(&timeout)?;
    }
    Ok(settings)
}

/// DynamoDB and SQS clients from the standard AWS environment, counting their calls into
/// `counter` when one is given (benchmarks and cost tests).
pub async fn aws_clients(
    counter: Option<&crate::adapters::CallCounter>,
) -> (aws_sdk_dynamodb::Client, aws_sdk_sqs::Client) {
    let config = aws_config::load_from_env().await;
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

/// A hub on DynamoDB and SQS. With `create`, the table and queues are created first if missing
/// (queue visibility from `HUB_QUEUE_VISIBILITY`, default 180 s as in `template.yaml`).
pub async fn aws_hub(settings: Settings, resources: &AwsResources, create: bool) -> Result<Hub> {
    let (dynamo, sqs) = aws_clients(None).await;
    let store = DynamoStore::new(dynamo, &resources.table);
    let (events, deliveries) = if create {
        store.ensure_table().await?;
        let visibility = match env_var("HUB_QUEUE_VISIBILITY") {
            Some(text) => parse_duration(&text)?,
            None => QUEUE_VISIBILITY,
        };
        (
            SqsQueue::ensure(
                sqs.clone(),
                &resources.events_queue,
                visibility,
                EVENTS_RECEIVE_LIMIT,
            )
            .await?,
            SqsQueue::ensure(
                sqs,
                &resources.deliveries_queue,
                visibility,
                DELIVERY_RECEIVE_LIMIT,
            )
            .await?,
        )
    } else {
        (
            SqsQueue::open(sqs.clone(), &resources.events_queue).await?,
            SqsQueue::open(sqs, &resources.deliveries_queue).await?,
        )
    };
    Ok(assemble(
        settings,
        Arc::new(store),
        Arc::new(events),
        Arc::new(deliveries),
    ))
}

/// The dead-letter queue of the deliveries queue, as `SqsQueue::ensure` names it.
pub async fn aws_deliveries_dead_letters(resources: &AwsResources) -> Result<SqsQueue> {
    let config = aws_config::load_from_env().await;
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
    );
    (
        hub,
        MemoryQueues {
            events_dead,
            deliveries_dead,
        },
    )
}

fn assemble(
    settings: Settings,
    store: Arc<dyn crate::ports::Store>,
    events: Arc<dyn crate::ports::Queue>,
    deliveries: Arc<dyn crate::ports::Queue>,
) -> Hub {
    let transport = HttpTransport::new(
        settings.allow_private_targets,
        settings.attempt_timeout,
        settings.resolve_names,
    );
    Hub {
        store,
        events,
        deliveries,
        transport: Arc::new(transport),
        clock: Arc::new(SystemClock::default()),
        settings: Arc::new(settings),
    }
}

/// JSON logs to stdout, filtered by `RUST_LOG` or `AWS_LAMBDA_LOG_LEVEL` (default `info`).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = env_var("RUST_LOG")
        .or_else(|| env_var("AWS_LAMBDA_LOG_LEVEL").map(|l| l.to_ascii_lowercase()))
        .unwrap_or_else(|| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_target(false)
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stdout)
        .try_init();
}
