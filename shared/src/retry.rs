//! The retry schedule: how long to wait before each next attempt, with jitter, never past the
//! subscription's lease, and how many attempts there are in all.

use std::time::Duration;

use crate::error::{ErrorCode, HubError, Result};

/// Delays between attempts. Attempt 1 is immediate; attempt `n + 1` waits `delays[n - 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
    jitter: f64,
}

impl Default for RetrySchedule {
    /// About 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, with ±20 % jitter.
    fn default() -> Self {
        Self::parse("5s,5m,30m,2h,5h,10h").expect("default schedule parses")
    }
}

/// The longest duration any setting takes (100 years): keeps every sum with a clock in range.
const MAX_DURATION_MS: u64 = 100 * 365 * 86_400_000;

/// Parses `90`, `500ms`, `5s`, `5m`, `2h` or `1d`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        HubError::invalid(
            ErrorCode::InvalidDuration,
            format!("`{text}` is not a duration like 5s, 5m, 2h"),
        )
    })?;
    let factor: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(HubError::invalid(
                ErrorCode::InvalidDuration,
                format!("unknown unit in `{text}`"),
            ));
        }
    };
    n.checked_mul(factor)
        .filter(|ms| *ms <= MAX_DURATION_MS)
        .map(Duration::from_millis)
        .ok_or_else(|| {
            HubError::invalid(
                ErrorCode::InvalidDuration,
                format!("`{text}` is longer than 100 years"),
            )
        })
}

impl RetrySchedule {
    /// Parses a comma-separated list like `5s,5m,30m,2h,5h,10h` (at most 12 h each, the SQS
    /// visibility limit).
    pub fn parse(text: &str) -> Result<Self> {
        let delays = text
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .map(parse_duration)
            .collect::<Result<Vec<_>>>()?;
        if delays.len() > 20 || delays.iter().any(|d| *d > Duration::from_secs(12 * 3600)) {
            return Err(HubError::invalid(
                ErrorCode::InvalidRetrySchedule,
                "at most 20 retries, each at most 12h",
            ));
        }
        Ok(RetrySchedule {
            delays,
            jitter: 0.2,
        })
    }

    /// A subscription's own schedule: these delays in seconds, with the default jitter.
    pub fn of_seconds(delays: &[u64]) -> Self {
        RetrySchedule {
            delays: delays.iter().map(|s| Duration::from_secs(*s)).collect(),
            ..RetrySchedule::default()
        }
    }

    /// The same schedule with another jitter fraction (0 for exact delays).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 0.9);
        self
    }

    /// Attempts in all: the first one and one per delay.
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The nominal delays.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// How long to wait after failed attempt number `attempt` (1-based), jittered, or `None` when
    /// it was the last. A receiver's `Retry-After` is a floor: the wait is the longer of the
    /// schedule's delay and the ask, never shorter than asked. Nothing here caps it; the sender
    /// drops a retry that would land after the subscription's lease.
    pub fn next_delay(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let nominal = *self.delays.get(attempt.checked_sub(1)? as usize)?;
        let factor = 1.0 + self.jitter * (rand::random::<f64>() * 2.0 - 1.0);
        let scheduled = nominal.mul_f64(factor);
        Some(retry_after.map_or(scheduled, |asked| asked.max(scheduled)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_has_six_retries() {
        let s = RetrySchedule::default();
        assert_eq!(s.max_attempts(), 7);
        assert_eq!(s.delays()[0], Duration::from_secs(5));
        assert_eq!(s.delays()[5], Duration::from_secs(36_000));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let s = RetrySchedule::default();
        for attempt in 1..=6 {
            let nominal = s.delays()[attempt as usize - 1];
            for _ in 0..200 {
                let d = s.next_delay(attempt, None).unwrap();
                assert!(
                    d >= nominal.mul_f64(0.8) && d <= nominal.mul_f64(1.2),
                    "{d:?} vs {nominal:?}"
                );
            }
        }
    }

    #[test]
    fn attempts_end_after_the_last_delay() {
        let s = RetrySchedule::parse("1s,2s").unwrap();
        assert!(s.next_delay(2, None).is_some());
        assert_eq!(s.next_delay(3, None), None);
        assert_eq!(s.next_delay(0, None), None);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let s = RetrySchedule::parse("5s,5m,10h").unwrap().with_jitter(0.0);
        assert_eq!(
            s.next_delay(1, Some(Duration::from_secs(1))),
            Some(Duration::from_secs(5)),
            "a shorter ask keeps the schedule's delay"
        );
        assert_eq!(
            s.next_delay(1, Some(Duration::from_secs(120))),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            s.next_delay(1, Some(Duration::from_secs(86_400))),
            Some(Duration::from_secs(86_400)),
            "longer than the longest delay: still honoured (the lease is the only cap)"
        );
        let short = RetrySchedule::parse("1s").unwrap();
        for _ in 0..100 {
            assert!(
                short.next_delay(1, Some(Duration::from_secs(3))).unwrap()
                    >= Duration::from_secs(3)
            );
        }
    }

    #[test]
    fn huge_durations_are_refused_not_overflowed() {
        for text in [
            "18446744073709551615h",
            "99999999999999999d",
            "213503982334601d",
        ] {
            assert_eq!(
                parse_duration(text).unwrap_err().code(),
                "invalid_duration",
                "{text}"
            );
        }
        assert!(RetrySchedule::parse("99999999999999999999h").is_err());
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert!(parse_duration("5y").is_err());
        assert!(RetrySchedule::parse("13h").is_err());
    }
}
