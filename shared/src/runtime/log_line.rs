//! The hub's JSON log line, written straight into the line buffer: `{"timestamp", "level",
//! then each field as recorded}`. tracing-subscriber's own JSON format gathers every field into a
//! map of `serde_json::Value`s first (an allocation per field, per line); one line per request
//! and per delivery attempt made that a measurable share of the hub's CPU (BENCHMARKS.md §2).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats each event as one JSON object on one line, fields flattened beside the timestamp
/// and level (the shape of tracing-subscriber's `json().flatten_event(true)`).
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, std::time::SystemTime::now())?;
        write!(writer, "\",\"level\":\"{}\"", event.metadata().level())?;
        let mut fields = Fields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str("}\n")
    }
}

/// Writes each recorded field as `,"name":value`.
struct Fields<'a, 'w> {
    out: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn name(&mut self, field: &Field) -> fmt::Result {
        self.out.write_str(",\"")?;
        Escaped(self.out).write_str(field.name())?;
        self.out.write_str("\":")
    }

    fn put(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| value(self.out));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, |out| {
            out.write_char('"')?;
            Escaped(out).write_str(value)?;
            out.write_char('"')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, |out| {
            if value.is_finite() {
                write!(out, "{value}")
            } else {
                out.write_str("null")
            }
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value}")?;
            out.write_char('"')
        });
    }
}

/// Escapes what it is given as the inside of a JSON string.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, c) in text.char_indices() {
            let escape = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                c if (c as u32) < 0x20 => "",
                _ => continue,
            };
            self.0.write_str(&text[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{:04x}", c as u32)?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + c.len_utf8();
        }
        self.0.write_str(&text[plain..])
    }
}

/// `2026-11-28T07:05:02.813183Z` (UTC, microseconds), computed without a calendar library.
fn write_timestamp(out: &mut impl fmt::Write, at: std::time::SystemTime) -> fmt::Result {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, second_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        since.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_the_calendar() {
        for ms in [0_i64, 951_782_400_123, 1_795_849_502_813, 4_107_542_399_999] {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
            let mut ours = String::new();
            write_timestamp(&mut ours, at).unwrap();
            let theirs = crate::clock::rfc3339(ms);
            assert_eq!(ours[..23], theirs[..23], "{ms}");
            assert!(ours.ends_with("000Z"));
        }
    }

    #[test]
    fn lines_are_json_with_every_field() {
        use tracing_subscriber::fmt::MakeWriter;
        #[derive(Clone, Default)]
        struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl<'a> MakeWriter<'a> for Sink {
            type Writer = Sink;
            fn make_writer(&'a self) -> Sink {
                self.clone()
            }
        }
        let sink = Sink::default();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLine)
            .with_writer(sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let id = "sub_1";
            let none: Option<u16> = None;
            tracing::warn!(subscription_id = %id, attempt = 2_u32, latency_ms = 7_u64, delivered = false,
                status_code = none, ratio = 0.5, odd = ?"a\"b\\c\n\u{1}é", "delivery attempt");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(text.ends_with("}\n") && text.lines().count() == 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "delivery attempt");
        assert_eq!(line["subscription_id"], "sub_1");
        assert_eq!(line["attempt"], 2);
        assert_eq!(line["latency_ms"], 7);
        assert_eq!(line["delivered"], false);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["odd"], "\"a\\\"b\\\\c\\n\\u{1}é\"");
        assert!(line.get("status_code").is_none(), "a None is left out");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
