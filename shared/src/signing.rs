//! Webhook signatures. Standard Webhooks (`webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `"{id}.{timestamp}.{body}"`, or `v1a,<base64 Ed25519>` over the same for a subscription that
//! chose asymmetric signing) on every delivery, plus the two vendor schemes some receivers
//! verify instead: `X-Logi-Verify` (base64 HMAC-SHA256 of the body) and `X-PDK-SIGNATURE`
//! (hex HMAC-SHA1 of the body). A secret's prefix says which it is: `whsk_` is an Ed25519
//! signing key (its receiver verifies with the `whpk_` public key), anything else an HMAC key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::Sha256;

/// Prefix of hub-generated (and Standard Webhooks) secrets.
pub const WHSEC_PREFIX: &str = "whsec_";
/// Prefix of an Ed25519 signing key (base64 of its 32-byte seed); it never leaves the hub.
pub const WHSK_PREFIX: &str = "whsk_";
/// Prefix of an Ed25519 public key (base64 of its 32 bytes): what a `v1a` receiver verifies with.
pub const WHPK_PREFIX: &str = "whpk_";

/// How a subscription's deliveries are signed in `webhook-signature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SigningAlgorithm {
    /// `v1`: HMAC-SHA256 with a shared secret (`whsec_…`).
    #[default]
    HmacSha256,
    /// `v1a`: Ed25519; the hub keeps the signing key, the receiver gets the public key
    /// (`whpk_…`), which cannot forge a delivery.
    Ed25519,
}

impl SigningAlgorithm {
    /// The algorithm a stored secret signs with.
    pub fn of(secret: &str) -> Self {
        if secret.starts_with(WHSK_PREFIX) {
            SigningAlgorithm::Ed25519
        } else {
            SigningAlgorithm::HmacSha256
        }
    }

    /// A fresh secret for this algorithm: `whsec_` and 32 random bytes, or an Ed25519 key
    /// (`whsk_` and a 32-byte random seed).
    pub fn generate_secret(self) -> String {
        let bytes: [u8; 32] = rand::random();
        let prefix = match self {
            SigningAlgorithm::HmacSha256 => WHSEC_PREFIX,
            SigningAlgorithm::Ed25519 => WHSK_PREFIX,
        };
        format!("{prefix}{}", B64.encode(bytes))
    }
}

/// The Ed25519 key pair of a `whsk_` secret, if it is one.
fn ed25519_pair(secret: &str) -> Option<ring::signature::Ed25519KeyPair> {
    let seed = B64.decode(secret.strip_prefix(WHSK_PREFIX)?).ok()?;
    ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).ok()
}

/// What a receiver verifies with: the `whpk_` public key of an Ed25519 secret, the secret
/// itself otherwise.
pub fn verification_key(secret: &str) -> String {
    use ring::signature::KeyPair;
    match ed25519_pair(secret) {
        Some(pair) => format!("{WHPK_PREFIX}{}", B64.encode(pair.public_key().as_ref())),
        None => secret.to_string(),
    }
}

/// Which extra signature header a subscription's receiver expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureScheme {
    /// Standard Webhooks headers only.
    #[default]
    Standard,
    /// Adds `X-Logi-Verify`: base64 HMAC-SHA256 of the raw body.
    Logi,
    /// Adds `X-PDK-SIGNATURE`: hex HMAC-SHA1 of the raw body.
    Pdk,
}

/// The key bytes a secret signs with: a `whsec_` secret's base64-decoded bytes, any other
/// secret's UTF-8 bytes.
pub fn key_bytes(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix(WHSEC_PREFIX)
        .and_then(|b64| B64.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// The HMAC-SHA256 tag of `parts`, one after another, under `key`; the hub also seals its own
/// tokens (portal sessions) with it.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key size");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A Standard Webhooks signer keyed once: an HMAC signature then clones the keyed state
/// instead of hashing the key again (two SHA-256 blocks saved per message); an Ed25519 one
/// expands its key once.
pub enum Signer {
    /// `v1`.
    Hmac(Hmac<Sha256>),
    /// `v1a`.
    Ed25519(Box<ring::signature::Ed25519KeyPair>),
}

impl Signer {
    /// A signer for `secret`: Ed25519 for a `whsk_` key, HMAC otherwise (see [`key_bytes`]).
    pub fn new(secret: &str) -> Self {
        match ed25519_pair(secret) {
            Some(pair) => Signer::Ed25519(Box::new(pair)),
            None => Signer::Hmac(
                <Hmac<Sha256> as KeyInit>::new_from_slice(&key_bytes(secret))
                    .expect("HMAC takes any key size"),
            ),
        }
    }

    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, or `v1a,<base64 Ed25519
    /// signature of the same>`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut ts = itoa_buffer();
        let ts = format_i64(&mut ts, timestamp);
        match self {
            Signer::Hmac(keyed) => {
                let mut mac = keyed.clone();
                mac.update(msg_id.as_bytes());
                mac.update(b".");
                mac.update(ts);
                mac.update(b".");
                mac.update(body);
                let mut out = String::with_capacity(47);
                out.push_str("v1,");
                B64.encode_string(mac.finalize().into_bytes(), &mut out);
                out
            }
            Signer::Ed25519(pair) => {
                let signed = [msg_id.as_bytes(), b".", ts, b".", body].concat();
                let mut out = String::with_capacity(92);
                out.push_str("v1a,");
                B64.encode_string(pair.sign(&signed), &mut out);
                out
            }
        }
    }
}

fn itoa_buffer() -> [u8; 20] {
    [0; 20]
}

/// Formats `n` (non-negative Unix seconds) into `buf` without allocating.
fn format_i64(buf: &mut [u8; 20], n: i64) -> &[u8] {
    let mut v = n.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// One Standard Webhooks signature, `v1,<base64>` (or `v1a,<base64>` for a `whsk_` key).
pub fn standard_signature(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    Signer::new(secret).sign(msg_id, timestamp, body)
}

/// The `webhook-signature` header value: one signature per secret, space-separated (several
/// during a secret rotation).
pub fn signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a str>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .into_iter()
        .map(|secret| standard_signature(secret, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The extra vendor header of a scheme, if it has one: `(name, value)`.
pub fn scheme_header(
    scheme: SignatureScheme,
    secret: &str,
    body: &[u8],
) -> Option<(&'static str, String)> {
    match scheme {
        SignatureScheme::Standard => None,
        SignatureScheme::Logi => Some((
            "x-logi-verify",
            B64.encode(hmac_sha256(&key_bytes(secret), &[body])),
        )),
        SignatureScheme::Pdk => {
            let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(&key_bytes(secret))
                .expect("HMAC takes any key size");
            mac.update(body);
            Some(("x-pdk-signature", hex(&mac.finalize().into_bytes())))
        }
    }
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How far a delivery's `webhook-timestamp` may be from the receiver's clock (Standard Webhooks'
/// replay window).
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 300;

/// Why a delivery did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unverified {
    /// `webhook-timestamp` is not a number.
    BadTimestamp,
    /// `webhook-timestamp` is further than [`TIMESTAMP_TOLERANCE_SECS`] from now.
    StaleTimestamp,
    /// No signature in `webhook-signature` was made with the secret.
    NoMatch,
}

impl std::fmt::Display for Unverified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unverified::BadTimestamp => "webhook-timestamp is not a number",
            Unverified::StaleTimestamp => "webhook-timestamp is outside the 5 min window",
            Unverified::NoMatch => "no signature matches the secret",
        })
    }
}

/// Verifies a delivery as a Standard Webhooks receiver does: its timestamp within
/// [`TIMESTAMP_TOLERANCE_SECS`] of `now_secs`, and one of the space-separated signatures of
/// `signatures` made over `"{id}.{timestamp}.{body}"` with `key`: a `v1,` HMAC with a secret, or
/// a `v1a,` Ed25519 signature checked with a `whpk_` public key.
pub fn verify(
    key: &str,
    msg_id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now_secs: i64,
) -> Result<(), Unverified> {
    let ts: i64 = timestamp.parse().map_err(|_| Unverified::BadTimestamp)?;
    if (now_secs - ts).abs() > TIMESTAMP_TOLERANCE_SECS {
        return Err(Unverified::StaleTimestamp);
    }
    let matched = match key.strip_prefix(WHPK_PREFIX) {
        Some(public) => {
            let public = B64.decode(public).unwrap_or_default();
            let public = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public);
            let signed = [msg_id.as_bytes(), b".", timestamp.as_bytes(), b".", body].concat();
            signatures.split(' ').any(|sig| {
                sig.strip_prefix("v1a,")
                    .and_then(|b64| B64.decode(b64).ok())
                    .is_some_and(|sig| public.verify(&signed, &sig).is_ok())
            })
        }
        None => {
            let expected = standard_signature(key, msg_id, ts, body);
            signatures
                .split(' ')
                .any(|sig| constant_time_eq(sig.as_bytes(), expected.as_bytes()))
        }
    };
    matched.then_some(()).ok_or(Unverified::NoMatch)
}

/// Lower-case hex of `bytes`: the one hex encoder of the hub (digests, tokens, ids, keys).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// Lower-case hex SHA-256 of `bytes`: how confirmation tokens are stored and callback URLs keyed.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&Sha256::digest(bytes))
}

/// A fresh hub-generated HMAC secret: `whsec_` and 32 random bytes in base64.
pub fn generate_secret() -> String {
    SigningAlgorithm::HmacSha256.generate_secret()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_keys_sign_v1a_that_their_public_key_verifies() {
        let secret = SigningAlgorithm::Ed25519.generate_secret();
        assert_eq!(SigningAlgorithm::of(&secret), SigningAlgorithm::Ed25519);
        let public = verification_key(&secret);
        assert!(public.starts_with(WHPK_PREFIX));
        assert_eq!(B64.decode(&public[WHPK_PREFIX.len()..]).unwrap().len(), 32);
        let signature = standard_signature(&secret, "msg_1", 1_700_000_000, b"{}");
        assert!(signature.starts_with("v1a,"));
        assert_eq!(
            verify(
                &public,
                "msg_1",
                "1700000000",
                &signature,
                b"{}",
                1_700_000_000
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                &public,
                "msg_1",
                "1700000000",
                &signature,
                b"{ }",
                1_700_000_000
            ),
            Err(Unverified::NoMatch)
        );
        let other = verification_key(&SigningAlgorithm::Ed25519.generate_secret());
        assert_eq!(
            verify(
                &other,
                "msg_1",
                "1700000000",
                &signature,
                b"{}",
                1_700_000_000
            ),
            Err(Unverified::NoMatch)
        );
        // An HMAC secret is its own verification key.
        assert_eq!(verification_key("whsec_abc"), "whsec_abc");
    }

    #[test]
    fn verification_takes_any_listed_signature_within_the_window() {
        let (secret, id, ts, body) = (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#.as_slice(),
        );
        let header = "v1,bm90IGl0 v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(
            verify(secret, id, "1614265330", header, body, ts + 299),
            Ok(())
        );
        assert_eq!(
            verify(secret, id, "1614265330", header, b"{}", ts),
            Err(Unverified::NoMatch)
        );
        assert_eq!(
            verify(secret, id, "1614265330", header, body, ts + 301),
            Err(Unverified::StaleTimestamp)
        );
        assert_eq!(
            verify(secret, id, "soon", header, body, ts),
            Err(Unverified::BadTimestamp)
        );
    }

    /// The reference vectors of the Standard Webhooks specification.
    #[test]
    fn standard_webhooks_reference_vectors() {
        assert_eq!(
            standard_signature(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(
            standard_signature(
                "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn rotation_header_carries_every_signature() {
        let header = signature_header(
            ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "plain"],
            "m",
            1,
            b"{}",
        );
        let parts: Vec<_> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
    }

    #[test]
    fn plain_secrets_sign_with_utf8_bytes() {
        assert_eq!(key_bytes("abc"), b"abc");
        assert_eq!(key_bytes("whsec_!!notbase64"), b"whsec_!!notbase64");
    }

    #[test]
    fn vendor_schemes_match_known_hmacs() {
        // RFC 4231 / RFC 2202 style: key "key", message "The quick brown fox jumps over the lazy dog".
        let body = b"The quick brown fox jumps over the lazy dog";
        let (_, sha1) = scheme_header(SignatureScheme::Pdk, "key", body).unwrap();
        assert_eq!(sha1, "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9");
        let (_, logi) = scheme_header(SignatureScheme::Logi, "key", body).unwrap();
        assert_eq!(logi, "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg=");
        assert!(scheme_header(SignatureScheme::Standard, "key", body).is_none());
    }
}
