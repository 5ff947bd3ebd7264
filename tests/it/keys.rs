//! Secrets at rest (docs/keys.md): the keys store contract on every adapter; on every backend the
//! raw store holds no secret in any form while deliveries verify with the stock libraries; a
//! wrong key stops `serve` with the file unchanged; a rotation keeps old and new deliveries and
//! portal sessions valid; every file `serve` and `backup` create is `0600`; dead letters end
//! with the retention.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use hub::ports::KeyStore;
use hub_tests::*;
use serde_json::{Value, json};

/// Whether the stock `standardwebhooks` library (Python) accepts `received` with `secret`.
fn stock_verifies(secret: &str, received: &Received) -> bool {
    let script = r#"
import sys, json, base64
from standardwebhooks.webhooks import Webhook
c = json.load(sys.stdin)
try:
    Webhook(c["secret"]).verify(base64.b64decode(c["body"]), c["headers"])
    print("true")
except Exception:
    print("false")
"#;
    let input = json!({
        "secret": secret,
        "body": B64.encode(&received.body),
        "headers": {
            "webhook-id": received.header("webhook-id"),
            "webhook-timestamp": received.header("webhook-timestamp"),
            "webhook-signature": received.header("webhook-signature"),
        },
    });
    venv_python(script, &serde_json::to_vec(&input).unwrap()) == b"true\n"
}

/// Every form a secret could be found in: its text, the bytes a `whsec_`/`whsk_` stands for,
/// and those in base64 (standard and URL-safe).
fn forms(secret: &str) -> Vec<Vec<u8>> {
    let mut forms = vec![secret.as_bytes().to_vec()];
    for prefix in ["whsec_", "whsk_"] {
        if let Some(encoded) = secret.strip_prefix(prefix) {
            let raw = B64.decode(encoded).unwrap();
            forms.push(encoded.as_bytes().to_vec());
            forms.push(B64URL.encode(&raw).into_bytes());
            forms.push(raw);
        }
    }
    forms.push(B64.encode(secret).into_bytes());
    forms.push(B64URL.encode(secret).into_bytes());
    forms
}

fn find_any(haystack: &[u8], secrets: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (what, secret) in secrets {
        for form in forms(secret) {
            if form.len() >= 8 && haystack.windows(form.len()).any(|w| w == form.as_slice()) {
                found.push(what.clone());
            }
        }
    }
    found
}

/// Every byte of the DynamoDB table `name`, item by item.
async fn table_bytes(name: &str) -> Vec<u8> {
    let client = aws_sdk_dynamodb::Client::new(&aws_config::load_from_env().await);
    let mut bytes = Vec::new();
    let mut pages = client.scan().table_name(name).into_paginator().send();
    while let Some(page) = pages.next().await {
        for item in page.unwrap().items.unwrap_or_default() {
            for value in item.values() {
                match value {
                    aws_sdk_dynamodb::types::AttributeValue::B(b) => {
                        bytes.extend_from_slice(b.as_ref())
                    }
                    other => bytes.extend_from_slice(format!("{other:?}").as_bytes()),
                }
                bytes.push(b'\n');
            }
        }
    }
    bytes
}

/// The database and its WAL, as a copy of the file alone would give them.
fn file_bytes(data: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(data).unwrap();
    let mut wal = data.as_os_str().to_owned();
    wal.push("-wal");
    if let Ok(more) = std::fs::read(PathBuf::from(wal)) {
        bytes.extend(more);
    }
    bytes
}

fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    hub::signing::hex(&sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// What the sealing scenario set up: the secrets, the subscriptions, a portal session.
struct Sealed {
    secrets: Vec<(String, String)>,
    hmac_id: String,
    hmac_secrets: Vec<String>,
    ed_public: String,
    session: String,
}

/// Publishes event `n` and waits for its delivery to the HMAC subscription.
async fn delivered_to_hmac(hub: &HubProcess, receiver: &TestReceiver, n: u64) -> Received {
    publish(
        hub,
        KEY_A,
        json!({"topic": "door.request.allowed", "data": {"n": n}}),
    )
    .await;
    receiver
        .wait_for_match(WAIT, |r| r.path == "/hmac" && r.json()["data"]["n"] == n)
        .await
}

const PASSWORD: &str = "receiver-password-0b6e4f2a";

/// Subscribes HMAC (then rotates it), Ed25519 and a basic-auth receiver; mints a portal
/// session; publishes one event and checks each delivery with the stock libraries.
async fn seal_everything(hub: &HubProcess, receiver: &TestReceiver) -> Sealed {
    let hmac = subscribe_confirmed(hub, receiver, KEY_A, "/hmac", json!({})).await;
    let hmac_id = hmac["id"].as_str().unwrap().to_string();
    let first = hmac["secret"].as_str().unwrap().to_string();
    let rotated = hub
        .call(
            "POST",
            &format!("/v1/subscriptions/{hmac_id}/secret/rotate"),
            Some(KEY_A),
            None,
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let second = rotated.body["secret"].as_str().unwrap().to_string();
    let ed = subscribe_confirmed(
        hub,
        receiver,
        KEY_A,
        "/ed",
        json!({"signing_algorithm": "ed25519"}),
    )
    .await;
    let ed_public = ed["secret"].as_str().unwrap().to_string();
    subscribe_confirmed(
        hub,
        receiver,
        KEY_A,
        "/auth",
        json!({"client_secret": "client-secret-16chars", "receiver_auth": {"type": "basic", "user": "hub", "password": PASSWORD}}),
    )
    .await;
    let minted = hub
        .call(
            "POST",
            "/v1/portal/sessions",
            Some(KEY_A),
            Some(json!({"owner": "customer-1"})),
        )
        .await;
    assert_eq!(minted.status, 201, "{}", minted.body);
    let session = minted.body["token"].as_str().unwrap().to_string();

    publish(
        hub,
        KEY_A,
        json!({"topic": "door.request.allowed", "data": {"n": 1}}),
    )
    .await;
    let got = |path: &'static str| {
        receiver.wait_for_match(WAIT, move |r| r.path == path && r.json()["data"]["n"] == 1)
    };
    let delivered = got("/hmac").await;
    assert!(
        stock_verifies(&first, &delivered),
        "the old secret verifies"
    );
    assert!(stock_verifies(&second, &delivered), "the new one too");
    let authed = got("/auth").await;
    // A plain client secret signs with its UTF-8 bytes, which the stock library (base64 keys
    // only) cannot take: the independent verifier checks it.
    assert!(verify_standard("client-secret-16chars", &authed));
    assert_eq!(
        authed.header("authorization"),
        format!("Basic {}", B64.encode(format!("hub:{PASSWORD}")))
    );
    assert!(
        got("/ed")
            .await
            .header("webhook-signature")
            .starts_with("v1a,")
    );
    Sealed {
        secrets: vec![
            ("first HMAC secret".into(), first.clone()),
            ("rotated HMAC secret".into(), second.clone()),
            ("client secret".into(), "client-secret-16chars".into()),
            ("receiver password".into(), PASSWORD.into()),
            ("basic credentials".into(), format!("hub:{PASSWORD}")),
        ],
        hmac_id,
        hmac_secrets: vec![first, second],
        ed_public,
        session,
    }
}

mod scenarios {
    use super::*;

    /// After subscribing, rotating, minting a session and delivering, the raw store (the
    /// SQLite file and its WAL, every DynamoDB item) holds no secret in any form; the Ed25519
    /// signing key and the portal key are checked through their stored forms being sealed.
    pub async fn no_secret_is_stored_in_plain(backend: Backend) {
        let name = unique("sealed");
        let mut hub = HubProcess::start_on(backend, &name, &[], &[]).await;
        let receiver = TestReceiver::start().await;
        let sealed = seal_everything(&hub, &receiver).await;
        let session_ok = hub
            .call(
                "GET",
                "/portal/api/v1/subscriptions",
                Some(&sealed.session),
                None,
            )
            .await;
        assert_eq!(session_ok.status, 200, "{}", session_ok.body);
        let raw = match backend {
            Backend::Sqlite => {
                let data = hub.data.clone().unwrap();
                hub.terminate();
                file_bytes(&data)
            }
            Backend::Aws => table_bytes(&name).await,
            Backend::Memory => unreachable!("memory_store_holds_sealed_values reads it"),
        };
        let found = find_any(&raw, &sealed.secrets);
        assert!(found.is_empty(), "found in the raw store: {found:?}");
        assert!(
            raw.windows(9).any(|w| w == b"whenc_v1."),
            "sealed values are there"
        );
        assert!(
            !raw.windows(5).any(|w| w == b"whsk_"),
            "no Ed25519 signing key in plain"
        );
        assert!(
            !raw.windows(6).any(|w| w == b"whsec_"),
            "no HMAC secret in plain"
        );
        assert!(sealed.ed_public.starts_with("whpk_"));
    }
}

// The memory backend has nothing at rest outside the process: its store is read through the
// port instead (`memory_store_holds_sealed_values`).
mod sqlite {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_secret_is_stored_in_plain() {
        scenarios::no_secret_is_stored_in_plain(Backend::Sqlite).await
    }
}

mod aws {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_secret_is_stored_in_plain() {
        scenarios::no_secret_is_stored_in_plain(Backend::Aws).await
    }
}

/// The memory backend's store holds sealed values too (read through the port, as any adapter
/// would be asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_holds_sealed_values() {
    use hub::service::subscriptions::SubscribeRequest;
    let hub = InProcess::start(Backend::Memory, hub::Settings::default()).await;
    let caller = hub::auth::Caller::of_account("acme".to_string(), "acme:1".to_string(), None);
    let req: SubscribeRequest = serde_json::from_value(json!({
        "callback_url": "https://hooks.example.com/a", "topic": "door.request.allowed",
        "receiver_auth": {"type": "bearer", "token": "bearer-token-1234567"}
    }))
    .unwrap();
    let done = hub.hub.subscribe(&caller, req).await.unwrap();
    let stored = hub
        .hub
        .store
        .get(&done.subscription.id)
        .await
        .unwrap()
        .unwrap();
    let raw = serde_json::to_vec(&stored).unwrap();
    let secrets = vec![
        ("secret".to_string(), done.secret.clone().unwrap()),
        ("token".to_string(), "bearer-token-1234567".to_string()),
    ];
    assert!(find_any(&raw, &secrets).is_empty());
    assert_eq!(
        hub.hub.verification_key(&stored).await.unwrap(),
        done.secret.unwrap(),
        "and opens where it is used"
    );
}

/// The keys store contract, on every adapter: the first write of a name wins, a replace
/// happens only over the value expected.
mod key_store {
    use super::*;

    async fn contract(store: &dyn KeyStore) {
        let name = unique("k");
        assert_eq!(store.key(&name).await.unwrap(), None);
        assert_eq!(store.hub_key(&name, b"one").await.unwrap(), b"one");
        assert_eq!(
            store.hub_key(&name, b"two").await.unwrap(),
            b"one",
            "the first wins"
        );
        assert!(!store.replace_key(&name, b"two", b"three").await.unwrap());
        assert_eq!(
            store.key(&name).await.unwrap().as_deref(),
            Some(&b"one"[..])
        );
        assert!(store.replace_key(&name, b"one", b"three").await.unwrap());
        assert_eq!(
            store.key(&name).await.unwrap().as_deref(),
            Some(&b"three"[..])
        );
        assert!(
            !store
                .replace_key(&unique("absent"), b"", b"x")
                .await
                .unwrap(),
            "nothing to replace"
        );
    }

    contract_on_every_store!();
}

/// A wrong key (or a missing key file) stops `serve` before anything is written; `keys rotate`
/// seals everything again under a new data key and a new portal key, and both the deliveries
/// and a portal session from before keep working; a new master key file replaces the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wrong_key_refused_and_rotation_keeps_everything_valid() {
    let mut hub = HubProcess::start(Backend::Sqlite, &[]).await;
    let data = hub.data.clone().unwrap();
    let key_file = sibling(&data, ".key");
    let receiver = TestReceiver::start().await;
    let sealed = seal_everything(&hub, &receiver).await;
    hub.terminate();
    let before = sha256_file(&data);
    assert!(!sibling(&data, "-wal").exists() || sha256_file(&sibling(&data, "-wal")).len() == 64);

    // Wrong key: another key file.
    let wrong = std::env::temp_dir().join(format!("{}.key", unique("wrong")));
    std::fs::write(
        &wrong,
        hub::adapters::master_key::LocalMasterKey::generate_text(),
    )
    .unwrap();
    let serve = |key: &Path| {
        run_to_end(&[
            "serve".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--data".as_ref(),
            data.as_os_str(),
            "--key-file".as_ref(),
            key.as_os_str(),
        ])
    };
    let (status, out) = serve(&wrong);
    assert!(!status.success(), "{out}");
    assert!(out.contains("does not open"), "{out}");
    // Missing key file: refused too, and no new key file is made.
    let missing = std::env::temp_dir().join(format!("{}.key", unique("missing")));
    let (status, out) = serve(&missing);
    assert!(!status.success(), "{out}");
    assert!(out.contains("does not exist"), "{out}");
    assert!(!missing.exists());
    assert_eq!(sha256_file(&data), before, "the file is unchanged");

    // Rotation: a new data key, everything sealed again, a new portal key.
    let (status, out) = run_to_end(&[
        "keys".as_ref(),
        "rotate".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
    ]);
    assert!(status.success(), "{out}");
    assert!(out.contains("sealed again"), "{out}");
    hub.restart().await;
    let old_session = hub
        .call(
            "GET",
            "/portal/api/v1/subscriptions",
            Some(&sealed.session),
            None,
        )
        .await;
    assert_eq!(
        old_session.status, 200,
        "a session from before: {}",
        old_session.body
    );
    let minted = hub
        .call(
            "POST",
            "/v1/portal/sessions",
            Some(KEY_A),
            Some(json!({"owner": "customer-1"})),
        )
        .await;
    let new_session = minted.body["token"].as_str().unwrap();
    assert_ne!(
        new_session.rsplit_once('.').unwrap().1,
        sealed.session.rsplit_once('.').unwrap().1
    );
    let fresh = hub
        .call(
            "GET",
            "/portal/api/v1/subscriptions",
            Some(new_session),
            None,
        )
        .await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    let second = delivered_to_hmac(&hub, &receiver, 2).await;
    for secret in &sealed.hmac_secrets {
        assert!(stock_verifies(secret, &second), "after the rotation");
    }
    let secret = hub
        .call(
            "GET",
            &format!("/v1/subscriptions/{}/secret", sealed.hmac_id),
            Some(KEY_A),
            None,
        )
        .await;
    assert_eq!(secret.body["secret"], sealed.hmac_secrets[1].as_str());
    hub.terminate();

    // A new master key file: the old one opens nothing any more.
    let next = std::env::temp_dir().join(format!("{}.key", unique("next")));
    let (status, out) = run_to_end(&[
        "keys".as_ref(),
        "rotate".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
        "--new-key-file".as_ref(),
        next.as_os_str(),
    ]);
    assert!(status.success(), "{out}");
    assert_eq!(mode(&next), 0o600);
    let (status, out) = serve(&key_file);
    assert!(!status.success(), "the old key is refused: {out}");
    std::fs::copy(&next, &key_file).unwrap();
    hub.restart().await;
    let third = delivered_to_hmac(&hub, &receiver, 3).await;
    assert!(stock_verifies(&sealed.hmac_secrets[1], &third));
    hub.terminate();
    let found = find_any(&file_bytes(&data), &sealed.secrets);
    assert!(found.is_empty(), "{found:?}");
}

/// Every file `serve` and `backup` create is `0600`; `backup` follows no symlink and
/// overwrites nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_are_private() {
    let mut hub = HubProcess::start(Backend::Sqlite, &[]).await;
    let data = hub.data.clone().unwrap();
    let receiver = TestReceiver::start().await;
    subscribe_confirmed(&hub, &receiver, KEY_A, "/m", json!({})).await;
    for file in [
        data.clone(),
        sibling(&data, "-wal"),
        sibling(&data, "-shm"),
        sibling(&data, ".lock"),
        sibling(&data, ".key"),
    ] {
        assert!(file.exists(), "{}", file.display());
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    let backup = |to: &Path| {
        run_to_end(&[
            "backup".as_ref(),
            "--data".as_ref(),
            data.as_os_str(),
            "--to".as_ref(),
            to.as_os_str(),
        ])
    };
    let copy = std::env::temp_dir().join(format!("{}.db", unique("backup")));
    let (status, out) = backup(&copy);
    assert!(status.success(), "{out}");
    assert_eq!(mode(&copy), 0o600);
    // Over an existing file: refused, the file untouched.
    let (status, out) = backup(&copy);
    assert!(!status.success() && out.contains("already exists"), "{out}");
    // Through a symlink, dangling or not: refused, nothing created where it points.
    let target = std::env::temp_dir().join(format!("{}.db", unique("elsewhere")));
    let link = std::env::temp_dir().join(format!("{}.db", unique("link")));
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (status, out) = backup(&link);
    assert!(!status.success(), "{out}");
    assert!(!target.exists(), "nothing written through the link");
    hub.terminate();
    for file in [&copy, &link] {
        let _ = std::fs::remove_file(file);
    }
}

/// One always-failing endpoint receiving 1,000 events: its dead letters end with the retention
/// (the clock moved past it, one sweep), `dead-letters list` reads them on SQLite, and the file
/// is back within a bound after its checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_dead_letters_end_with_the_retention() {
    let mut hub = HubProcess::start(
        Backend::Sqlite,
        &["--retry-schedule", "1s", "--retention", "2d"],
    )
    .await;
    let data = hub.data.clone().unwrap();
    let receiver = TestReceiver::failing_events().await;
    subscribe_confirmed(&hub, &receiver, KEY_A, "/fail", json!({})).await;
    let empty_size = std::fs::metadata(&data).unwrap().len();
    for batch in 0..10 {
        let events: Vec<Value> = (0..100)
            .map(|n| json!({"topic": "door.request.allowed", "data": {"n": batch * 100 + n, "pad": "x".repeat(400)}}))
            .collect();
        let answer = hub
            .call(
                "POST",
                "/v1/events",
                Some(KEY_A),
                Some(json!({"events": events})),
            )
            .await;
        assert!(answer.status < 300, "{}", answer.body);
    }
    // Every event tried twice (the schedule has one retry), then dead-lettered.
    receiver
        .wait_until_events(std::time::Duration::from_secs(120), |got| {
            got.iter()
                .filter(|r| r.path == "/fail" && r.json()["type"] != "Confirmation")
                .count()
                >= 2000
        })
        .await;
    hub.terminate();
    // Read as it is written (a thousand lines do not fit in a pipe's buffer).
    let list = |max: &str| {
        let out = std::process::Command::new(binary("webhook-hub"))
            .args(["dead-letters", "list", "--backend", "sqlite", "--max", max])
            .arg("--data")
            .arg(&data)
            .output()
            .unwrap();
        (
            out.status,
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (status, out) = list("1000");
    assert!(status.success(), "{out}");
    assert!(
        out.contains("1000 dead letter(s)"),
        "{}",
        out.lines().last().unwrap_or("")
    );
    let full_size = std::fs::metadata(&data).unwrap().len();
    hub.restart().await;
    hub.advance_clock(std::time::Duration::from_secs(3 * 86_400))
        .await;
    hub.sweep().await;
    hub.terminate();
    let (status, out) = list("10");
    assert!(status.success(), "{out}");
    assert!(out.contains("0 dead letter(s)"), "{out}");
    let after = std::fs::metadata(&data).unwrap().len();
    // Back within 256 KiB of the empty file (and far below the full one).
    assert!(
        after <= empty_size + 256 * 1024 && after < full_size,
        "empty {empty_size}, with 1,000 dead letters {full_size}, after the sweep {after}"
    );
}

/// `keys rotate --backend aws` re-seals the table's secrets under a new data key wrapped by
/// another KMS key while the hub runs (as the functions would): the running hub picks the new
/// data key up on its own and keeps signing with the same secrets, and a portal session from
/// before still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_rotation_keeps_deliveries_and_sessions_valid() {
    let name = unique("rotate");
    let hub = HubProcess::start_on(Backend::Aws, &name, &[], &[]).await;
    let receiver = TestReceiver::start().await;
    let sealed = seal_everything(&hub, &receiver).await;
    let before = table_bytes(&name).await;
    hub::runtime::ensure_kms_key("alias/webhook-hub-next")
        .await
        .unwrap();
    let out = std::process::Command::new(binary("webhook-hub"))
        .args([
            "keys",
            "rotate",
            "--backend",
            "aws",
            "--new-kms-key-id",
            "alias/webhook-hub-next",
        ])
        .env("HUB_TABLE", &name)
        .env("HUB_EVENTS_QUEUE", format!("{name}-events"))
        .env("HUB_DELIVERIES_QUEUE", format!("{name}-deliveries"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("sealed again"), "{text}");
    let after = table_bytes(&name).await;
    assert_ne!(before, after, "the sealed values changed");
    assert!(
        String::from_utf8_lossy(&after).contains("kms:alias/webhook-hub-next"),
        "the data keys are wrapped by the new KMS key"
    );
    let old_session = hub
        .call(
            "GET",
            "/portal/api/v1/subscriptions",
            Some(&sealed.session),
            None,
        )
        .await;
    assert_eq!(old_session.status, 200, "{}", old_session.body);
    let second = delivered_to_hmac(&hub, &receiver, 2).await;
    for secret in &sealed.hmac_secrets {
        assert!(stock_verifies(secret, &second), "after the rotation");
    }
    let found = find_any(&table_bytes(&name).await, &sealed.secrets);
    assert!(found.is_empty(), "{found:?}");
}

/// What a version before sealing stored in plain still reads and signs, and `keys seal`
/// (`Hub::reseal_all`) seals it in place, on every backend's store.
mod plain_from_before {
    use super::*;

    async fn sealed_in_place(backend: Backend) {
        let hub = InProcess::start(backend, hub::Settings::default()).await;
        let now = hub.hub.now_ms();
        let mut sub = active_subscription(
            0,
            "acme",
            &["door.request.allowed"],
            "https://hooks.example.com/old",
            now,
            3_600_000,
        );
        let plain = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        sub.secret = hub::keyring::Sealed::plain(plain);
        sub.receiver_auth = Some(hub::model::ReceiverAuth::Bearer {
            token: hub::keyring::Sealed::plain("old-plain-token-123"),
        });
        hub.hub.store.save(&sub, None).await.unwrap();
        let read = hub.hub.store.get(&sub.id).await.unwrap().unwrap();
        assert_eq!(hub.hub.verification_key(&read).await.unwrap(), plain);

        assert_eq!(hub.hub.reseal_all().await.unwrap(), 1);
        let sealed = hub.hub.store.get(&sub.id).await.unwrap().unwrap();
        assert!(sealed.secret.is_sealed());
        assert!(sealed.receiver_auth.as_ref().unwrap().secret().is_sealed());
        let raw = serde_json::to_vec(&sealed).unwrap();
        let secrets = [
            ("secret".to_string(), plain.to_string()),
            ("token".to_string(), "old-plain-token-123".to_string()),
        ];
        assert!(find_any(&raw, &secrets).is_empty());
        assert_eq!(hub.hub.verification_key(&sealed).await.unwrap(), plain);
        let opened = hub.hub.open_credentials(&sealed, now).await.unwrap();
        assert_eq!(
            opened.receiver_auth,
            Some(hub::model::ReceiverAuth::Bearer {
                token: "old-plain-token-123".into()
            })
        );
        assert_eq!(
            hub.hub.reseal_all().await.unwrap(),
            0,
            "nothing left to seal"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory() {
        sealed_in_place(Backend::Memory).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        sealed_in_place(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn aws() {
        sealed_in_place(Backend::Aws).await;
    }
}
