//! Who is calling: the account, the owner (token subject) and the scopes, whether they come from
//! an embedded-mode API key or a JWT authorizer's claims.

use crate::error::{HubError, Result};

/// Scope to create, change and delete subscriptions.
pub const SCOPE_SUBSCRIBE: &str = "webhooks:subscribe";
/// Scope to read subscriptions and their delivery logs.
pub const SCOPE_READ: &str = "webhooks:read";
/// Scope to publish events.
pub const SCOPE_PUBLISH: &str = "webhooks:publish";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant whose subscriptions and events it sees.
    pub account: String,
    /// The token's subject; recorded on subscriptions it creates.
    pub owner: String,
    /// `None` means every scope.
    pub scopes: Option<Vec<String>>,
}

impl Caller {
    /// Fails with `403 insufficient_scope` unless the caller holds `scope`.
    pub fn require(&self, scope: &str) -> Result<()> {
        match &self.scopes {
            Some(scopes) if !scopes.iter().any(|s| s == scope) => {
                Err(HubError::InsufficientScope(scope.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// Fails unless the caller's `topic:<pattern>` scopes (if it has any) cover `pattern`.
    pub fn require_topic(&self, pattern: &str) -> Result<()> {
        if self.covers(pattern) {
            Ok(())
        } else {
            Err(HubError::InsufficientScope(format!("topic:{pattern}")))
        }
    }

    /// Whether the caller's `topic:` scopes (if it has any) cover `pattern`.
    fn covers(&self, pattern: &str) -> bool {
        let Some(scopes) = &self.scopes else {
            return true;
        };
        let mut allowed = scopes
            .iter()
            .filter_map(|s| s.strip_prefix("topic:"))
            .peekable();
        allowed.peek().is_none() || allowed.any(|a| pattern_covers(a, pattern))
    }

    /// Whether the caller may act on (read, change, delete, rotate) a subscription with these
    /// topics: a topic-limited caller only on subscriptions whose every topic its scopes cover,
    /// so it can never redirect, read or remove another topic's deliveries.
    pub fn may_act_on(&self, topics: &[String]) -> bool {
        topics.iter().all(|t| self.covers(t))
    }
}

/// Whether every topic `inner` matches is also matched by `outer`.
pub fn pattern_covers(outer: &str, inner: &str) -> bool {
    if outer == "*" || outer == inner {
        return true;
    }
    match outer.strip_suffix(".*") {
        Some(prefix) => inner
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.')),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(scopes: &[&str]) -> Caller {
        Caller {
            account: "acme".into(),
            owner: "alice".into(),
            scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn scopes_gate_operations() {
        let c = caller(&["webhooks:read"]);
        c.require(SCOPE_READ).unwrap();
        assert_eq!(
            c.require(SCOPE_PUBLISH).unwrap_err().code(),
            "insufficient_scope"
        );
        let all = Caller { scopes: None, ..c };
        all.require(SCOPE_PUBLISH).unwrap();
    }

    #[test]
    fn topic_scopes_cover_patterns() {
        let c = caller(&["webhooks:subscribe", "topic:door.*"]);
        c.require_topic("door.request.allowed").unwrap();
        c.require_topic("door.request.*").unwrap();
        c.require_topic("door.*").unwrap();
        assert!(c.require_topic("*").is_err());
        assert!(c.require_topic("doorbell.ring").is_err());
        caller(&["webhooks:subscribe"]).require_topic("*").unwrap();
    }

    #[test]
    fn topic_limited_callers_act_only_on_covered_subscriptions() {
        let c = caller(&["webhooks:subscribe", "topic:door.*"]);
        assert!(c.may_act_on(&["door.opened".into(), "door.*".into()]));
        assert!(!c.may_act_on(&["door.opened".into(), "billing.*".into()]));
        assert!(!c.may_act_on(&["*".into()]));
        assert!(caller(&["webhooks:subscribe"]).may_act_on(&["*".into()]));
        let all = Caller { scopes: None, ..c };
        assert!(all.may_act_on(&["billing.*".into()]));
    }
}
