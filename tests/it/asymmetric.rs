//! Ed25519 (`v1a`) signatures on every backend, checked by an independent implementation (the
//! `cryptography` package's Ed25519, in the test venv): a subscription that chooses them gets a
//! `whpk_` public key, never its signing key; its deliveries verify with that key and not once
//! tampered; a rotation signs with both keys through the overlap.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hub_tests::*;
use serde_json::{Value, json};

/// For each `(public key, delivery, body)`: whether one of its `v1a` signatures verifies with
/// the key, decided by Python's `cryptography`.
fn python_verifies(cases: &[(&str, &Received, &[u8])]) -> Vec<bool> {
    let script = r#"
import sys, json, base64
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
out = []
for c in json.load(sys.stdin):
    assert c["key"].startswith("whpk_")
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(c["key"][len("whpk_"):]))
    signed = (c["id"] + "." + c["ts"] + ".").encode() + base64.b64decode(c["body"])
    ok = False
    for sig in c["sigs"].split(" "):
        version, _, b64 = sig.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(b64), signed)
            ok = True
        except Exception:
            pass
    out.append(ok)
print(json.dumps(out))
"#;
    let input: Vec<Value> = cases
        .iter()
        .map(|(key, r, body)| {
            json!({"key": key, "id": r.header("webhook-id"), "ts": r.header("webhook-timestamp"),
                   "sigs": r.header("webhook-signature"), "body": B64.encode(body)})
        })
        .collect();
    serde_json::from_slice(&venv_python(script, &serde_json::to_vec(&input).unwrap())).unwrap()
}

mod scenarios {
    use super::*;

    pub async fn ed25519_deliveries_verify_with_the_public_key(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let created = subscribe_confirmed(
            &hub,
            &receiver,
            KEY_A,
            "/ed",
            json!({"signing_algorithm": "ed25519"}),
        )
        .await;
        let public = created["secret"].as_str().unwrap().to_string();
        assert!(
            public.starts_with("whpk_"),
            "the receiver gets the public key: {public}"
        );
        assert_eq!(created["public_key"], public.as_str());
        assert_eq!(created["signing_algorithm"], "ed25519");
        let id = created["id"].as_str().unwrap();
        let secret = hub
            .call(
                "GET",
                &format!("/v1/subscriptions/{id}/secret"),
                Some(KEY_A),
                None,
            )
            .await;
        assert_eq!(
            secret.body["secret"],
            public.as_str(),
            "the signing key never leaves"
        );

        publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {"n": 1}}),
        )
        .await;
        let first = receiver
            .wait_for_match(WAIT, |r| r.path == "/ed" && r.json()["data"]["n"] == 1)
            .await;
        assert!(first.header("webhook-signature").starts_with("v1a,"));
        let confirmation = receiver
            .received()
            .into_iter()
            .find(|r| r.json()["type"] == "Confirmation")
            .unwrap();
        let tampered = br#"{"id":"evt_forged"}"#;
        assert_eq!(
            python_verifies(&[
                (&public, &first, &first.body),
                (&public, &confirmation, &confirmation.body),
                (&public, &first, tampered),
            ]),
            [true, true, false]
        );

        // Rotation: a new key pair; through the overlap each delivery carries both signatures.
        let rotated = hub
            .call(
                "POST",
                &format!("/v1/subscriptions/{id}/secret/rotate"),
                Some(KEY_A),
                None,
            )
            .await;
        assert_eq!(rotated.status, 200, "{:?}", rotated.body);
        let new_public = rotated.body["secret"].as_str().unwrap().to_string();
        assert!(new_public.starts_with("whpk_") && new_public != public);
        publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {"n": 2}}),
        )
        .await;
        let second = receiver
            .wait_for_match(WAIT, |r| r.path == "/ed" && r.json()["data"]["n"] == 2)
            .await;
        assert_eq!(
            second.header("webhook-signature").matches("v1a,").count(),
            2
        );
        assert_eq!(
            python_verifies(&[
                (&public, &second, &second.body),
                (&new_public, &second, &second.body)
            ]),
            [true, true]
        );

        // Its keys are the hub's: no client secret, no HMAC vendor header, no whsk_ secrets.
        for (extra, code) in [
            (
                json!({"signing_algorithm": "ed25519", "client_secret": "0123456789abcdef"}),
                "invalid_client_secret",
            ),
            (
                json!({"signing_algorithm": "ed25519", "signature_scheme": "logi"}),
                "invalid_signature_scheme",
            ),
            (
                json!({"client_secret": "whsk_AAAA"}),
                "invalid_client_secret",
            ),
        ] {
            let mut body = json!({"callback_url": receiver.url("/other"), "topics": ["door.*"]});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let refused = hub
                .call("POST", "/v1/subscriptions", Some(KEY_A), Some(body))
                .await;
            assert_eq!(
                (refused.status, refused.body["code"].as_str()),
                (400, Some(code))
            );
        }
        let refused = hub
            .call(
                "POST",
                &format!("/v1/subscriptions/{id}/secret/rotate"),
                Some(KEY_A),
                Some(json!({"secret": "0123456789abcdef"})),
            )
            .await;
        assert_eq!(refused.status, 400);
    }
}

hub_tests::on_every_backend!(ed25519_deliveries_verify_with_the_public_key);
