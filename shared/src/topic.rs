//! Topics and patterns: routing, the hub's core idea, as two types. A [`Topic`] names what an
//! event is about (`door.request.allowed`); a [`Pattern`] is what a subscription (or a
//! `topic:` scope) listens to: a topic, a prefix ending in `.*` (every deeper topic), or `*`.
//! Parsing is validating: a value of either type always follows the grammar.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, HubError, Result};

/// Shortest topic or pattern.
pub const MIN_LEN: usize = 3;
/// Longest topic or pattern.
pub const MAX_LEN: usize = 128;

fn is_segment_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Whether `text` is dot-separated non-empty segments of `[0-9A-Za-z_-]`.
fn segments_ok(text: &str) -> bool {
    text.split('.')
        .all(|seg| !seg.is_empty() && seg.chars().all(is_segment_char))
}

/// The namespace of the hub's own operational events (`hub.delivery.exhausted`, ...): producers
/// cannot publish under it, and only patterns that name it (`hub.*`, `hub.delivery.*`, a whole
/// topic) match it — `*` means every topic of the platform, not the hub's.
pub const OPERATIONAL_PREFIX: &str = "hub.";

/// Whether a topic or pattern text lies in the operational namespace.
fn is_operational(text: &str) -> bool {
    text.starts_with(OPERATIONAL_PREFIX)
}

/// A concrete topic: dot-separated segments of `[0-9A-Za-z_-]`, 3–128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Topic(String);

impl Topic {
    /// Parses a topic, or fails with `invalid_topic`.
    pub fn parse(text: &str) -> Result<Topic> {
        if (MIN_LEN..=MAX_LEN).contains(&text.len()) && segments_ok(text) {
            Ok(Topic(text.to_string()))
        } else {
            Err(HubError::invalid(
                ErrorCode::InvalidTopic,
                format!(
                    "topic `{text}` must be {MIN_LEN}-{MAX_LEN} characters of dot-separated [0-9A-Za-z_-] segments"
                ),
            ))
        }
    }

    /// The topic as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it is one of the hub's operational topics ([`OPERATIONAL_PREFIX`]).
    pub fn is_operational(&self) -> bool {
        is_operational(&self.0)
    }

    /// Every pattern that matches this topic: itself, each ancestor with `.*`, and `*`. Fan-out
    /// asks the store for exactly these, so it never scans.
    pub fn patterns(&self) -> Vec<Pattern> {
        let topic = self.as_str();
        let mut patterns = vec![Pattern(topic.to_string())];
        let mut end = topic.len();
        while let Some(dot) = topic[..end].rfind('.') {
            patterns.push(Pattern(format!("{}.*", &topic[..dot])));
            end = dot;
        }
        if !self.is_operational() {
            patterns.push(Pattern("*".to_string()));
        }
        patterns
    }
}

/// A subscription pattern: a topic, a topic prefix followed by `.*`, or `*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pattern(String);

impl Pattern {
    /// Parses a pattern, or fails with `invalid_topic`.
    pub fn parse(text: &str) -> Result<Pattern> {
        if text == "*" {
            return Ok(Pattern(text.to_string()));
        }
        let prefix = text.strip_suffix(".*").unwrap_or(text);
        if (MIN_LEN..=MAX_LEN).contains(&text.len()) && segments_ok(prefix) {
            Ok(Pattern(text.to_string()))
        } else {
            Err(HubError::invalid(
                ErrorCode::InvalidTopic,
                format!(
                    "topic pattern `{text}` must be a topic, `prefix.*` or `*` ({MIN_LEN}-{MAX_LEN} characters)"
                ),
            ))
        }
    }

    /// The pattern as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it names the hub's operational namespace ([`OPERATIONAL_PREFIX`]).
    pub fn is_operational(&self) -> bool {
        is_operational(self.as_str())
    }

    /// Whether this pattern matches `topic`.
    pub fn covers(&self, topic: &Topic) -> bool {
        self.covers_text(topic.as_str())
    }

    /// Whether every topic `inner` matches is also matched by this pattern (a scope covering a
    /// subscription's pattern).
    pub fn covers_pattern(&self, inner: &Pattern) -> bool {
        self.covers_text(inner.as_str())
    }

    fn covers_text(&self, inner: &str) -> bool {
        let outer = self.as_str();
        if outer == inner {
            return true;
        }
        if outer == "*" {
            return !is_operational(inner);
        }
        match outer.strip_suffix(".*") {
            Some(prefix) => inner
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.')),
            None => false,
        }
    }
}

macro_rules! text_impls {
    ($ty:ident) => {
        impl TryFrom<String> for $ty {
            type Error = HubError;
            fn try_from(text: String) -> Result<Self> {
                $ty::parse(&text)
            }
        }

        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                value.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

text_impls!(Topic);
text_impls!(Pattern);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_grammar() {
        for ok in [
            "door.request.allowed",
            "abc",
            "a-b_c.d",
            "webhook-subscribe-topic-48",
        ] {
            Topic::parse(ok).unwrap();
        }
        for bad in [
            "ab",
            "a..b",
            ".abc",
            "abc.",
            "a b",
            "door/x",
            &"x".repeat(129),
            "door.*",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_allow_trailing_wildcards_only() {
        for ok in ["*", "door.*", "door.request.*", "door.request.allowed"] {
            Pattern::parse(ok).unwrap();
        }
        for bad in ["d*", "*.door", "door.*.x", ".*", "a.*.*"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fan_out_patterns_cover_every_ancestor() {
        let topic = Topic::parse("door.request.allowed").unwrap();
        assert_eq!(
            topic.patterns(),
            ["door.request.allowed", "door.request.*", "door.*", "*"]
        );
        assert_eq!(Topic::parse("abc").unwrap().patterns(), ["abc", "*"]);
        for pattern in topic.patterns() {
            assert!(pattern.covers(&topic), "{pattern}");
        }
    }

    #[test]
    fn the_operational_namespace_is_matched_only_by_name() {
        let exhausted = Topic::parse("hub.delivery.exhausted").unwrap();
        assert!(exhausted.is_operational());
        assert_eq!(
            exhausted.patterns(),
            ["hub.delivery.exhausted", "hub.delivery.*", "hub.*"]
        );
        let all = Pattern::parse("*").unwrap();
        assert!(!all.covers(&exhausted));
        assert!(!all.covers_pattern(&Pattern::parse("hub.*").unwrap()));
        assert!(Pattern::parse("hub.*").unwrap().covers(&exhausted));
        assert!(all.covers(&Topic::parse("hubcap.sold").unwrap()));
        for pattern in exhausted.patterns() {
            assert!(pattern.covers(&exhausted), "{pattern}");
        }
    }

    #[test]
    fn coverage_is_by_whole_segments() {
        let door = Pattern::parse("door.*").unwrap();
        assert!(door.covers(&Topic::parse("door.front.opened").unwrap()));
        assert!(!door.covers(&Topic::parse("doorbell.ring").unwrap()));
        assert!(!door.covers(&Topic::parse("door").unwrap()));
        assert!(door.covers_pattern(&Pattern::parse("door.front.*").unwrap()));
        assert!(!door.covers_pattern(&Pattern::parse("*").unwrap()));
        let stored: Vec<Pattern> = serde_json::from_str(r#"["door.*", "*"]"#).unwrap();
        assert_eq!(stored, ["door.*", "*"]);
        assert!(serde_json::from_str::<Pattern>(r#""door.*.x""#).is_err());
    }
}
