//! Validation rules of the API, each failing with its own stable code.

use std::net::IpAddr;

use serde_json::Value;
use url::{Host, Url};

use crate::error::{ErrorCode, HubError, Result};
use crate::model::{LabelFilter, MAX_LEASE_SECS, MIN_LEASE_SECS, ReceiverAuth};
use crate::signing::{SignatureScheme, SigningAlgorithm, WHPK_PREFIX, WHSEC_PREFIX, WHSK_PREFIX};
use crate::ssrf;
use crate::topic::Pattern;

/// Longest callback URL.
pub const MAX_CALLBACK_LEN: usize = 512;
/// Longest subscription name.
pub const MAX_NAME_LEN: usize = 70;
/// Largest `user_data`, serialized.
pub const MAX_USER_DATA_BYTES: usize = 1024;
/// Most topics on one subscription.
pub const MAX_TOPICS: usize = 50;
/// Longest plain (non-`whsec_`) secret.
pub const MAX_SECRET_LEN: usize = 255;

/// The topics of a subscribe or update body: `topics` (1–50) or `topic`, validated and deduplicated.
pub fn topics(topics: Option<Vec<String>>, topic: Option<String>) -> Result<Vec<Pattern>> {
    let mut list = match (topics, topic) {
        (Some(list), None) => list,
        (None, Some(one)) => vec![one],
        (Some(_), Some(_)) => {
            return Err(HubError::invalid(
                ErrorCode::InvalidTopics,
                "give `topics` or `topic`, not both",
            ));
        }
        (None, None) => {
            return Err(HubError::invalid(
                ErrorCode::MissingTopics,
                "`topics` (or `topic`) is required",
            ));
        }
    };
    list.dedup();
    let mut seen = std::collections::BTreeSet::new();
    list.retain(|t| seen.insert(t.clone()));
    if list.is_empty() || list.len() > MAX_TOPICS {
        return Err(HubError::invalid(
            ErrorCode::InvalidTopics,
            format!("give 1 to {MAX_TOPICS} topics"),
        ));
    }
    list.iter().map(|p| Pattern::parse(p)).collect()
}

/// A callback URL: at most 512 characters, `https` (or `http` when private targets are allowed),
/// no credentials, and not an inward IP literal in any notation (`127.1`, `0x7f.1`, `[::ffff:…]`;
/// the URL parser normalizes them all) nor `localhost`.
pub fn callback_url(raw: &str, allow_private_targets: bool) -> Result<Url> {
    if raw.len() > MAX_CALLBACK_LEN {
        return Err(HubError::invalid(
            ErrorCode::InvalidCallbackUrl,
            format!("callback_url is longer than {MAX_CALLBACK_LEN} characters"),
        ));
    }
    let url = Url::parse(raw).map_err(|e| {
        HubError::invalid(
            ErrorCode::InvalidCallbackUrl,
            format!("callback_url is not a valid URL: {e}"),
        )
    })?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private_targets => {}
        _ => {
            return Err(HubError::invalid(
                ErrorCode::WebhookUnsupportedProtocol,
                "callback_url must use https",
            ));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(HubError::invalid(
            ErrorCode::InvalidCallbackUrl,
            "callback_url must not carry credentials; use receiver_auth",
        ));
    }
    if url.fragment().is_some() {
        return Err(HubError::invalid(
            ErrorCode::InvalidCallbackUrl,
            "callback_url must not have a fragment",
        ));
    }
    let host = url.host().ok_or_else(|| {
        HubError::invalid(ErrorCode::InvalidCallbackUrl, "callback_url has no host")
    })?;
    if !allow_private_targets {
        let ip = match host {
            Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    Some(IpAddr::from([127, 0, 0, 1]))
                } else {
                    None
                }
            }
        };
        if let Some(ip) = ip.filter(|ip| ssrf::is_forbidden(*ip)) {
            return Err(HubError::invalid(
                ErrorCode::ForbiddenTarget,
                format!("callback_url points at a non-public address ({ip})"),
            ));
        }
    }
    Ok(url)
}

/// `expires` in seconds: default and maximum 604800, minimum 60.
pub fn lease_secs(expires: Option<i64>) -> Result<i64> {
    let secs = expires.unwrap_or(MAX_LEASE_SECS);
    if (MIN_LEASE_SECS..=MAX_LEASE_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(HubError::invalid(
            ErrorCode::InvalidExpires,
            format!("expires must be between {MIN_LEASE_SECS} and {MAX_LEASE_SECS} seconds"),
        ))
    }
}

/// A display name of at most 70 characters.
pub fn name(name: &str) -> Result<()> {
    if name.chars().count() > MAX_NAME_LEN {
        return Err(HubError::invalid(
            ErrorCode::InvalidName,
            format!("name is longer than {MAX_NAME_LEN} characters"),
        ));
    }
    Ok(())
}

/// `user_data`: any JSON up to 1 KiB serialized.
pub fn user_data(value: &Value) -> Result<()> {
    if serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX)
        > MAX_USER_DATA_BYTES
    {
        return Err(HubError::invalid(
            ErrorCode::InvalidUserData,
            "user_data is larger than 1 KiB",
        ));
    }
    Ok(())
}

/// An Ed25519 subscription's keys are the hub's to generate, and its one signature is the
/// Standard Webhooks `v1a`: no client secret, no HMAC vendor header.
pub fn signing(
    algorithm: SigningAlgorithm,
    client_secret: bool,
    scheme: SignatureScheme,
) -> Result<()> {
    if algorithm != SigningAlgorithm::Ed25519 {
        return Ok(());
    }
    if client_secret {
        return Err(HubError::invalid(
            ErrorCode::InvalidClientSecret,
            "an ed25519 subscription gets a key pair generated by the hub: leave out the secret",
        ));
    }
    if scheme != SignatureScheme::Standard {
        return Err(HubError::invalid(
            ErrorCode::InvalidSignatureScheme,
            "the logi and pdk headers are HMACs of a shared secret: they go with hmac_sha256 only",
        ));
    }
    Ok(())
}

/// A client-chosen secret: a `whsec_` secret with 24–64 base64 bytes, or any other string of
/// 1–255 printable characters (the `webhook_subscribe` 16-char form among them) that does not
/// look like an Ed25519 key (`whsk_`, `whpk_`: those the hub generates itself).
pub fn client_secret(secret: &str) -> Result<()> {
    use base64::Engine;
    if secret.starts_with(WHSK_PREFIX) || secret.starts_with(WHPK_PREFIX) {
        return Err(HubError::invalid(
            ErrorCode::InvalidClientSecret,
            "whsk_ and whpk_ keys are generated by the hub: ask for \"signing_algorithm\": \"ed25519\" instead",
        ));
    }
    if let Some(b64) = secret.strip_prefix(WHSEC_PREFIX) {
        let len = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(|k| k.len())
            .unwrap_or(0);
        if (24..=64).contains(&len) {
            return Ok(());
        }
        return Err(HubError::invalid(
            ErrorCode::InvalidClientSecret,
            "a whsec_ secret must carry 24 to 64 base64-encoded bytes",
        ));
    }
    if secret.is_empty()
        || secret.chars().count() > MAX_SECRET_LEN
        || secret.chars().any(char::is_control)
    {
        return Err(HubError::invalid(
            ErrorCode::InvalidClientSecret,
            format!("client_secret must be 1 to {MAX_SECRET_LEN} printable characters"),
        ));
    }
    Ok(())
}

/// Most keys in a subscription's label filter.
pub const MAX_FILTER_KEYS: usize = 20;
/// Most accepted values for one key of a label filter.
pub const MAX_FILTER_VALUES: usize = 100;
/// Largest label filter, serialized: it is copied into every topic entry, which every publish
/// to those topics reads back.
pub const MAX_FILTER_BYTES: usize = 4096;
/// Longest label key.
pub const MAX_LABEL_KEY_LEN: usize = 128;
/// Longest label value.
pub const MAX_LABEL_VALUE_LEN: usize = 256;
/// Most labels on one event.
pub const MAX_EVENT_LABELS: usize = 50;
/// Most sensitive-field pointers on one event.
pub const MAX_SENSITIVE_POINTERS: usize = 100;
/// Deepest nesting of an event's `data`: the delivery task wraps `data` a few levels deeper, and
/// every JSON reader on the way (the hub's own included) has a depth limit.
pub const MAX_DATA_DEPTH: usize = 64;
/// Longest `receiver_auth` user name and header name.
pub const MAX_AUTH_NAME_LEN: usize = 256;
/// Longest `receiver_auth` password, token or header value.
pub const MAX_AUTH_VALUE_LEN: usize = 4096;
/// Headers `receiver_auth` may not set: the hub's own, and HTTP's hop-by-hop and framing headers
/// (they would change how the request is carried, not what it says).
pub const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "host",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// A label filter: 1–20 keys of 1–128 characters, each with 1–100 accepted values of 1–256
/// characters, 4 KiB at most in all.
pub fn label_filter(filter: &LabelFilter) -> Result<()> {
    let bad = || {
        Err(HubError::invalid(
            ErrorCode::InvalidLabels,
            format!(
                "a label filter has at most {MAX_FILTER_KEYS} keys of 1-{MAX_LABEL_KEY_LEN} characters, \
                 each with 1-{MAX_FILTER_VALUES} values of 1-{MAX_LABEL_VALUE_LEN} characters, \
                 {MAX_FILTER_BYTES} bytes in all"
            ),
        ))
    };
    if filter.len() > MAX_FILTER_KEYS {
        return bad();
    }
    for (key, values) in filter {
        if key.is_empty()
            || key.chars().count() > MAX_LABEL_KEY_LEN
            || values.is_empty()
            || values.len() > MAX_FILTER_VALUES
            || values
                .iter()
                .any(|v| v.is_empty() || v.chars().count() > MAX_LABEL_VALUE_LEN)
        {
            return bad();
        }
    }
    if serde_json::to_vec(filter).map_or(usize::MAX, |v| v.len()) > MAX_FILTER_BYTES {
        return bad();
    }
    Ok(())
}

/// An event's labels: at most 50, keys 1–128 and values up to 256 characters.
pub fn event_labels(labels: &std::collections::BTreeMap<String, String>) -> Result<()> {
    if labels.len() > MAX_EVENT_LABELS
        || labels.iter().any(|(k, v)| {
            k.is_empty()
                || k.chars().count() > MAX_LABEL_KEY_LEN
                || v.chars().count() > MAX_LABEL_VALUE_LEN
        })
    {
        return Err(HubError::invalid(
            ErrorCode::InvalidLabels,
            format!(
                "at most {MAX_EVENT_LABELS} labels, keys 1-{MAX_LABEL_KEY_LEN} and values up to \
                 {MAX_LABEL_VALUE_LEN} characters"
            ),
        ));
    }
    Ok(())
}

/// An event's sensitive fields: at most 100 JSON pointers (starting with `/`, up to 512
/// characters) mapped to level 1 or 2.
pub fn sensitive(pointers: &std::collections::BTreeMap<String, u8>) -> Result<()> {
    let ok = pointers.len() <= MAX_SENSITIVE_POINTERS
        && pointers
            .iter()
            .all(|(p, level)| p.starts_with('/') && p.len() <= 512 && (1..=2).contains(level));
    if ok {
        Ok(())
    } else {
        Err(HubError::invalid(
            ErrorCode::InvalidSensitive,
            format!(
                "sensitive maps at most {MAX_SENSITIVE_POINTERS} JSON pointers (starting with /) \
                 to level 1 or 2"
            ),
        ))
    }
}

/// How deeply a JSON value nests (a scalar is 0, `[1]` is 1).
pub fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, level)) = stack.pop() {
        deepest = deepest.max(level);
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, level + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, level + 1))),
            _ => {}
        }
    }
    deepest
}

/// An event's `data`: nested at most 64 levels.
pub fn event_data(data: &Value) -> Result<()> {
    if depth(data) > MAX_DATA_DEPTH {
        return Err(HubError::invalid(
            ErrorCode::InvalidData,
            format!("data is nested deeper than {MAX_DATA_DEPTH} levels"),
        ));
    }
    Ok(())
}

/// Receiver credentials: non-empty, bounded, header names that HTTP accepts and the hub does not
/// own, no hop-by-hop or framing headers.
pub fn receiver_auth(auth: &ReceiverAuth) -> Result<()> {
    let bad = |msg: &str| {
        Err(HubError::invalid(
            ErrorCode::InvalidReceiverAuth,
            msg.to_string(),
        ))
    };
    let too_long = |name: &str, value: &str| {
        name.chars().count() > MAX_AUTH_NAME_LEN || value.chars().count() > MAX_AUTH_VALUE_LEN
    };
    match auth {
        ReceiverAuth::Basic { user, password } => {
            if user.is_empty() || user.contains(':') || password.is_empty() {
                return bad("basic auth needs a user without ':' and a password");
            }
            if too_long(user, password) {
                return bad("basic auth: user up to 256, password up to 4096 characters");
            }
        }
        ReceiverAuth::Bearer { token } => {
            if token.is_empty() || http::HeaderValue::from_str(token).is_err() {
                return bad("bearer auth needs a token of visible ASCII characters");
            }
            if too_long("", token) {
                return bad("bearer auth: the token is up to 4096 characters");
            }
        }
        ReceiverAuth::Header { name, value } => {
            let lower = name.to_ascii_lowercase();
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(value).is_err()
                || value.is_empty()
                || lower.starts_with("webhook-")
                || RESERVED_HEADERS.contains(&lower.as_str())
            {
                return bad(
                    "header auth needs a valid header name the hub does not set (no hop-by-hop \
                     or framing header), and a value",
                );
            }
            if too_long(name, value) {
                return bad("header auth: name up to 256, value up to 4096 characters");
            }
        }
    }
    Ok(())
}

/// Longest owner (customer) name.
pub const MAX_OWNER_LEN: usize = 200;

/// An owner: the customer a portal session, a bound subscription or an event names. 1 to
/// [`MAX_OWNER_LEN`] characters, not blank, no control characters.
pub fn owner(text: &str) -> Result<String> {
    let ok = !text.trim().is_empty()
        && text.chars().count() <= MAX_OWNER_LEN
        && !text.chars().any(char::is_control);
    if ok {
        Ok(text.to_string())
    } else {
        Err(HubError::invalid(
            ErrorCode::InvalidOwner,
            format!("`owner` must be 1 to {MAX_OWNER_LEN} printable characters"),
        ))
    }
}

/// `secrecy_level`: 0 (none), 1 (default) or 2.
pub fn secrecy_level(level: u8) -> Result<()> {
    if level <= 2 {
        Ok(())
    } else {
        Err(HubError::invalid(
            ErrorCode::InvalidSecrecyLevel,
            "secrecy_level is 0, 1 or 2",
        ))
    }
}

/// The longest attempt budget a subscription may ask for, seconds.
pub const MAX_TIMEOUT_SECS: u32 = 30;
/// Most entries of a subscription's retry schedule.
pub const MAX_RETRIES: usize = 20;
/// The longest delay of one retry, seconds (what a queue message can be hidden for).
pub const MAX_RETRY_DELAY_SECS: u64 = 12 * 3600;

/// A subscription's attempt timeout: 1 to [`MAX_TIMEOUT_SECS`] seconds.
pub fn timeout_secs(secs: u32) -> Result<()> {
    if (1..=MAX_TIMEOUT_SECS).contains(&secs) {
        Ok(())
    } else {
        Err(HubError::invalid(
            ErrorCode::InvalidTimeout,
            format!("timeout is 1 to {MAX_TIMEOUT_SECS} seconds"),
        ))
    }
}

/// The highest delivery rate a subscription may ask for, per second.
pub const MAX_PER_SECOND: u32 = 1000;

/// A subscription's rate limit: 1 to [`MAX_PER_SECOND`] deliveries a second.
pub fn max_per_second(rate: u32) -> Result<()> {
    if (1..=MAX_PER_SECOND).contains(&rate) {
        Ok(())
    } else {
        Err(HubError::invalid(
            ErrorCode::InvalidMaxPerSecond,
            format!("max_per_second is 1 to {MAX_PER_SECOND} deliveries a second"),
        ))
    }
}

/// A subscription's retry schedule: 1 to [`MAX_RETRIES`] delays of 1 s to 12 h each, in all
/// within the longest lease.
pub fn retry_schedule_secs(delays: &[u64]) -> Result<()> {
    let total: u64 = delays.iter().sum();
    if delays.is_empty()
        || delays.len() > MAX_RETRIES
        || delays
            .iter()
            .any(|d| !(1..=MAX_RETRY_DELAY_SECS).contains(d))
        || total > crate::model::MAX_LEASE_SECS as u64
    {
        return Err(HubError::invalid(
            ErrorCode::InvalidRetrySchedule,
            format!(
                "retry_schedule is 1 to {MAX_RETRIES} delays in seconds, each 1 to {MAX_RETRY_DELAY_SECS}, \
                 together at most {} (the longest lease)",
                crate::model::MAX_LEASE_SECS
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_urls_are_checked() {
        callback_url("https://example.com/hook", false).unwrap();
        assert_eq!(
            callback_url("http://example.com/hook", false)
                .unwrap_err()
                .code(),
            "WebhookUnsupportedProtocol"
        );
        callback_url("http://127.0.0.1:9/hook", true).unwrap();
        for inward in [
            "https://127.0.0.1/",
            "https://127.1/",
            "https://2130706433/",
            "https://0x7f.1/",
            "https://0177.0.0.1/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::1]/",
            "https://169.254.169.254/latest",
            "https://10.0.0.1/",
            "https://localhost/",
        ] {
            assert_eq!(
                callback_url(inward, false).unwrap_err().code(),
                "forbidden_target",
                "{inward}"
            );
        }
        assert!(callback_url(&format!("https://e.com/{}", "a".repeat(600)), false).is_err());
        assert!(callback_url("https://user:pw@example.com/", false).is_err());
        assert!(callback_url("not a url", false).is_err());
    }

    #[test]
    fn leases_are_bounded() {
        assert_eq!(lease_secs(None).unwrap(), 604_800);
        assert_eq!(lease_secs(Some(60)).unwrap(), 60);
        assert!(lease_secs(Some(59)).is_err());
        assert!(lease_secs(Some(604_801)).is_err());
    }

    #[test]
    fn secrets_in_every_accepted_form() {
        client_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        client_secret("aB3-_xY9aB3-_xY9").unwrap();
        client_secret(&"s".repeat(255)).unwrap();
        assert!(client_secret(&"s".repeat(256)).is_err());
        assert!(client_secret("").is_err());
        assert!(client_secret("whsec_short").is_err());
    }
}
