//! The clock port: every notion of "now" goes through it, so tests move time without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use time::OffsetDateTime;

/// A source of the current time in Unix milliseconds.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock, optionally shifted by an offset that tests can move forward.
#[derive(Debug, Default)]
pub struct SystemClock {
    offset_ms: AtomicI64,
}

impl SystemClock {
    /// Moves this clock forward (or back) by `ms` milliseconds.
    pub fn advance(&self, ms: i64) {
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        now as i64 + self.offset_ms.load(Ordering::SeqCst)
    }
}

/// The machine's wall clock, Unix ms: for what the queues stamp, which no test clock moves.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 with milliseconds and `Z`, e.g. `2026-11-30T10:53:20.123Z`.
pub fn rfc3339(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Unix ms of an RFC 3339 time (any offset), or `None` when `text` is not one.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Seconds with three decimals, as `validity_ts` and `sent_ts` carry them.
pub fn seconds_ts(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_reads_back_what_it_writes() {
        let ms = 1_764_500_000_123;
        assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        assert_eq!(parse_rfc3339("2025-11-30T11:53:20.123+01:00"), Some(ms));
        for bad in ["", "yesterday", "2026-11-30", "1764500000"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_rfc3339_with_millis() {
        assert_eq!(rfc3339(1_764_500_000_123), "2025-11-30T10:53:20.123Z");
        assert_eq!(seconds_ts(1_764_500_000_123), 1_764_500_000.123);
    }

    #[test]
    fn advancing_moves_now() {
        let clock = SystemClock::default();
        let before = clock.now_ms();
        clock.advance(60_000);
        assert!(clock.now_ms() - before >= 60_000);
    }
}
