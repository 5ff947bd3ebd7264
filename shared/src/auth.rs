//! Who is calling: the account, the owner (token subject) and the scopes, whether they come from
//! an embedded-mode API key or a JWT authorizer's claims.

use crate::error::{HubError, Result};
use crate::topic::Pattern;

/// Scope to create, change and delete subscriptions.
pub const SCOPE_SUBSCRIBE: &str = "webhooks:subscribe";
/// Scope to read subscriptions and their delivery logs.
pub const SCOPE_READ: &str = "webhooks:read";
/// Scope to publish events.
pub const SCOPE_PUBLISH: &str = "webhooks:publish";
/// Scope to manage the account's event-type catalog and its settings (reading them needs none).
pub const SCOPE_ADMIN: &str = "webhooks:admin";

/// The strictest secrecy level: every field marked sensitive is removed. A caller bound to an
/// owner gets this floor unless its session or token says otherwise.
pub const STRICTEST_SECRECY: u8 = 2;

/// Which of its account's subscriptions a caller may see and touch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reach {
    /// Every subscription of the account (the platform's own API keys and JWTs).
    #[default]
    Account,
    /// Only those bound to the caller's owner (a customer in a portal session, a JWT whose
    /// owner claim names the customer): the others are absent to it, as another account's
    /// are, and whatever it creates is bound to its owner.
    Bound,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant whose subscriptions and events it sees.
    pub account: String,
    /// The token's subject, recorded on the account-wide subscriptions it creates; for a bound
    /// caller, the customer it is bound to.
    pub owner: String,
    /// `None` means every scope.
    pub scopes: Option<Vec<String>>,
    /// Which of the account's subscriptions it reaches.
    pub reach: Reach,
    /// The lowest secrecy level its subscriptions may have (a bound caller's minter decides;
    /// 0 for the platform's own callers).
    pub secrecy_floor: u8,
}

impl Caller {
    /// A caller reaching its whole account.
    pub fn of_account(
        account: impl Into<String>,
        owner: impl Into<String>,
        scopes: Option<Vec<String>>,
    ) -> Self {
        Caller {
            account: account.into(),
            owner: owner.into(),
            scopes,
            reach: Reach::Account,
            secrecy_floor: 0,
        }
    }

    /// A caller bound to the customer `owner` of `account`, with the secrecy floor its minter
    /// set.
    pub fn bound(
        account: impl Into<String>,
        owner: impl Into<String>,
        scopes: Option<Vec<String>>,
        secrecy_floor: u8,
    ) -> Self {
        Caller {
            reach: Reach::Bound,
            secrecy_floor,
            ..Caller::of_account(account, owner, scopes)
        }
    }

    /// The owner the caller is bound to; `None` for the platform's account-wide callers.
    pub fn bound_to(&self) -> Option<&str> {
        (self.reach == Reach::Bound).then_some(self.owner.as_str())
    }

    /// The customer something the caller makes (a subscription, an event) is for, given the
    /// owner it names: a bound caller's own whatever it names (naming another is `403`); for the
    /// platform's callers, the owner named (checked), or `None` for account-wide.
    pub fn owner_for(&self, named: Option<&str>) -> Result<Option<String>> {
        match (self.bound_to(), named) {
            (Some(mine), Some(other)) if other != mine => Err(HubError::InsufficientScope(
                format!("owner:{other} (this caller is bound to its own customer)"),
            )),
            (Some(mine), _) => Ok(Some(mine.to_string())),
            (None, Some(owner)) => crate::validate::owner(owner).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// Whether `sub` is within the caller's reach: its account, and for a bound caller only
    /// the subscriptions bound to the same owner (its topic scopes are checked apart, by
    /// [`Caller::may_act_on`]).
    pub fn reaches(&self, sub: &crate::model::Subscription) -> bool {
        self.account == sub.account
            && self
                .bound_to()
                .is_none_or(|mine| sub.bound_owner() == Some(mine))
    }

    /// The `topic:` patterns the caller is limited to; `None` when it may use every topic.
    pub fn topic_scopes(&self) -> Option<Vec<Pattern>> {
        let scopes = self.scopes.as_ref()?;
        let patterns: Vec<Pattern> = scopes
            .iter()
            .filter_map(|s| s.strip_prefix("topic:"))
            .filter_map(|s| Pattern::parse(s).ok())
            .collect();
        let limited = scopes.iter().any(|s| s.starts_with("topic:"));
        limited.then_some(patterns)
    }

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
    pub fn require_topic(&self, pattern: &Pattern) -> Result<()> {
        if self.covers(pattern) {
            Ok(())
        } else {
            Err(HubError::InsufficientScope(format!("topic:{pattern}")))
        }
    }

    /// Whether the caller's `topic:` scopes (if it has any) cover `pattern`. A scope that is no
    /// valid pattern covers nothing.
    fn covers(&self, pattern: &Pattern) -> bool {
        self.topic_scopes()
            .is_none_or(|allowed| allowed.iter().any(|a| a.covers_pattern(pattern)))
    }

    /// Whether the caller's `topic:` scopes (if it has any) let it see events of `topic` (the
    /// event history).
    pub fn may_see_topic(&self, topic: &crate::topic::Topic) -> bool {
        self.topic_scopes()
            .is_none_or(|allowed| allowed.iter().any(|a| a.covers(topic)))
    }

    /// Whether the caller may act on (read, change, delete, rotate) a subscription with these
    /// topics: a topic-limited caller only on subscriptions whose every topic its scopes cover,
    /// so it can never redirect, read or remove another topic's deliveries.
    pub fn may_act_on(&self, topics: &[Pattern]) -> bool {
        topics.iter().all(|t| self.covers(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(scopes: &[&str]) -> Caller {
        Caller::of_account(
            "acme",
            "alice",
            Some(scopes.iter().map(|s| s.to_string()).collect()),
        )
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

    fn p(text: &str) -> Pattern {
        Pattern::parse(text).unwrap()
    }

    #[test]
    fn topic_scopes_cover_patterns() {
        let c = caller(&["webhooks:subscribe", "topic:door.*"]);
        c.require_topic(&p("door.request.allowed")).unwrap();
        c.require_topic(&p("door.request.*")).unwrap();
        c.require_topic(&p("door.*")).unwrap();
        assert!(c.require_topic(&p("*")).is_err());
        assert!(c.require_topic(&p("doorbell.ring")).is_err());
        caller(&["webhooks:subscribe"])
            .require_topic(&p("*"))
            .unwrap();
    }

    #[test]
    fn topic_limited_callers_act_only_on_covered_subscriptions() {
        let c = caller(&["webhooks:subscribe", "topic:door.*"]);
        assert!(c.may_act_on(&[p("door.opened"), p("door.*")]));
        assert!(!c.may_act_on(&[p("door.opened"), p("billing.*")]));
        assert!(!c.may_act_on(&[p("*")]));
        assert!(caller(&["webhooks:subscribe"]).may_act_on(&[p("*")]));
        let all = Caller { scopes: None, ..c };
        assert!(all.may_act_on(&[p("billing.*")]));
    }
}
