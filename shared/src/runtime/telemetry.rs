//! Trace export: the hub's spans ([`crate::trace::spans`]) sent over OTLP/HTTP (protobuf) to a
//! collector when an endpoint is configured, and nothing at all otherwise (docs/operations.md,
//! "Traces"). The exporter runs on a thread of its own and sends in batches; a Lambda function
//! flushes it before each answer ([`flush`]), since the process may be frozen right after.

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use super::config::env_var;
use crate::trace::SPANS;

/// The `service.name` of the hub's spans when `OTEL_SERVICE_NAME` does not name one (on Lambda:
/// the function's name).
const SERVICE_NAME: &str = "webhook-hub";

/// The process's exporter, once tracing is on.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Where spans go: the `--otlp-endpoint` given (a collector's base URL, as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is), or the standard environment variables; `None` when
/// neither names one, or when `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A collector's base URL: spans go to `<url>/v1/traces`.
    Base(String),
    /// Whatever `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` say (the
    /// exporter reads them).
    FromEnvironment,
}

impl Endpoint {
    /// The endpoint this process exports to, if any: `explicit` (the command line) first.
    pub fn configured(explicit: Option<&str>) -> Option<Self> {
        let off = env_var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env_var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        if off {
            return None;
        }
        if let Some(url) = explicit.filter(|u| !u.trim().is_empty()) {
            return Some(Self::Base(url.trim().to_string()));
        }
        let from_env = env_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || env_var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        from_env.then_some(Self::FromEnvironment)
    }
}

/// The layer that exports the hub's spans to `endpoint` (only spans of the [`SPANS`] target: no
/// log line becomes a span event), or `None` when there is no endpoint or the exporter cannot be
/// built (said on stderr: the hub still runs, untraced).
pub fn layer<S>(endpoint: Option<Endpoint>) -> Option<impl Layer<S>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let endpoint = endpoint?;
    let mut exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary);
    if let Endpoint::Base(base) = &endpoint {
        exporter = exporter.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    let exporter = match exporter.build() {
        Ok(exporter) => exporter,
        Err(err) => {
            eprintln!("traces are off: the OTLP exporter could not be built: {err}");
            return None;
        }
    };
    let mut resource = Resource::builder();
    if env_var("OTEL_SERVICE_NAME").is_none() {
        let name = env_var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| SERVICE_NAME.into());
        resource = resource.with_service_name(name);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("webhook-hub");
    let _ = PROVIDER.set(provider);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_level(false)
        .with_tracked_inactivity(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.is_span() && meta.target() == SPANS
        }));
    Some(layer)
}

/// Whether this process exports spans.
pub fn is_on() -> bool {
    PROVIDER.get().is_some()
}

/// Sends the spans still waiting in the exporter's batch (a Lambda function, before it answers).
pub async fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let provider = provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.force_flush()).await;
    }
}

/// Sends what is left and stops the exporter (`serve`, at exit).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown();
    }
}
