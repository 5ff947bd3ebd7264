//! An event's trace context: the W3C `traceparent` an event carries from its publish through the
//! queues to every delivery attempt, so one trace id ties a producer's request to each attempt,
//! a retry hours later included (docs/operations.md, "Traces").
//!
//! The context travels in the queue messages' bodies (the event and each delivery task), which
//! every queue adapter carries alike; nothing here knows a queue or an exporter.
//!
//! [`spans`] builds the hub's few spans (a request, an event's fan-out, each delivery attempt, a
//! sweep) as `tracing` spans under one target, [`SPANS`]: only the OpenTelemetry layer
//! (`runtime::telemetry`) enables that target, so with tracing off every span is a disabled
//! `tracing` span that costs a callsite check and records nothing.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A W3C trace context (`traceparent`, version `00`): a 16-byte trace id, the 8-byte id of the
/// span it continues, and the sampled flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace id, never all zero.
    pub trace_id: [u8; 16],
    /// The parent span's id, never all zero.
    pub span_id: [u8; 8],
    /// Whether the caller records this trace.
    pub sampled: bool,
}

impl TraceParent {
    /// Reads a `traceparent` header value; `None` when it is not a valid version-00 one (an
    /// invalid header starts a new trace, as the W3C recommendation says, rather than fail the
    /// request). Later versions are read by their first four fields.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        let rest = parts.next();
        let [version]: [u8; 1] = hex_bytes(version)?;
        if version == 0xff || (version == 0 && rest.is_some()) {
            return None;
        }
        let trace_id: [u8; 16] = hex_bytes(trace)?;
        let span_id: [u8; 8] = hex_bytes(span)?;
        let [flags]: [u8; 1] = hex_bytes(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The `traceparent` of a request's headers, where one valid header came (several, or an
    /// invalid one, start a new trace).
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        let mut values = headers.get_all("traceparent").iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        Self::parse(value.to_str().ok()?)
    }

    /// A new trace, sampled: for a publish that came without a context.
    pub fn new_root() -> Self {
        Self {
            trace_id: nonzero_random(),
            span_id: nonzero_random(),
            sampled: true,
        }
    }

    /// The same trace, continued by a new span of ours (the id of that span).
    pub fn child(&self) -> Self {
        Self {
            span_id: nonzero_random(),
            ..*self
        }
    }

    /// Reads an X-Ray trace header (`Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1`,
    /// SQS's `AWSTraceHeader`): the root's 8 + 24 hex digits are the W3C trace id. Without a
    /// `Parent` the context continues the trace under a span id of ours; `Sampled=0` is kept,
    /// a missing or `?` decision counts as sampled (the hub's sampler decides).
    pub fn from_xray(header: &str) -> Option<Self> {
        let mut root = None;
        let mut parent = None;
        let mut sampled = true;
        for field in header.split(';') {
            let Some((key, value)) = field.trim().split_once('=') else {
                continue;
            };
            match key {
                "Root" => root = Some(value),
                "Parent" => parent = Some(value),
                "Sampled" => sampled = value != "0",
                _ => {}
            }
        }
        let mut parts = root?.split('-');
        let (version, time, id) = (parts.next()?, parts.next()?, parts.next()?);
        if version != "1" || time.len() != 8 || id.len() != 24 || parts.next().is_some() {
            return None;
        }
        let trace_id: [u8; 16] = hex_bytes(&format!("{time}{id}"))?;
        let span_id: [u8; 8] = match parent {
            Some(parent) => hex_bytes(parent)?,
            None => nonzero_random(),
        };
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled,
        })
    }

    /// The trace id as 32 lowercase hex digits (what logs and trace viewers show).
    pub fn trace_id_hex(&self) -> String {
        crate::signing::hex(&self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            crate::signing::hex(&self.trace_id),
            crate::signing::hex(&self.span_id),
            u8::from(self.sampled)
        )
    }
}

impl Serialize for TraceParent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TraceParent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom("not a W3C traceparent"))
    }
}

/// `N` bytes from exactly `2N` hex digits (either case).
fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        // `from_str_radix` takes a sign: only hex digits pass.
        if !pair.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// Random bytes, not all zero (an all-zero id is invalid).
fn nonzero_random<const N: usize>() -> [u8; N] {
    loop {
        let bytes: [u8; N] = rand::random();
        if bytes != [0; N] {
            return bytes;
        }
    }
}

/// The `tracing` target of the hub's spans: what the OpenTelemetry layer exports, and what the
/// log lines leave out.
pub const SPANS: &str = "webhook_hub::spans";

impl TraceParent {
    /// The OpenTelemetry context of a span continuing this one (a remote parent).
    pub fn to_otel(&self) -> opentelemetry::Context {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
        };
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let context = SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            flags,
            true,
            TraceState::default(),
        );
        opentelemetry::Context::new().with_remote_span_context(context)
    }

    /// The context an event published under `span` carries: the span's own where tracing is
    /// on (a child of `incoming`, or the root of a new trace), else `incoming` continued by a
    /// span id of ours, else none.
    pub fn carried(span: &tracing::Span, incoming: Option<&Self>) -> Option<Self> {
        Self::of_span(span).or_else(|| incoming.map(Self::child))
    }

    /// The context of `span` as the OpenTelemetry layer made it (its trace and its own span
    /// id), or `None` when tracing is off.
    pub fn of_span(span: &tracing::Span) -> Option<Self> {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        if span.is_disabled() {
            return None;
        }
        let context = span.context();
        let span = context.span();
        let context = span.span_context();
        context.is_valid().then(|| Self {
            trace_id: context.trace_id().to_bytes(),
            span_id: context.span_id().to_bytes(),
            sampled: context.is_sampled(),
        })
    }
}

/// The hub's spans, named and attributed after OpenTelemetry's semantic conventions for HTTP and
/// messaging where they apply, with `webhook.*` attributes for the rest. None holds a secret, a
/// payload or a receiver's credential: ids, counts, statuses and the callback's host only.
/// docs/operations.md "Traces" lists them.
pub mod spans {
    use tracing::Span;
    use tracing::field::Empty;

    use super::{SPANS, TraceParent};

    /// Makes `span` a child of `parent`, where tracing is on and there is one.
    fn continuing(span: Span, parent: Option<&TraceParent>) -> Span {
        if let Some(parent) = parent
            && !span.is_disabled()
        {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let _ = span.set_parent(parent.to_otel());
        }
        span
    }

    /// An API request (a server span), in the producer's trace where it sent a `traceparent`:
    /// named by its method and route template (`POST /v1/events`), or its method alone for a
    /// path no route matches.
    pub fn request(
        method: &str,
        template: impl FnOnce() -> Option<&'static str>,
        parent: Option<&TraceParent>,
    ) -> Span {
        let span = tracing::info_span!(
            target: SPANS,
            "request",
            otel.name = Empty,
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = method,
            http.route = Empty,
            http.response.status_code = Empty,
            webhook.account = Empty,
        );
        if span.is_disabled() {
            return span;
        }
        match template() {
            Some(template) => {
                span.record("otel.name", format!("{method} {template}"));
                span.record("http.route", template);
            }
            None => {
                span.record("otel.name", method);
            }
        }
        continuing(span, parent)
    }

    /// Records a request's answer (a `5xx` marks the span an error, as the HTTP conventions
    /// say for servers).
    pub fn answered(span: &Span, status: u16, account: &str) {
        span.record("http.response.status_code", status);
        if !account.is_empty() {
            span.record("webhook.account", account);
        }
        if status >= 500 {
            span.record("otel.status_code", "ERROR");
        }
    }

    /// One event's fan-out (a consumer span of the events queue), a child of its publish.
    pub fn fan_out(event: &crate::model::Event) -> Span {
        let span = tracing::info_span!(
            target: SPANS,
            "fan-out",
            otel.kind = "consumer",
            messaging.operation.name = "fan-out",
            messaging.operation.type = "process",
            messaging.destination.name = "events",
            messaging.message.id = %event.id,
            webhook.event.id = %event.id,
            webhook.event.type = %event.topic,
            webhook.account = %event.account,
            webhook.subscriptions = Empty,
        );
        continuing(span, event.trace.as_ref())
    }

    /// One ingest-queue message published (a consumer span), a child of the producer's context
    /// the message carried, where it had one.
    pub fn ingest(queue: &str, message_id: &str, parent: Option<&TraceParent>) -> Span {
        let span = tracing::info_span!(
            target: SPANS,
            "ingest",
            otel.kind = "consumer",
            messaging.system = "aws_sqs",
            messaging.operation.name = "ingest",
            messaging.operation.type = "process",
            messaging.destination.name = queue,
            messaging.message.id = message_id,
        );
        continuing(span, parent)
    }

    /// Records how many subscriptions an event was fanned out to.
    pub fn fanned_out(span: &Span, subscriptions: usize) {
        span.record("webhook.subscriptions", subscriptions);
    }

    /// One delivery attempt (an HTTP client span), a child of the event's publish: every
    /// attempt, a retry hours later included, is in the event's trace. Only the callback's
    /// scheme, host and port are recorded, never its path or query (which may hold a token).
    pub fn attempt(
        task: &crate::model::DeliveryTask,
        attempt: u32,
        message_id: &str,
        callback_url: &str,
    ) -> Span {
        let event = match &task.payload {
            crate::model::TaskPayload::Event { event } => Some(event),
            _ => None,
        };
        let span = tracing::info_span!(
            target: SPANS,
            "POST",
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = "POST",
            http.request.resend_count = attempt.saturating_sub(1),
            url.scheme = Empty,
            server.address = Empty,
            server.port = Empty,
            http.response.status_code = Empty,
            error.type = Empty,
            webhook.subscription.id = %task.subscription_id,
            webhook.message.id = message_id,
            webhook.event.id = event.map(|e| e.id.as_str()),
            webhook.event.type = event.map(|e| e.topic.as_str()),
            webhook.attempt = attempt,
        );
        if span.is_disabled() {
            return span;
        }
        if let Ok(url) = url::Url::parse(callback_url) {
            span.record("url.scheme", url.scheme());
            if let Some(host) = url.host_str() {
                span.record("server.address", host);
            }
            if let Some(port) = url.port_or_known_default() {
                span.record("server.port", port);
            }
        }
        continuing(span, event.and_then(|e| e.trace.as_ref()))
    }

    /// Records an attempt's outcome: the status, and the error class of a failure (a status
    /// code for an answer that was not `2xx`, as the HTTP conventions say).
    pub fn attempted(span: &Span, outcome: &crate::ports::TransportOutcome) {
        if span.is_disabled() {
            return;
        }
        if let Some(status) = outcome.status {
            span.record("http.response.status_code", status);
        }
        let failed = match (outcome.status, outcome.error) {
            (Some(status), _) if !(200..300).contains(&status) => Some(status.to_string()),
            (_, Some(error)) if outcome.status.is_none() => Some(error.as_str().to_string()),
            _ => None,
        };
        if let Some(class) = failed {
            span.record("error.type", class);
            span.record("otel.status_code", "ERROR");
        }
    }

    /// One sweep of the lease (an internal span, a trace of its own).
    pub fn sweep() -> Span {
        tracing::info_span!(
            target: SPANS,
            "sweep",
            otel.kind = "internal",
            webhook.removed = Empty,
            webhook.notices = Empty,
        )
    }

    /// Records what a sweep did.
    pub fn swept(span: &Span, removed: usize, notices: usize) {
        span.record("webhook.removed", removed);
        span.record("webhook.notices", notices);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_reads_and_writes_back() {
        let parent = TraceParent::parse(SAMPLE).expect("valid");
        assert!(parent.sampled);
        assert_eq!(parent.to_string(), SAMPLE);
        assert_eq!(parent.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let upper = TraceParent::parse(&SAMPLE.to_uppercase()).expect("either case");
        assert_eq!(upper, parent);
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-zbf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A later version is read by its first four fields.
        assert!(TraceParent::parse(&format!("01{}-what-comes-next", &SAMPLE[2..])).is_some());
    }

    #[test]
    fn a_child_keeps_the_trace_and_takes_a_new_span() {
        let parent = TraceParent::parse(SAMPLE).unwrap();
        let child = parent.child();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
        let root = TraceParent::new_root();
        assert_ne!(root.trace_id, [0; 16]);
        assert_eq!(TraceParent::parse(&root.to_string()), Some(root));
    }

    #[test]
    fn it_travels_as_its_header_value_in_json() {
        let parent = TraceParent::parse(SAMPLE).unwrap();
        let json = serde_json::to_string(&parent).unwrap();
        assert_eq!(json, format!("\"{SAMPLE}\""));
        assert_eq!(serde_json::from_str::<TraceParent>(&json).unwrap(), parent);
        assert!(serde_json::from_str::<TraceParent>("\"nope\"").is_err());
    }

    #[test]
    fn an_xray_header_reads_as_the_same_trace() {
        let read = TraceParent::from_xray(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .expect("valid");
        assert_eq!(read.trace_id_hex(), "5759e988bd862e3fe1be46a994272793");
        assert_eq!(crate::signing::hex(&read.span_id), "53995c3f42cd8ad8");
        assert!(read.sampled);
        let unsampled =
            TraceParent::from_xray("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0")
                .expect("no parent: a span id of ours");
        assert!(!unsampled.sampled);
        assert_ne!(unsampled.span_id, [0; 8]);
        for bad in [
            "",
            "Parent=53995c3f42cd8ad8",
            "Root=2-5759e988-bd862e3fe1be46a994272793",
            "Root=1-5759e98-bd862e3fe1be46a994272793",
            "Root=1-00000000-000000000000000000000000",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=xyz",
        ] {
            assert_eq!(TraceParent::from_xray(bad), None, "{bad:?}");
        }
    }
}
