//! Configuration read from the environment: the one place the Lambda functions (and
//! `webhook-hub serve --backend aws`) read `HUB_*` variables, and the logging setup.

use std::time::Duration;

use crate::error::{ErrorCode, Result};
use crate::hub::Settings;
use crate::retry::{RetrySchedule, parse_duration};

/// Visibility timeout of the queues: 6× the consumers' 30 s timeout.
pub const QUEUE_VISIBILITY: Duration = Duration::from_secs(180);
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
                ErrorCode::InvalidSetting,
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

/// The JWT claim that names the account, from `HUB_ACCOUNT_CLAIM` (default `sub`).
pub fn account_claim_from_env() -> String {
    env_var("HUB_ACCOUNT_CLAIM").unwrap_or_else(|| "sub".to_string())
}

/// Visibility of queues that provisioning creates, from `HUB_QUEUE_VISIBILITY` (default 180 s,
/// as in `template.yaml`).
pub fn queue_visibility_from_env() -> Result<Duration> {
    env_var("HUB_QUEUE_VISIBILITY").map_or(Ok(QUEUE_VISIBILITY), |text| parse_duration(&text))
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
