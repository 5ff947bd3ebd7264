//! Operational metrics, so an operator sees the hub's health without reading logs: counters the
//! services bump as things happen (events published, attempts by outcome and their latency,
//! deliveries exhausted), and gauges read from the queues and the store when scraped (queue
//! depth, age of the oldest message, subscriptions by status). Encoded as OpenMetrics text
//! (`prometheus-client`) for `webhook-hub serve`'s `/metrics`; the same counters also go to the
//! `metrics` facade, which the Lambda functions turn into CloudWatch Embedded Metric Format lines
//! (`metrics_cloudwatch_embedded`, flushed after each invocation: no API call) and which is a
//! no-op where no recorder is installed.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::context::Hub;
use crate::model::SubscriptionStatus;

/// The CloudWatch namespace of the Lambda functions' metrics (the template's alarms read it).
pub const CLOUDWATCH_NAMESPACE: &str = "webhook-hub";

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How one delivery attempt ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum AttemptOutcome {
    /// A 2xx.
    delivered,
    /// Anything else (another status, a timeout, a connection or TLS error, a refused target).
    failed,
    /// `410 Gone`: the subscription was removed.
    gone,
}

impl AttemptOutcome {
    /// Its label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::delivered => "delivered",
            AttemptOutcome::failed => "failed",
            AttemptOutcome::gone => "gone",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: AttemptOutcome,
}

/// What publish did with an event whose `data` did not match its type's schema.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SchemaOutcome {
    /// Accepted all the same (`schema_validation: warn`).
    accepted,
    /// Refused (`schema_validation: enforce`).
    refused,
}

impl SchemaOutcome {
    /// Its label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaOutcome::accepted => "accepted",
            SchemaOutcome::refused => "refused",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SchemaLabels {
    outcome: SchemaOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubscriptionLabels {
    subscription: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

/// The hub's metrics: one set per process, shared by every service call.
pub struct Metrics {
    registry: Registry,
    published: Counter,
    attempts: Family<OutcomeLabels, Counter>,
    attempt_seconds: Histogram,
    exhausted: Counter,
    queue_depth: Family<QueueLabels, Gauge>,
    oldest_message_seconds: Family<QueueLabels, Gauge>,
    subscriptions: Family<StatusLabels, Gauge>,
    push_backs: Counter,
    schema_mismatches: Family<SchemaLabels, Counter>,
    undeclared_refused: Counter,
    slot_waits: Counter,
    pace: Family<SubscriptionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("webhook_hub");
        let published = Counter::default();
        registry.register(
            "events_published",
            "Events accepted and queued (a repeated id is not counted again)",
            published.clone(),
        );
        let attempts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "delivery_attempts",
            "Delivery attempts (confirmations, events, notices) by outcome",
            attempts.clone(),
        );
        let attempt_seconds = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        registry.register(
            "delivery_attempt_seconds",
            "Time of one delivery attempt, DNS to response",
            attempt_seconds.clone(),
        );
        let exhausted = Counter::default();
        registry.register(
            "deliveries_exhausted",
            "Deliveries that used up their retries (to the dead-letter queue)",
            exhausted.clone(),
        );
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "queue_messages",
            "Messages a queue holds: waiting, delayed or in flight",
            queue_depth.clone(),
        );
        let oldest_message_seconds = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "queue_oldest_message_age_seconds",
            "Age of the oldest message a queue holds",
            oldest_message_seconds.clone(),
        );
        let subscriptions = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "subscriptions",
            "Subscriptions by status (lapsed ones until the sweeper removes them)",
            subscriptions.clone(),
        );
        let schema_mismatches = Family::<SchemaLabels, Counter>::default();
        registry.register(
            "schema_mismatches",
            "Published events whose data did not match their type's schema, by what publish did",
            schema_mismatches.clone(),
        );
        let undeclared_refused = Counter::default();
        registry.register(
            "undeclared_topics_refused",
            "Events refused because their topic is not in the catalog",
            undeclared_refused.clone(),
        );
        let push_backs = Counter::default();
        registry.register(
            "receiver_push_backs",
            "Attempts a receiver answered 429 or 503: its subscription slows down",
            push_backs.clone(),
        );
        let slot_waits = Counter::default();
        registry.register(
            "delivery_slot_waits",
            "Deliveries held on the queue for their subscription's next slot (its limit or back-off)",
            slot_waits.clone(),
        );
        let pace =
            Family::<SubscriptionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "subscription_pace_per_second",
            "The rate in force for each paced subscription this process delivered to (its limit or back-off)",
            pace.clone(),
        );
        Metrics {
            registry,
            push_backs,
            schema_mismatches,
            undeclared_refused,
            slot_waits,
            pace,
            published,
            attempts,
            attempt_seconds,
            exhausted,
            queue_depth,
            oldest_message_seconds,
            subscriptions,
        }
    }
}

impl Metrics {
    /// Counts events accepted and queued.
    pub fn published(&self, events: u64) {
        self.published.inc_by(events);
        metrics::counter!("events_published").increment(events);
    }

    /// Counts one attempt and its time.
    pub fn attempt(&self, outcome: AttemptOutcome, latency: std::time::Duration) {
        self.attempts
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.attempt_seconds.observe(latency.as_secs_f64());
        metrics::counter!("delivery_attempts", "outcome" => outcome.as_str()).increment(1);
        metrics::histogram!("delivery_attempt_seconds").record(latency.as_secs_f64());
    }

    /// Counts an event whose data did not match its type's schema.
    pub fn schema_mismatch(&self, outcome: SchemaOutcome) {
        self.schema_mismatches
            .get_or_create(&SchemaLabels { outcome })
            .inc();
        metrics::counter!("schema_mismatches", "outcome" => outcome.as_str()).increment(1);
    }

    /// An event refused because its topic is not in the catalog.
    pub fn undeclared_refused(&self) {
        self.undeclared_refused.inc();
        metrics::counter!("undeclared_topics_refused").increment(1);
    }

    /// Counts an attempt a receiver pushed back on.
    pub fn pushed_back(&self) {
        self.push_backs.inc();
        metrics::counter!("receiver_push_backs").increment(1);
    }

    /// Counts deliveries held on the queue for their slot.
    pub fn slot_waits(&self, deliveries: u64) {
        self.slot_waits.inc_by(deliveries);
        metrics::counter!("delivery_slot_waits").increment(deliveries);
    }

    /// Shows the rate in force for a subscription (`None`: unpaced again, the series goes).
    pub fn pace(&self, subscription_id: &str, per_second: Option<f64>) {
        let labels = SubscriptionLabels {
            subscription: subscription_id.to_string(),
        };
        match per_second {
            Some(rate) => {
                self.pace.get_or_create(&labels).set(rate);
            }
            None => {
                self.pace.remove(&labels);
            }
        }
    }

    /// Counts a delivery that used up its retries.
    pub fn exhausted(&self) {
        self.exhausted.inc();
        metrics::counter!("deliveries_exhausted").increment(1);
    }

    /// The metrics as OpenMetrics text, with the gauges read now from `hub`'s queues and store
    /// (those that cannot say cheaply are left out).
    pub async fn render(&self, hub: &Hub) -> String {
        for (name, queue) in [("events", &hub.events), ("deliveries", &hub.deliveries)] {
            if let Ok(Some(stats)) = queue.stats().await {
                let labels = QueueLabels { queue: name };
                self.queue_depth
                    .get_or_create(&labels)
                    .set(stats.depth as i64);
                if let Some(age) = stats.oldest_age {
                    self.oldest_message_seconds
                        .get_or_create(&labels)
                        .set(age.as_secs() as i64);
                }
            }
        }
        if let Ok(Some(counts)) = hub.store.count_by_status().await {
            for status in SubscriptionStatus::ALL {
                let n = counts
                    .iter()
                    .find(|(s, _)| *s == status)
                    .map_or(0, |(_, n)| *n);
                self.subscriptions
                    .get_or_create(&StatusLabels {
                        status: status.as_str(),
                    })
                    .set(n as i64);
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}
