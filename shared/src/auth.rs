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
        let Some(scopes) = &self.scopes else {
            return Ok(());
        };
        let allowed: Vec<&str> = scopes
            .iter()
            .filter_map(|s| s.strip_prefix("topic:"))
            .collect();
        if allowed.is_empty() || allowed.iter().any(|a| pattern_covers(a, pattern)) {
            Ok(())
        } else {
            Err(HubError::InsufficientScope(format!("topic:{pattern}")))
        }
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
}
