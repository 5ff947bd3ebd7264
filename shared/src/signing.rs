//! Webhook signatures. Standard Webhooks (`webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `"{id}.{timestamp}.{body}"`) on every delivery, plus the two vendor schemes some receivers
//! verify instead: `X-Logi-Verify` (base64 HMAC-SHA256 of the body) and `X-PDK-SIGNATURE`
//! (hex HMAC-SHA1 of the body).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::Sha256;

/// Prefix of hub-generated (and Standard Webhooks) secrets.
pub const WHSEC_PREFIX: &str = "whsec_";

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

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key size");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A Standard Webhooks signer keyed once: each signature then clones the keyed HMAC state
/// instead of hashing the key again (two SHA-256 blocks saved per message).
#[derive(Clone)]
pub struct Signer {
    keyed: Hmac<Sha256>,
}

impl Signer {
    /// A signer for `secret` (see [`key_bytes`]).
    pub fn new(secret: &str) -> Self {
        Signer {
            keyed: <Hmac<Sha256> as KeyInit>::new_from_slice(&key_bytes(secret))
                .expect("HMAC takes any key size"),
        }
    }

    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.keyed.clone();
        let mut ts = itoa_buffer();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(format_i64(&mut ts, timestamp));
        mac.update(b".");
        mac.update(body);
        let mut out = String::with_capacity(47);
        out.push_str("v1,");
        B64.encode_string(mac.finalize().into_bytes(), &mut out);
        out
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

/// One Standard Webhooks signature, `v1,<base64>`.
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

/// A fresh hub-generated secret: `whsec_` and 32 random bytes in base64.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{WHSEC_PREFIX}{}", B64.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

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
