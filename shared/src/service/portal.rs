//! Portal sessions (`docs/portal.md`): the platform mints a short-lived link for one of its
//! customers; the token in it is sealed by the hub and stands for a caller that reaches only that
//! owner's subscriptions, only the session's topics, and reads or also writes as granted. The
//! API takes it under `/portal/api/` on every backend, so one scope model serves both the
//! platform's callers and its customers.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::{Deserialize, Serialize};

use crate::auth::{Caller, Reach, SCOPE_READ, SCOPE_SUBSCRIBE, STRICTEST_SECRECY};
use crate::context::Hub;
use crate::error::{ErrorCode, HubError, Result};
use crate::signing::{constant_time_eq, hmac_sha256};
use crate::topic::Pattern;
use crate::validate;

/// What every portal session token starts with.
pub const TOKEN_PREFIX: &str = "whpt_";
/// A session lasts an hour unless the platform asks otherwise.
pub const DEFAULT_EXPIRES_SECS: u64 = 3_600;
/// Shortest session.
pub const MIN_EXPIRES_SECS: u64 = 60;
/// Longest session: a day; the platform mints a new link when its customer comes back.
pub const MAX_EXPIRES_SECS: u64 = 86_400;
/// The theme variables a platform may set, each a CSS colour in hex (`#0a7` or `#00aa77`).
pub const THEME_VARIABLES: &[&str] = &["accent", "background", "surface", "text", "danger"];

/// What a portal session lets its customer do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortalAccess {
    /// Look: subscriptions, delivery logs, the chart.
    Read,
    /// Look and change: create, edit, pause, delete, rotate, resend, recover, send a test event.
    #[default]
    Write,
}

impl PortalAccess {
    /// The scopes a session of this access carries: each one its minter must hold too.
    pub fn scopes(self) -> &'static [&'static str] {
        match self {
            PortalAccess::Read => &[SCOPE_READ],
            PortalAccess::Write => &[SCOPE_READ, SCOPE_SUBSCRIBE],
        }
    }
}

/// `POST /v1/portal/sessions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalSessionRequest {
    /// The customer: subscriptions created in the portal record it as their owner, and the
    /// portal shows only subscriptions it owns.
    pub owner: String,
    /// The topics (patterns) the customer may subscribe to; by default what the minting caller
    /// may use (`*` for an unlimited caller).
    pub topics: Option<Vec<String>>,
    /// Seconds until the link stops working.
    pub expires_in: Option<u64>,
    /// Read only, or read and write (default).
    pub access: Option<PortalAccess>,
    /// Colours the portal shows in, by variable name (`THEME_VARIABLES`).
    pub theme: Option<BTreeMap<String, String>>,
    /// The lowest secrecy level the customer may give its subscriptions (0 to 2; default 2,
    /// the strictest: every field marked sensitive is removed).
    pub secrecy_floor: Option<u8>,
}

/// What a session token carries, sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalSession {
    /// The account the customer belongs to.
    pub account: String,
    /// The customer.
    pub owner: String,
    /// The topic patterns allowed.
    pub topics: Vec<Pattern>,
    /// Read, or read and write.
    pub access: PortalAccess,
    /// When it ends, Unix ms.
    pub expires_at_ms: i64,
    /// Theme colours.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub theme: BTreeMap<String, String>,
    /// The lowest secrecy level its subscriptions may have.
    #[serde(default = "strictest")]
    pub secrecy_floor: u8,
}

fn strictest() -> u8 {
    STRICTEST_SECRECY
}

impl PortalSession {
    /// The caller the session stands for: bound to its owner (its subscriptions only, its
    /// events only), its topics only, never below its secrecy floor, never publishing and never
    /// minting.
    pub fn caller(&self) -> Caller {
        let mut scopes: Vec<String> = self.access.scopes().iter().map(|s| s.to_string()).collect();
        scopes.extend(self.topics.iter().map(|t| format!("topic:{t}")));
        Caller::bound(
            self.account.clone(),
            self.owner.clone(),
            Some(scopes),
            self.secrecy_floor,
        )
    }
}

/// A minted session: the token and the link that carries it.
#[derive(Debug, Clone)]
pub struct MintedSession {
    /// The sealed token (`whpt_…`).
    pub token: String,
    /// The portal's address with the token in its fragment (never sent to a server).
    pub url: String,
    /// What the token carries.
    pub session: PortalSession,
}

fn theme(given: BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
    for (name, value) in &given {
        if !THEME_VARIABLES.contains(&name.as_str()) {
            return Err(HubError::invalid(
                ErrorCode::InvalidTheme,
                format!(
                    "unknown theme variable `{name}`; the portal takes {}",
                    THEME_VARIABLES.join(", ")
                ),
            ));
        }
        let hex = value.strip_prefix('#').unwrap_or("");
        if ![3, 6].contains(&hex.len()) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(HubError::invalid(
                ErrorCode::InvalidTheme,
                format!("theme `{name}` must be a hex colour such as #0b6e4f, not `{value}`"),
            ));
        }
    }
    Ok(given)
}

impl Hub {
    /// Rotates the key sessions are signed with; sessions signed before stay valid until they
    /// end (the old key verifies for the longest a session lives).
    pub async fn rotate_portal_key(&self) -> Result<()> {
        self.keys
            .rotate_portal_key(self.now_ms(), MAX_EXPIRES_SECS as i64 * 1000)
            .await
    }

    /// `POST /v1/portal/sessions`: mints a session no wider than the minting caller (its topics
    /// covered by the caller's, every scope of its access held by the caller). A portal session
    /// mints nothing, nor does any other caller bound to an owner.
    pub async fn mint_portal_session(
        &self,
        caller: &Caller,
        req: PortalSessionRequest,
    ) -> Result<MintedSession> {
        if caller.reach != Reach::Account {
            return Err(HubError::InsufficientScope(
                "the platform's own credentials (a portal session mints no sessions)".into(),
            ));
        }
        let access = req.access.unwrap_or_default();
        access.scopes().iter().try_for_each(|s| caller.require(s))?;
        let owner = validate::owner(&req.owner)?;
        let secrecy_floor = req.secrecy_floor.unwrap_or(STRICTEST_SECRECY);
        validate::secrecy_level(secrecy_floor)?;
        let topics = match req.topics {
            Some(topics) => validate::topics(Some(topics), None)?,
            None => caller
                .topic_scopes()
                .filter(|limited| !limited.is_empty())
                .unwrap_or_else(|| vec![Pattern::parse("*").expect("`*` is a pattern")]),
        };
        if let Some(reserved) = topics.iter().find(|t| t.is_operational()) {
            // Operational events describe every subscription of the account: the platform's.
            return Err(HubError::invalid(
                ErrorCode::InvalidTopic,
                format!(
                    "`{reserved}` is one of the hub's own topics, which only the platform's credentials subscribe to"
                ),
            ));
        }
        topics.iter().try_for_each(|t| caller.require_topic(t))?;
        let expires_in = req.expires_in.unwrap_or(DEFAULT_EXPIRES_SECS);
        if !(MIN_EXPIRES_SECS..=MAX_EXPIRES_SECS).contains(&expires_in) {
            return Err(HubError::invalid(
                ErrorCode::InvalidExpires,
                format!(
                    "`expires_in` must be {MIN_EXPIRES_SECS} to {MAX_EXPIRES_SECS} seconds, not {expires_in}"
                ),
            ));
        }
        let session = PortalSession {
            account: caller.account.clone(),
            owner,
            topics,
            access,
            expires_at_ms: self.now_ms() + expires_in as i64 * 1000,
            theme: theme(req.theme.unwrap_or_default())?,
            secrecy_floor,
        };
        let token = self.seal(&session).await?;
        let url = format!("{}/portal#session={token}", self.settings.public_url);
        Ok(MintedSession {
            token,
            url,
            session,
        })
    }

    async fn seal(&self, session: &PortalSession) -> Result<String> {
        let claims = serde_json::to_vec(session).map_err(HubError::backend)?;
        let sealed = format!("{TOKEN_PREFIX}{}", B64URL.encode(claims));
        let keys = self.keys.portal_keys(self.now_ms(), false).await?;
        let tag = hmac_sha256(&keys.signing, &[sealed.as_bytes()]);
        Ok(format!("{sealed}.{}", B64URL.encode(tag)))
    }

    /// The session a token stands for: `401 invalid_session` unless the hub sealed it as it
    /// is, `401 session_expired` past its end.
    pub async fn open_portal_session(&self, token: &str) -> Result<PortalSession> {
        let (sealed, tag) = token
            .starts_with(TOKEN_PREFIX)
            .then(|| token.rsplit_once('.'))
            .flatten()
            .ok_or(HubError::InvalidSession)?;
        let tag = B64URL.decode(tag).map_err(|_| HubError::InvalidSession)?;
        let signed_by = |keys: &crate::keyring::PortalKeys| {
            keys.verifying
                .iter()
                .any(|key| constant_time_eq(&tag, &hmac_sha256(key, &[sealed.as_bytes()])))
        };
        // Another process may have rotated the keys since this one read them: read once more.
        if !signed_by(&self.keys.portal_keys(self.now_ms(), false).await?)
            && !signed_by(&self.keys.portal_keys(self.now_ms(), true).await?)
        {
            return Err(HubError::InvalidSession);
        }
        let claims = B64URL
            .decode(&sealed[TOKEN_PREFIX.len()..])
            .map_err(|_| HubError::InvalidSession)?;
        let session: PortalSession =
            serde_json::from_slice(&claims).map_err(|_| HubError::InvalidSession)?;
        if session.expires_at_ms <= self.now_ms() {
            return Err(HubError::SessionExpired);
        }
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::memory_hub;

    fn platform(scopes: Option<&[&str]>) -> Caller {
        Caller::of_account(
            "acme",
            "acme:platform",
            scopes.map(|s| s.iter().map(|s| s.to_string()).collect()),
        )
    }

    fn request(body: serde_json::Value) -> PortalSessionRequest {
        serde_json::from_value(body).unwrap()
    }

    #[tokio::test]
    async fn a_session_is_sealed_scoped_and_ends() {
        let (mut hub, _) = memory_hub(Default::default());
        let clock = std::sync::Arc::new(crate::clock::SystemClock::default());
        hub.clock = clock.clone();
        let minted = hub
            .mint_portal_session(
                &platform(None),
                request(
                    serde_json::json!({"owner": "customer-7", "topics": ["door.*"],
                    "expires_in": 120, "theme": {"accent": "#0b6e4f"}}),
                ),
            )
            .await
            .unwrap();
        assert!(
            minted
                .url
                .ends_with(&format!("/portal#session={}", minted.token))
        );
        let session = hub.open_portal_session(&minted.token).await.unwrap();
        assert_eq!(session, minted.session);
        let caller = session.caller();
        assert_eq!(caller.reach, Reach::Bound);
        assert_eq!(caller.bound_to(), Some("customer-7"));
        assert_eq!(caller.secrecy_floor, STRICTEST_SECRECY);
        caller.require(SCOPE_SUBSCRIBE).unwrap();
        assert!(caller.require(crate::auth::SCOPE_PUBLISH).is_err());
        assert!(
            caller
                .require_topic(&Pattern::parse("billing.*").unwrap())
                .is_err()
        );
        // A session mints nothing.
        let again = hub
            .mint_portal_session(&caller, request(serde_json::json!({"owner": "x"})))
            .await;
        assert_eq!(again.unwrap_err().code(), "insufficient_scope");
        // Altered claims or a foreign tag do not open.
        let (sealed, tag) = minted.token.rsplit_once('.').unwrap();
        let forged = format!("{}x.{tag}", sealed);
        assert_eq!(
            hub.open_portal_session(&forged).await.unwrap_err().code(),
            "invalid_session"
        );
        let (other, _) = memory_hub(Default::default());
        assert_eq!(
            other
                .open_portal_session(&minted.token)
                .await
                .unwrap_err()
                .code(),
            "invalid_session"
        );
        clock.advance(121_000);
        assert_eq!(
            hub.open_portal_session(&minted.token)
                .await
                .unwrap_err()
                .code(),
            "session_expired"
        );
    }

    #[tokio::test]
    async fn a_session_is_never_wider_than_its_minter() {
        let (hub, _) = memory_hub(Default::default());
        let limited = platform(Some(&["webhooks:read", "topic:door.*"]));
        let mint = |body| hub.mint_portal_session(&limited, request(body));
        assert_eq!(
            mint(serde_json::json!({"owner": "c"}))
                .await
                .unwrap_err()
                .code(),
            "insufficient_scope",
            "write access needs webhooks:subscribe"
        );
        let read = mint(serde_json::json!({"owner": "c", "access": "read"}))
            .await
            .unwrap();
        assert_eq!(read.session.topics, vec![Pattern::parse("door.*").unwrap()]);
        assert_eq!(
            mint(serde_json::json!({"owner": "c", "access": "read", "topics": ["*"]}))
                .await
                .unwrap_err()
                .code(),
            "insufficient_scope"
        );
        for (body, code) in [
            (serde_json::json!({"owner": ""}), "invalid_owner"),
            (serde_json::json!({"owner": "a\nb"}), "invalid_owner"),
            (
                serde_json::json!({"owner": "c", "expires_in": 10}),
                "invalid_expires",
            ),
            (
                serde_json::json!({"owner": "c", "theme": {"accent": "red;}"}}),
                "invalid_theme",
            ),
            (
                serde_json::json!({"owner": "c", "theme": {"font": "#fff"}}),
                "invalid_theme",
            ),
            (
                serde_json::json!({"owner": "c", "topics": []}),
                "invalid_topics",
            ),
        ] {
            let err = hub
                .mint_portal_session(&platform(None), request(body.clone()))
                .await
                .unwrap_err();
            assert_eq!(err.code(), code, "{body}");
        }
    }
}
