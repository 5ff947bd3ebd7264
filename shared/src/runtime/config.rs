//! Configuration read from the environment: the one place the Lambda functions (and
//! `webhook-hub serve --backend aws`) read `HUB_*` variables, and the logging setup.

use super::telemetry::Endpoint;
use std::time::Duration;

use crate::context::Settings;
use crate::error::{ErrorCode, Result};
use crate::retry::{RetrySchedule, parse_duration};

/// Visibility timeout of the queues: 6× the consumers' 30 s timeout.
pub const QUEUE_VISIBILITY: Duration = Duration::from_secs(180);
/// The settings every process of the hub reads (the Lambda functions from the environment,
/// `webhook-hub serve` from its command line first): each is declared once, here, with its
/// variable and default.
#[derive(Debug, Clone, clap::Args)]
pub struct HubArgs {
    /// Base of confirmation links (default: http://<listen> for serve)
    #[arg(long, env = "HUB_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Delays between delivery attempts, each at most 12h (±20 % jitter)
    #[arg(long, env = "HUB_RETRY_SCHEDULE", default_value = "5s,5m,30m,2h,5h,10h", value_parser = parse_schedule)]
    pub retry_schedule: RetrySchedule,
    /// Continuous failure this long disables a subscription
    #[arg(long, env = "HUB_DISABLE_AFTER", default_value = "24h", value_parser = parse_duration_arg)]
    pub disable_after: Duration,
    /// Continuous failure this long sends the account `hub.subscription.failing` (once per
    /// streak)
    #[arg(long, env = "HUB_WARN_AFTER", default_value = "1h", value_parser = parse_duration_arg)]
    pub warn_after: Duration,
    /// Budget of one delivery attempt: DNS, connect, TLS, response
    #[arg(long, env = "HUB_ATTEMPT_TIMEOUT", default_value = "5s", value_parser = parse_duration_arg)]
    pub attempt_timeout: Duration,
    /// How long an ordered subscription's delivery waits after its event was published, so an
    /// earlier event fanned out a moment later still goes first
    #[arg(long, env = "HUB_ORDER_SETTLE", default_value = "1s", value_parser = parse_duration_arg)]
    pub order_settle: Duration,
    /// Most subscriptions one account may hold
    #[arg(long, env = "HUB_MAX_SUBSCRIPTIONS_PER_ACCOUNT", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_subscriptions_per_account: u32,
    /// Most subscriptions bound to one owner (a customer of the platform), pending ones
    /// included
    #[arg(long, env = "HUB_MAX_SUBSCRIPTIONS_PER_OWNER", default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_subscriptions_per_owner: u32,
    /// Most confirmation requests sent per hour for the subscriptions bound to one owner
    #[arg(long, env = "HUB_CONFIRMATIONS_PER_OWNER_HOUR", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub confirmations_per_owner_hour: u32,
    /// Which attempts the delivery log stores: `full` (every one) or `lean` (failures only;
    /// successes are counted by the odometer)
    #[arg(long, env = "HUB_DELIVERY_LOG", value_enum, default_value = "full")]
    pub delivery_log: crate::context::DeliveryLog,
    /// Who folds successes into the odometer: `batch` (the sender, after each batch) or
    /// `stream` (the `fold` function, from the delivery log's DynamoDB stream)
    #[arg(long, env = "HUB_ODOMETER_FOLD", value_enum, default_value = "batch")]
    pub odometer_fold: crate::context::OdometerFold,
    /// Direct publishing: which account each ingest-queue sender publishes to, as
    /// SENDER_ID=ACCOUNT pairs separated by commas (the sender id is SQS's SenderId: an IAM
    /// user id, or a role id without its session)
    #[arg(long, env = "HUB_INGEST_SENDERS", default_value = "", value_parser = parse_senders)]
    pub ingest_senders: std::collections::BTreeMap<String, String>,
    /// How long delivery logs, kept deliveries and dead letters are kept (at most 14d)
    #[arg(long, env = "HUB_RETENTION", default_value = "7d", value_parser = parse_retention)]
    pub retention: Duration,
    /// Whether fan-out keeps every event with its payload for the retention, so it can be
    /// listed, read and resent (`on` or `off`)
    #[arg(long, env = "HUB_HISTORY", value_enum, default_value = "on")]
    pub history: Switch,
    /// Most events the history holds on SQLite and in memory (the oldest go first beyond it);
    /// DynamoDB is bounded by the retention alone
    #[arg(long, env = "HUB_HISTORY_MAX_EVENTS", default_value_t = crate::context::DEFAULT_HISTORY_MAX_EVENTS, value_parser = clap::value_parser!(u64).range(1..))]
    pub history_max_events: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub aws: AwsResources,
}

/// A feature turned `on` or `off` on the command line or in the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// Turned on.
    On,
    /// Turned off.
    Off,
}

impl HubArgs {
    /// The hub's settings, with the SSRF guard on and names resolved (only `serve` may change
    /// either).
    pub fn settings(&self) -> Settings {
        let defaults = Settings::default();
        Settings {
            public_url: self
                .public_url
                .as_deref()
                .map_or(defaults.public_url.clone(), |u| {
                    u.trim_end_matches('/').to_string()
                }),
            allow_private_targets: false,
            retry: self.retry_schedule.clone(),
            disable_after: self.disable_after,
            warn_after: self.warn_after,
            attempt_timeout: self.attempt_timeout,
            order_settle: self.order_settle,
            resolve_names: true,
            max_subscriptions_per_account: self.max_subscriptions_per_account as usize,
            max_subscriptions_per_owner: self.max_subscriptions_per_owner as usize,
            confirmations_per_owner_hour: self.confirmations_per_owner_hour,
            fanout_page: defaults.fanout_page,
            delivery_log: self.delivery_log,
            odometer_fold: self.odometer_fold,
            ingest_senders: self.ingest_senders.clone(),
            retention: self.retention,
            history: self.history == Switch::On,
            history_max_events: self.history_max_events,
        }
    }
}

/// Names of the AWS resources and how provisioning makes the queues.
#[derive(Debug, Clone, clap::Args)]
pub struct AwsResources {
    /// The DynamoDB table (with --backend aws)
    #[arg(long, env = "HUB_TABLE", default_value = "webhook-hub")]
    pub table: String,
    /// The events queue, name or URL (with --backend aws)
    #[arg(long, env = "HUB_EVENTS_QUEUE", default_value = "webhook-hub-events")]
    pub events_queue: String,
    /// The deliveries queue, name or URL (with --backend aws)
    #[arg(
        long,
        env = "HUB_DELIVERIES_QUEUE",
        default_value = "webhook-hub-deliveries"
    )]
    pub deliveries_queue: String,
    /// How long a received message stays hidden: the queues --create-resources makes, and the
    /// SQLite queues (after a crash, what was in flight comes back after this)
    #[arg(long, env = "HUB_QUEUE_VISIBILITY", default_value = "180s", value_parser = parse_duration_arg)]
    pub queue_visibility: Duration,
    /// The direct-publishing queue producers send to, name or URL (optional)
    #[arg(long, env = "HUB_INGEST_QUEUE")]
    pub ingest_queue: Option<String>,
    /// The queue the EventBridge rule sends published events to, name or URL (optional)
    #[arg(long, env = "HUB_BUS_INGEST_QUEUE")]
    pub bus_ingest_queue: Option<String>,
    /// The FIFO queue of ordered deliveries, name or URL (default: the deliveries queue's name
    /// followed by `-ordered.fifo`)
    #[arg(long, env = "HUB_ORDERED_QUEUE")]
    pub ordered_queue: Option<String>,
    /// The KMS key that wraps the data keys stored secrets are sealed with: id, ARN or alias
    /// (with --backend aws; --create-resources creates the alias's key)
    #[arg(long, env = "HUB_KMS_KEY_ID", default_value = "alias/webhook-hub")]
    pub kms_key_id: String,
}

impl AwsResources {
    /// The FIFO queue of ordered deliveries: as named, or beside the deliveries queue.
    pub fn ordered_queue(&self) -> String {
        self.ordered_queue
            .clone()
            .unwrap_or_else(|| format!("{}-ordered.fifo", self.deliveries_queue))
    }
}

/// What a Lambda function reads from its environment: the hub's settings and, for the API
/// functions, the JWT claim that names the account. Nothing here can lift the SSRF guard:
/// `HUB_ALLOW_PRIVATE_TARGETS` is read by `webhook-hub serve` alone (one stray variable must not
/// let a deployed function reach the Runtime API, the instance metadata or the VPC).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "webhook-hub-function")]
pub struct LambdaConfig {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub hub: HubArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub claims: JwtClaims,
}

/// Which JWT claims the API functions read the caller from.
#[derive(Debug, Clone, clap::Args)]
pub struct JwtClaims {
    /// The JWT claim that names the account
    #[arg(long, env = "HUB_ACCOUNT_CLAIM", default_value = "sub")]
    pub account_claim: String,
    /// The JWT claim that names the customer (owner) a token is bound to: a token carrying
    /// it reaches, creates and receives only that customer's subscriptions and events
    #[arg(long, env = "HUB_OWNER_CLAIM", default_value = "webhook_owner")]
    pub owner_claim: String,
    /// The JWT claim of a bound token that sets its secrecy floor (0 to 2; default 2)
    #[arg(
        long,
        env = "HUB_SECRECY_FLOOR_CLAIM",
        default_value = "webhook_secrecy_floor"
    )]
    pub secrecy_floor_claim: String,
}

impl LambdaConfig {
    /// From the environment (a function has no command line).
    pub fn from_env() -> Result<Self> {
        <Self as clap::Parser>::try_parse_from(["webhook-hub-function"])
            .map_err(|err| crate::HubError::invalid(ErrorCode::InvalidSetting, err.to_string()))
    }
}

impl JwtClaims {
    /// The default claim names, with `account_claim` naming the account.
    pub fn with_account_claim(account_claim: &str) -> Self {
        JwtClaims {
            account_claim: account_claim.to_string(),
            ..JwtClaims::default()
        }
    }
}

impl Default for JwtClaims {
    fn default() -> Self {
        <Self as clap::FromArgMatches>::from_arg_matches(
            &<Self as clap::Args>::augment_args(clap::Command::new("claims"))
                .no_binary_name(true)
                .get_matches_from(Vec::<String>::new()),
        )
        .expect("every claim has a default")
    }
}

/// `SENDER=ACCOUNT,SENDER=ACCOUNT` (empty for none).
fn parse_senders(
    text: &str,
) -> std::result::Result<std::collections::BTreeMap<String, String>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((sender, account)) if !sender.is_empty() && !account.is_empty() => {
                Ok((sender.trim().to_string(), account.trim().to_string()))
            }
            _ => Err(format!("`{pair}` is not SENDER_ID=ACCOUNT")),
        })
        .collect()
}

/// A retention: a duration of one hour to 14 days.
fn parse_retention(text: &str) -> std::result::Result<Duration, String> {
    let retention = parse_duration_arg(text)?;
    if !(Duration::from_secs(3600)..=crate::context::MAX_RETENTION).contains(&retention) {
        return Err("the retention is 1h to 14d".into());
    }
    Ok(retention)
}

/// A retry schedule argument.
fn parse_schedule(text: &str) -> std::result::Result<RetrySchedule, String> {
    RetrySchedule::parse(text).map_err(|e| e.to_string())
}

/// A duration argument (`500ms`, `5s`, `5m`, `2h`, `1d`).
pub fn parse_duration_arg(text: &str) -> std::result::Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

/// Reads an environment variable, treating empty as unset.
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// JSON logs to stdout, filtered by `RUST_LOG` or `AWS_LAMBDA_LOG_LEVEL` (default `info`),
/// written as they come: a Lambda function may be frozen right after it answers, so nothing waits
/// in a buffer. Spans are exported where the environment names an OTLP endpoint
/// ([`super::telemetry`]).
pub fn init_logging() {
    install(
        std::io::stdout,
        log_filter(None),
        Endpoint::configured(None),
    );
}

/// The Lambda functions' log lines, written to `writer` instead of stdout, at `level` (as
/// `AWS_LAMBDA_LOG_LEVEL` would set it) unless `RUST_LOG` is set: for the cost benchmark, which
/// counts the bytes CloudWatch Logs would ingest (untraced).
pub fn init_logging_to<W>(writer: W, level: &str)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    install(writer, log_filter(Some(level)), None);
}

/// The same logs for the long-running `webhook-hub serve`: formatted on the thread that logs and
/// gathered for a thread of its own that writes them out in large writes every few milliseconds
/// ([`super::log_writer`]), so a request or a delivery attempt never waits for stdout and wakes no
/// thread. No line is dropped (a full buffer makes the logger wait); keep the guard until exit, it
/// writes out what is left when dropped. Spans go to `otlp_endpoint` (`--otlp-endpoint`), or
/// where the environment says.
pub fn init_buffered_logging(otlp_endpoint: Option<&str>) -> super::log_writer::LogWriterGuard {
    let (lines, guard) = super::log_writer::start(std::io::stdout());
    install(lines, log_filter(None), Endpoint::configured(otlp_endpoint));
    guard
}

/// The log lines' filter: `RUST_LOG`, else `AWS_LAMBDA_LOG_LEVEL`, else `default` or `info`.
/// The hub's spans never become log lines (they are the exporter's alone).
fn log_filter(default: Option<&str>) -> tracing_subscriber::EnvFilter {
    let filter = env_var("RUST_LOG")
        .or_else(|| default.map(str::to_ascii_lowercase))
        .or_else(|| env_var("AWS_LAMBDA_LOG_LEVEL").map(|l| l.to_ascii_lowercase()))
        .unwrap_or_else(|| "info".to_string());
    tracing_subscriber::EnvFilter::new(format!("{filter},{}=off", crate::trace::SPANS))
}

/// Installs the process's subscriber: JSON log lines to `writer` through `filter`, and the span
/// exporter beside them where there is an endpoint (each layer filtered on its own).
fn install<W>(writer: W, filter: tracing_subscriber::EnvFilter, endpoint: Option<Endpoint>)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::prelude::*;
    fn json_lines<S, W>(
        writer: W,
    ) -> tracing_subscriber::fmt::Layer<
        S,
        tracing_subscriber::fmt::format::DefaultFields,
        super::log_line::JsonLine,
        W,
    >
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
        W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
    {
        tracing_subscriber::fmt::layer()
            .event_format(super::log_line::JsonLine)
            .with_writer(writer)
    }
    match super::telemetry::layer(endpoint) {
        Some(spans) => {
            let _ = tracing_subscriber::registry()
                .with(json_lines(writer).with_filter(filter))
                .with(spans)
                .try_init();
        }
        // Untraced, the filter is the subscriber's own (not one layer's): what it disables is
        // never built, as before tracing existed.
        None => {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(json_lines(writer))
                .try_init();
        }
    }
}
