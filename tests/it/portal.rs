//! The customer portal: its sessions' scope on every backend (an owner's session reaches only
//! that owner's subscriptions and the session's topics, reads or writes as granted, publishes
//! and mints nothing, ends on time), the page and its assets, and the whole portal in a real
//! headless browser (`tests/portal/browser.py`).

use std::time::Duration;

use hub_tests::*;
use serde_json::{Value, json};

async fn mint(hub: &HubProcess, body: Value) -> Value {
    let minted = hub
        .call("POST", "/v1/portal/sessions", Some(KEY_A), Some(body))
        .await;
    assert_eq!(minted.status, 201, "{}", minted.body);
    minted.body
}

fn token(session: &Value) -> String {
    session["token"].as_str().unwrap().to_string()
}

mod scenarios {
    use super::*;

    pub async fn a_session_reaches_only_its_owner_and_topics(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let alice = token(&mint(&hub, json!({"owner": "alice", "topics": ["door.*"]})).await);
        let bob = token(&mint(&hub, json!({"owner": "bob", "topics": ["door.*"]})).await);
        let reader = token(
            &mint(
                &hub,
                json!({"owner": "alice", "topics": ["door.*"], "access": "read"}),
            )
            .await,
        );
        let portal = |path: &str| format!("/portal/api{path}");

        // Alice subscribes through the portal: the subscription is hers.
        let created = hub
            .call(
                "POST",
                &portal("/v1/subscriptions"),
                Some(&alice),
                Some(json!({"callback_url": receiver.url("/alice"), "topic": "door.opened"})),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        assert_eq!(created.body["owner"], "alice");
        let id = created.body["id"].as_str().unwrap().to_string();
        // Outside the session's topics: refused.
        let outside = hub
            .call(
                "POST",
                &portal("/v1/subscriptions"),
                Some(&alice),
                Some(json!({"callback_url": receiver.url("/billing"), "topic": "billing.paid"})),
            )
            .await;
        assert_eq!(
            (outside.status, outside.body["code"].as_str()),
            (403, Some("insufficient_scope"))
        );
        // The platform sees it, owner and all; a platform subscription is not alice's.
        let platform = hub
            .call(
                "POST",
                "/v1/subscriptions",
                Some(KEY_A),
                Some(json!({"callback_url": receiver.url("/platform"), "topic": "door.opened"})),
            )
            .await;
        assert_eq!(platform.status, 201);
        let platform_id = platform.body["id"].as_str().unwrap().to_string();
        let listed = hub
            .call("GET", &portal("/v1/subscriptions"), Some(&alice), None)
            .await;
        let ids: Vec<&str> = listed.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![id.as_str()], "alice lists only her own");

        // Bob reaches none of it: every per-subscription route answers as if it did not exist.
        let listed = hub
            .call("GET", &portal("/v1/subscriptions"), Some(&bob), None)
            .await;
        assert_eq!(listed.body["data"], json!([]));
        for (method, path, body) in [
            ("GET", format!("/v1/subscriptions/{id}"), None),
            (
                "PATCH",
                format!("/v1/subscriptions/{id}"),
                Some(json!({"active": false})),
            ),
            ("GET", format!("/v1/subscriptions/{id}/deliveries"), None),
            ("GET", format!("/v1/subscriptions/{id}/secret"), None),
            (
                "POST",
                format!("/v1/subscriptions/{id}/secret/rotate"),
                None,
            ),
            (
                "POST",
                format!("/v1/subscriptions/{id}/recover"),
                Some(json!({"since": "2026-01-01T00:00:00Z"})),
            ),
            ("POST", format!("/v1/subscriptions/{id}/test"), None),
            ("DELETE", format!("/v1/subscriptions/{id}"), None),
            ("GET", format!("/v1/subscriptions/{platform_id}"), None),
        ] {
            let answer = hub.call(method, &portal(&path), Some(&bob), body).await;
            assert_eq!(
                (answer.status, answer.body["code"].as_str()),
                (404, Some("not_found")),
                "bob: {method} {path}"
            );
        }
        // Nor can he take her callback over by subscribing it again: callbacks are unique per
        // customer, so he makes his own subscription, with its own secret.
        let his = hub
            .call(
                "POST",
                &portal("/v1/subscriptions"),
                Some(&bob),
                Some(json!({"callback_url": receiver.url("/alice"), "topic": "door.opened"})),
            )
            .await;
        assert_eq!(his.status, 201, "{}", his.body);
        assert_ne!(his.body["id"], id.as_str());
        assert_ne!(his.body["secret"], created.body["secret"]);
        assert_eq!(his.body["owner"], "bob");

        // A read-only session reads and changes nothing.
        let read = hub
            .call(
                "GET",
                &portal(&format!("/v1/subscriptions/{id}")),
                Some(&reader),
                None,
            )
            .await;
        assert_eq!(read.status, 200);
        let write = hub
            .call(
                "PATCH",
                &portal(&format!("/v1/subscriptions/{id}")),
                Some(&reader),
                Some(json!({"name": "mine"})),
            )
            .await;
        assert_eq!(
            (write.status, write.body["code"].as_str()),
            (403, Some("insufficient_scope"))
        );

        // Sessions publish nothing and mint nothing; the /v1 API does not take them, and the
        // portal's API takes nothing else.
        let publish = hub
            .call(
                "POST",
                &portal("/v1/events"),
                Some(&alice),
                Some(json!({"topic": "door.opened", "data": {}})),
            )
            .await;
        assert_eq!(publish.status, 404);
        let mint_again = hub
            .call(
                "POST",
                &portal("/v1/portal/sessions"),
                Some(&alice),
                Some(json!({"owner": "mallory"})),
            )
            .await;
        assert_eq!(mint_again.status, 404);
        let direct = hub
            .call("GET", "/v1/subscriptions", Some(&alice), None)
            .await;
        assert_eq!(direct.status, 401);
        let with_key = hub
            .call("GET", &portal("/v1/subscriptions"), Some(KEY_A), None)
            .await;
        assert_eq!(
            (with_key.status, with_key.body["code"].as_str()),
            (401, Some("invalid_session"))
        );
        // One character of the tag changed (to another one, whatever it was; not the last,
        // whose low bits base64 does not use).
        let at = alice.len() - 10;
        let other = if &alice[at..=at] == "A" { "B" } else { "A" };
        let forged = format!("{}{other}{}", &alice[..at], &alice[at + 1..]);
        let forged = hub
            .call("GET", &portal("/session"), Some(&forged), None)
            .await;
        assert_eq!(forged.body["code"], "invalid_session");

        // A pending subscription takes no test event; the session tells what it is.
        let test = hub
            .call(
                "POST",
                &portal(&format!("/v1/subscriptions/{id}/test")),
                Some(&alice),
                None,
            )
            .await;
        assert_eq!(
            (test.status, test.body["code"].as_str()),
            (409, Some("subscription_not_active"))
        );
        let session = hub
            .call("GET", &portal("/session"), Some(&alice), None)
            .await;
        assert_eq!(session.status, 200);
        assert_eq!(
            (
                &session.body["owner"],
                &session.body["topics"],
                &session.body["access"]
            ),
            (&json!("alice"), &json!(["door.*"]), &json!("write"))
        );

        // Sessions end: a minute's session is refused after it, with its own code.
        let short = token(&mint(&hub, json!({"owner": "alice", "expires_in": 60})).await);
        hub.advance_clock(Duration::from_secs(61)).await;
        let late = hub
            .call("GET", &portal("/v1/subscriptions"), Some(&short), None)
            .await;
        assert_eq!(
            (late.status, late.body["code"].as_str()),
            (401, Some("session_expired"))
        );
        assert!(late.body["message"].as_str().unwrap().contains("expired"));
    }
}

on_every_backend!(a_session_reaches_only_its_owner_and_topics);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minting_refuses_what_the_platform_may_not_grant() {
    let hub = HubProcess::start(Backend::Memory, &[]).await;
    for (body, code) in [
        (json!({}), "invalid_json"),
        (json!({"owner": ""}), "invalid_owner"),
        (
            json!({"owner": "a", "expires_in": 86_401}),
            "invalid_expires",
        ),
        (
            json!({"owner": "a", "topics": ["no spaces"]}),
            "invalid_topic",
        ),
        (json!({"owner": "a", "access": "admin"}), "invalid_json"),
        (json!({"owner": "a", "topics": ["hub.*"]}), "invalid_topic"),
        (
            json!({"owner": "a", "theme": {"accent": "url(x)"}}),
            "invalid_theme",
        ),
    ] {
        let answer = hub
            .call(
                "POST",
                "/v1/portal/sessions",
                Some(KEY_A),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (answer.status, answer.body["code"].as_str()),
            (400, Some(code)),
            "{body}: {}",
            answer.body
        );
    }
    let anonymous = hub
        .call(
            "POST",
            "/v1/portal/sessions",
            None,
            Some(json!({"owner": "a"})),
        )
        .await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_are_served_with_a_strict_policy() {
    let hub = HubProcess::start(Backend::Memory, &[]).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for (path, kind, base) in [
        ("/portal", "text/html", Some("<base href=\"portal/\">")),
        ("/portal/", "text/html", Some("<base href=\"./\">")),
        ("/portal/app.js", "text/javascript", None),
        ("/portal/app.css", "text/css", None),
    ] {
        let res = client
            .get(format!("{}{path}", hub.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let headers = res.headers().clone();
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"));
        assert!(!policy.contains("unsafe-inline"));
        let text = res.text().await.unwrap();
        if let Some(base) = base {
            assert!(text.contains(base), "{path}: {text}");
        }
    }
    let missing = hub.call("GET", "/portal/nothing", None, None).await;
    assert_eq!(missing.status, 404);
}

/// The portal in Debian's Chromium, driven by Playwright (`tests/portal/browser.py`), on the
/// default durable backend; screenshots go to `PORTAL_SCREENSHOTS` (default: a temporary
/// directory; `docs/portal` to refresh the README's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_works_in_a_real_browser() {
    // A short schedule, so the failing endpoint runs out of retries within the test.
    let hub = HubProcess::start(Backend::Sqlite, &["--retry-schedule", "1s,1s"]).await;
    let shots = std::env::var("PORTAL_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join(unique("portal-shots")));
    let script = workspace_root().join("tests/portal/browser.py");
    let hub_url = hub.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        venv_python_file(
            &script,
            &[
                ("HUB_URL", hub_url.as_str()),
                ("HUB_API_KEY", KEY_A),
                ("PORTAL_SCREENSHOTS", shots.to_str().unwrap()),
            ],
        )
    })
    .await
    .unwrap();
    println!("{out}");
    assert!(
        out.contains("portal: done"),
        "{out}\nhub log:\n{}",
        hub.log()
    );
}
