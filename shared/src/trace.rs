//! An event's trace context: the W3C `traceparent` an event carries from its publish through the
//! queues to every delivery attempt, so one trace id ties a producer's request to each attempt,
//! a retry hours later included (docs/operations.md, "Traces").
//!
//! The context travels in the queue messages' bodies (the event and each delivery task), which
//! every queue adapter carries alike; nothing here knows a queue or an exporter.

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
}
