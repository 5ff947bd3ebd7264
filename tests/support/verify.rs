//! A Standard Webhooks verifier written independently of the hub's signer.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::*;

/// Verifies a delivery the way a Standard Webhooks receiver does: recomputes
/// `v1,base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))` and looks for it among the
/// space-separated signatures. Returns whether one matched.
pub fn verify_standard(secret: &str, received: &Received) -> bool {
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => B64.decode(b64).expect("whsec_ secrets are base64"),
        None => secret.as_bytes().to_vec(),
    };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(received.header("webhook-id").as_bytes());
    mac.update(b".");
    mac.update(received.header("webhook-timestamp").as_bytes());
    mac.update(b".");
    mac.update(&received.body);
    let expected = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
    received
        .header("webhook-signature")
        .split(' ')
        .any(|sig| sig == expected)
}
