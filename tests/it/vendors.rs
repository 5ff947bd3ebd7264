//! Each source vendor's contract (docs/design.md, the README), subscribed the way that vendor's API does and
//! verified the way its receivers do; then labels, secrecy levels, secret rotation, scopes,
//! owners, and a grep of the logs for every secret used.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use hub_tests::*;
use serde_json::{Value, json};
use sha1::Sha1;
use sha2::Sha256;

/// Keys with limited scopes, beside the all-scope test keys.
const SCOPED_KEYS: [&str; 8] = [
    "--api-key",
    "ro=acme:webhooks:read",
    "--api-key",
    "pub=acme:webhooks:publish",
    "--api-key",
    "doors=acme:webhooks:subscribe,webhooks:read,topic:door.*",
    "--api-key",
    "none=acme:nothing:here",
];

fn event_of<'a>(received: &'a [Received], path: &str) -> Vec<&'a Received> {
    events_at(received, path)
}

/// Circle server notifications: one callback per account and client, `X-Logi-Verify`, `userData`.
mod scenarios {
    use super::*;

    pub async fn circle_server_notifications(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let secret = "circle-client-secret-0123456789";
        let subscribe = json!({
            "topics": ["activity.created", "activity.ended"],
            "client_secret": secret, "signature_scheme": "logi", "user_data": {"clientId": "c-42"},
        });
        let created =
            subscribe_confirmed(&hub, &receiver, KEY_A, "/circle", subscribe.clone()).await;
        // Re-registering the same callback overwrites (same id, new settings).
        let mut again = subscribe.clone();
        again["callback_url"] = json!(receiver.url("/circle"));
        again["topics"] = json!(["activity.created"]);
        let rereg = hub
            .call("POST", "/v1/subscriptions", Some(KEY_A), Some(again))
            .await;
        assert_eq!((rereg.status, &rereg.body["id"]), (200, &created["id"]));

        let unwanted = publish(
            &hub,
            KEY_A,
            json!({"topic": "activity.ended", "data": {"activityId": "a1"}}),
        )
        .await;
        publish(
            &hub,
            KEY_A,
            json!({"topic": "activity.created", "data": {"accessoryId": "cam-1", "activityId": "a2"}}),
        )
        .await;
        let got = receiver
            .wait_for_match(WAIT, |r| {
                r.path == "/circle" && r.json()["type"] == "activity.created"
            })
            .await;
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&got.body);
        assert_eq!(
            got.header("x-logi-verify"),
            B64.encode(mac.finalize().into_bytes()),
            "X-Logi-Verify over the raw body"
        );
        assert!(
            verify_standard(secret, &got),
            "the Standard Webhooks headers come too"
        );
        assert_eq!(got.json()["user_data"], json!({"clientId": "c-42"}));
        assert_eq!(
            fanned_out(&hub, unwanted["id"].as_str().unwrap()).await,
            0,
            "the filter left activity.ended out"
        );
        assert!(
            event_of(&receiver.received(), "/circle")
                .iter()
                .all(|r| r.json()["type"] == "activity.created"),
            "the event-type filter was replaced"
        );
    }

    /// Device-platform webhooks: https only, device and group filters, a generated secret, a simple
    /// shared secret sent to the receiver, 401 for a bad token, security headers.
    pub async fn device_platform_webhooks(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let body = json!({
            "topics": ["device.*"],
            "labels": {"device": ["85", "86"], "device_group": ["lobby"]},
            "receiver_auth": {"type": "header", "name": "X-Shared-Secret", "value": "s3cr3t-shared"},
        });
        let created = subscribe_confirmed(&hub, &receiver, KEY_A, "/dev", body).await;
        let secret = created["secret"].as_str().unwrap();
        assert!(
            secret.starts_with("whsec_"),
            "the server generates the HMAC secret"
        );
        assert_eq!(
            created["receiver_auth"], "header",
            "reads say the kind, never the value"
        );

        publish(&hub, KEY_A, json!({"topic": "device.state.changed", "data": {"on": true}, "labels": {"device": "85", "device_group": "lobby"}})).await;
        let other_device = publish(&hub, KEY_A, json!({"topic": "device.state.changed", "data": {"on": false}, "labels": {"device": "99", "device_group": "lobby"}})).await;
        let got = receiver
            .wait_for_match(WAIT, |r| {
                r.path == "/dev" && r.json()["type"] != "Confirmation"
            })
            .await;
        assert_eq!(got.header("x-shared-secret"), "s3cr3t-shared");
        assert!(verify_standard(secret, &got));
        assert_eq!(got.json()["data"]["on"], true);
        assert_eq!(
            fanned_out(&hub, other_device["id"].as_str().unwrap()).await,
            0,
            "the label filter left device 99 out"
        );
        assert_eq!(
            event_of(&receiver.received(), "/dev").len(),
            1,
            "device 99 is filtered out"
        );

        let bad = hub
            .call("GET", "/v1/subscriptions", Some("wrong-token"), None)
            .await;
        assert_eq!(
            (bad.status, bad.body["code"].as_str()),
            (401, Some("unauthorized"))
        );
        assert_eq!(bad.headers["x-frame-options"], "DENY");
    }

    /// The https-only rule, on a hub that does not allow private targets.
    pub async fn device_platform_refuses_http(backend: Backend) {
        let hub = HubProcess::start_strict(backend).await;
        let answer = hub
            .call(
                "POST",
                "/v1/subscriptions",
                Some(KEY_A),
                Some(json!({"callback_url": "http://example.com/hook", "topics": ["device.*"]})),
            )
            .await;
        assert_eq!(
            (answer.status, answer.body["code"].as_str()),
            (400, Some("WebhookUnsupportedProtocol"))
        );
        let inward = hub
            .call(
                "POST",
                "/v1/subscriptions",
                Some(KEY_A),
                Some(json!({"callback_url": "https://169.254.169.254/latest", "topics": ["device.*"]})),
            )
            .await;
        assert_eq!(
            (inward.status, inward.body["code"].as_str()),
            (400, Some("forbidden_target"))
        );
        let ok = hub
            .call(
                "POST",
                "/v1/subscriptions",
                Some(KEY_A),
                Some(
                    json!({"callback_url": "https://hooks.example.com/x", "topics": ["device.*"]}),
                ),
            )
            .await;
        assert_eq!(ok.status, 201);
    }

    /// Access-control hooks: CRUD, name ≤ 70, basic auth, `active`, `expires_at`, the odometer,
    /// secrecy levels and `X-PDK-SIGNATURE` (hex HMAC-SHA1 with a plain secret ≤ 255 chars).
    pub async fn access_control_hooks(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let secret = "p".repeat(255);
        let created = subscribe_confirmed(&hub, &receiver, KEY_A, "/pdk", json!({
            "name": "Front desk".to_string() + &" ".repeat(0), "topics": ["door.*"], "client_secret": secret,
            "signature_scheme": "pdk", "secrecy_level": 1,
            "receiver_auth": {"type": "basic", "user": "pdk", "password": "hunter2-basic"},
        }))
        .await;
        let id = created["id"].as_str().unwrap();
        assert!(created["expires_at"].as_str().unwrap().ends_with('Z'));
        let long_name = hub
            .call(
                "PATCH",
                &format!("/v1/subscriptions/{id}"),
                Some(KEY_A),
                Some(json!({"name": "n".repeat(71)})),
            )
            .await;
        assert_eq!(long_name.status, 400);
        let renamed = hub
            .call(
                "PATCH",
                &format!("/v1/subscriptions/{id}"),
                Some(KEY_A),
                Some(json!({"name": "n".repeat(70)})),
            )
            .await;
        assert_eq!(renamed.status, 200);

        publish(
            &hub,
            KEY_A,
            json!({
                "topic": "door.request.allowed",
                "data": {"door": "D1", "pin": "1234", "person": {"name": "Ann"}},
                "sensitive": {"/data/pin": 1, "/data/person": 2},
            }),
        )
        .await;
        let got = receiver
            .wait_for_match(WAIT, |r| {
                r.path == "/pdk" && r.json()["type"] != "Confirmation"
            })
            .await;
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&got.body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got.header("x-pdk-signature"), hex);
        assert_eq!(
            got.header("authorization"),
            format!("Basic {}", B64.encode("pdk:hunter2-basic"))
        );
        assert_eq!(
            got.json()["data"],
            json!({"door": "D1", "person": {"name": "Ann"}}),
            "level-1 field removed"
        );

        let paused = hub
            .call(
                "PATCH",
                &format!("/v1/subscriptions/{id}"),
                Some(KEY_A),
                Some(json!({"active": false})),
            )
            .await;
        assert_eq!(paused.body["status"], "paused");
        // The receiver sees the request before the hub records its outcome: wait for the count.
        eventually(WAIT, "the odometer at 1", || async {
            let got = hub
                .call("GET", &format!("/v1/subscriptions/{id}"), Some(KEY_A), None)
                .await;
            (got.body["odometer"] == 1).then_some(())
        })
        .await;
        let list = hub
            .call("GET", "/v1/subscriptions", Some(KEY_A), None)
            .await;
        assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
        assert_eq!(
            hub.call(
                "DELETE",
                &format!("/v1/subscriptions/{id}"),
                Some(KEY_A),
                None
            )
            .await
            .status,
            204
        );
    }

    /// Smart-home listeners: per end-user token and event types; bulk removal of one owner's
    /// listeners leaves another owner's in the same account untouched; the list shows active ones.
    pub async fn smart_home_listeners(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        for i in 0..2 {
            subscribe_confirmed(
                &hub,
                &receiver,
                KEY_A,
                &format!("/alice{i}"),
                json!({"topics": ["switch.*"], "labels": {"end_user": ["alice"]}}),
            )
            .await;
        }
        subscribe_confirmed(
            &hub,
            &receiver,
            KEY_A2,
            "/bob",
            json!({"topics": ["switch.*"], "labels": {"end_user": ["bob"]}}),
        )
        .await;
        let switch = publish(
            &hub,
            KEY_A,
            json!({"topic": "switch.on", "data": {"id": 1}, "labels": {"end_user": "bob"}}),
        )
        .await;
        assert_eq!(
            fanned_out(&hub, switch["id"].as_str().unwrap()).await,
            1,
            "only bob's listener: alice's does not hear bob's switch"
        );
        receiver
            .wait_for_match(WAIT, |r| {
                r.path == "/bob" && r.json()["type"] == "switch.on"
            })
            .await;
        assert!(event_of(&receiver.received(), "/alice0").is_empty());

        let removed = hub
            .call("DELETE", "/v1/subscriptions?owner=me", Some(KEY_A), None)
            .await;
        assert_eq!(
            (removed.status, removed.body["deleted"].as_u64()),
            (200, Some(2))
        );
        let left = hub
            .call("GET", "/v1/subscriptions", Some(KEY_A2), None)
            .await;
        let left = left.body["data"].as_array().unwrap();
        assert_eq!(left.len(), 1, "bob's listener is untouched");
        assert_eq!(left[0]["status"], "active");
        let no_owner = hub
            .call("DELETE", "/v1/subscriptions", Some(KEY_A), None)
            .await;
        assert_eq!(no_owner.status, 400, "bulk removal needs owner=me");
    }

    /// `webhook_subscribe`: one topic, a 16-char URL-safe base64 `client_secret`, the confirmation
    /// message with `confirmation_url` and `validity_ts`, refresh by subscribing again.
    pub async fn webhook_subscribe(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let secret = "aB3-_xY9aB3-_xY9";
        let body = json!({"callback_url": receiver.url("/ws"), "topic": "stock-level-changed", "client_secret": secret, "expires": 86400});
        let created = hub
            .call("POST", "/v1/subscriptions", Some(KEY_A), Some(body.clone()))
            .await;
        assert_eq!(created.status, 201);
        let confirmation = receiver.wait_for(1, WAIT).await.remove(0);
        assert!(
            verify_standard(secret, &confirmation),
            "a plain client_secret signs with its UTF-8 bytes"
        );
        let message = confirmation.json();
        assert_eq!(message["type"], "Confirmation");
        assert_eq!(
            message["subscription"]["validity_ts"],
            created.body["validity_ts"]
        );
        let validity = message["subscription"]["validity_ts"].to_string();
        assert!(
            validity.split('.').nth(1).is_none_or(|d| d.len() <= 3),
            "{validity}"
        );
        assert!(
            message["confirmation_url"]
                .as_str()
                .unwrap()
                .starts_with(&hub.url)
        );
        assert_eq!(
            hub.call(
                "GET",
                message["confirmation_url"].as_str().unwrap(),
                None,
                None
            )
            .await
            .status,
            200
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refreshed = hub
            .call(
                "POST",
                "/v1/subscriptions",
                Some(KEY_A),
                Some(json!({"callback_url": receiver.url("/ws"), "topic": "stock-level-changed"})),
            )
            .await;
        assert_eq!(refreshed.status, 200);
        assert!(refreshed.body["validity_ts"].as_f64() > created.body["validity_ts"].as_f64());
        publish(
            &hub,
            KEY_A,
            json!({"topic": "stock-level-changed", "data": {"sku": "A1", "level": 3}}),
        )
        .await;
        let got = receiver
            .wait_for_match(WAIT, |r| r.json()["type"] == "stock-level-changed")
            .await;
        assert!(
            verify_standard(secret, &got),
            "refresh without client_secret keeps the secret"
        );
    }

    /// Label filters with one, two and missing keys.
    pub async fn label_filters(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        subscribe_confirmed(
            &hub,
            &receiver,
            KEY_A,
            "/one",
            json!({"labels": {"device": ["85", "86"]}}),
        )
        .await;
        subscribe_confirmed(
            &hub,
            &receiver,
            KEY_A,
            "/two",
            json!({"labels": {"device": ["85"], "panel": ["1070000"]}}),
        )
        .await;
        subscribe_confirmed(&hub, &receiver, KEY_A, "/none", json!({})).await;
        let cases = [
            (1, json!({"device": "85", "panel": "1070000"})),
            (2, json!({"device": "86"})),
            (3, json!({"device": "87", "panel": "1070000"})),
            (4, json!({"panel": "1070000"})),
            (5, json!({})),
        ];
        let mut queued = 0;
        for (n, labels) in &cases {
            let event = publish(
                &hub,
                KEY_A,
                json!({"topic": "door.request.allowed", "data": {"n": n}, "labels": labels}),
            )
            .await;
            queued += fanned_out(&hub, event["id"].as_str().unwrap()).await as usize;
        }
        // Every delivery the hub decided on has arrived: nothing else is on its way.
        receiver
            .wait_until_events(WAIT, |seen| {
                seen.iter()
                    .filter(|r| r.json()["type"] != "Confirmation")
                    .count()
                    >= queued
            })
            .await;
        let seen = receiver.received();
        let ns = |path: &str| -> Vec<i64> {
            let mut v: Vec<i64> = event_of(&seen, path)
                .iter()
                .map(|r| r.json()["data"]["n"].as_i64().unwrap())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            ns("/one"),
            vec![1, 2],
            "one key: either value, and the key must be there"
        );
        assert_eq!(ns("/two"), vec![1], "two keys: both must hold");
        assert_eq!(ns("/none"), vec![1, 2, 3, 4, 5], "no filter: everything");
    }

    /// Secrecy levels 0, 1 and 2; the signature verifies over the redacted body.
    pub async fn secrecy_levels(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let mut secrets = std::collections::HashMap::new();
        for level in 0..=2 {
            let created = subscribe_confirmed(
                &hub,
                &receiver,
                KEY_A,
                &format!("/l{level}"),
                json!({"secrecy_level": level}),
            )
            .await;
            secrets.insert(level, created["secret"].as_str().unwrap().to_string());
        }
        publish(
            &hub,
            KEY_A,
            json!({
                "topic": "door.request.allowed",
                "data": {"door": "D1", "pin": "1234", "name": "Ann"},
                "sensitive": {"/data/pin": 1, "/data/name": 2},
            }),
        )
        .await;
        let expected = [
            json!({"door": "D1", "pin": "1234", "name": "Ann"}),
            json!({"door": "D1", "name": "Ann"}),
            json!({"door": "D1"}),
        ];
        for level in 0..=2 {
            let path = format!("/l{level}");
            let got = receiver
                .wait_for_match(WAIT, |r| {
                    r.path == path && r.json()["type"] != "Confirmation"
                })
                .await;
            assert_eq!(got.json()["data"], expected[level], "level {level}");
            assert!(
                verify_standard(&secrets[&(level as i32)], &got),
                "signed over the redacted body"
            );
        }
    }

    /// Rotation: during the 24 h overlap every delivery carries both signatures, so a receiver may
    /// switch at any moment; after it, only the new one.
    pub async fn secret_rotation(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let created = subscribe_confirmed(&hub, &receiver, KEY_A, "/rot", json!({})).await;
        let id = created["id"].as_str().unwrap();
        let old = created["secret"].as_str().unwrap().to_string();
        let rotated = hub
            .call(
                "POST",
                &format!("/v1/subscriptions/{id}/secret/rotate"),
                Some(KEY_A),
                None,
            )
            .await;
        assert_eq!(rotated.status, 200);
        let new = rotated.body["secret"].as_str().unwrap().to_string();
        assert_ne!(old, new);
        let shown = hub
            .call(
                "GET",
                &format!("/v1/subscriptions/{id}/secret"),
                Some(KEY_A),
                None,
            )
            .await;
        assert_eq!(shown.body["secret"], new.as_str());

        for (n, advance) in [(1, 0u64), (2, 12 * 3600), (3, 11 * 3600)] {
            hub.advance_clock(Duration::from_secs(advance)).await;
            publish(
                &hub,
                KEY_A,
                json!({"topic": "door.request.allowed", "data": {"n": n}}),
            )
            .await;
            let got = receiver
                .wait_for_match(WAIT, |r| r.path == "/rot" && r.json()["data"]["n"] == n)
                .await;
            assert_eq!(
                got.header("webhook-signature").split(' ').count(),
                2,
                "two signatures during the overlap"
            );
            assert!(
                verify_standard(&old, &got) && verify_standard(&new, &got),
                "either secret verifies ({n})"
            );
        }
        hub.advance_clock(Duration::from_secs(3600 + 1)).await;
        publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {"n": 4}}),
        )
        .await;
        let got = receiver
            .wait_for_match(WAIT, |r| r.path == "/rot" && r.json()["data"]["n"] == 4)
            .await;
        assert!(verify_standard(&new, &got));
        assert!(
            !verify_standard(&old, &got),
            "the old secret no longer signs after 24 h"
        );
        let chosen = hub
            .call(
                "POST",
                &format!("/v1/subscriptions/{id}/secret/rotate"),
                Some(KEY_A),
                Some(json!({"secret": "my-own-secret-value"})),
            )
            .await;
        assert_eq!(chosen.body["secret"], "my-own-secret-value");
    }

    /// Every endpoint refuses a token without its scope (403 `insufficient_scope`); `topic:`
    /// scopes limit what may be subscribed.
    pub async fn scopes_gate_every_endpoint(backend: Backend) {
        let hub = HubProcess::start(backend, &SCOPED_KEYS).await;
        let receiver = TestReceiver::start().await;
        let created = subscribe_confirmed(&hub, &receiver, KEY_A, "/s", json!({})).await;
        let id = created["id"].as_str().unwrap();
        let sub_body = json!({"callback_url": receiver.url("/x"), "topics": ["door.opened"]});
        let endpoints: Vec<(&str, String, Option<Value>, &str)> = vec![
            (
                "POST",
                "/v1/subscriptions".into(),
                Some(sub_body.clone()),
                "webhooks:subscribe",
            ),
            ("GET", "/v1/subscriptions".into(), None, "webhooks:read"),
            (
                "GET",
                format!("/v1/subscriptions/{id}"),
                None,
                "webhooks:read",
            ),
            (
                "PATCH",
                format!("/v1/subscriptions/{id}"),
                Some(json!({"name": "x"})),
                "webhooks:subscribe",
            ),
            (
                "DELETE",
                format!("/v1/subscriptions/{id}"),
                None,
                "webhooks:subscribe",
            ),
            (
                "DELETE",
                "/v1/subscriptions?owner=me".into(),
                None,
                "webhooks:subscribe",
            ),
            (
                "GET",
                format!("/v1/subscriptions/{id}/deliveries"),
                None,
                "webhooks:read",
            ),
            (
                "GET",
                format!("/v1/subscriptions/{id}/secret"),
                None,
                "webhooks:read",
            ),
            (
                "POST",
                format!("/v1/subscriptions/{id}/secret/rotate"),
                None,
                "webhooks:subscribe",
            ),
            (
                "POST",
                "/v1/events".into(),
                Some(json!({"topic": "door.opened", "data": {}})),
                "webhooks:publish",
            ),
        ];
        let holds = |key: &str, scope: &str| match key {
            "ro" => scope == "webhooks:read",
            "pub" => scope == "webhooks:publish",
            "doors" => scope == "webhooks:subscribe" || scope == "webhooks:read",
            _ => false,
        };
        for key in ["ro", "pub", "doors", "none"] {
            for (method, path, body, scope) in &endpoints {
                if holds(key, scope) {
                    continue;
                }
                let answer = hub.call(method, path, Some(key), body.clone()).await;
                assert_eq!(answer.status, 403, "{key}: {method} {path}");
                assert_eq!(answer.body["code"], "insufficient_scope");
            }
        }
        let outside = hub
            .call(
                "POST",
                "/v1/subscriptions",
                Some("doors"),
                Some(json!({"callback_url": receiver.url("/w"), "topics": ["window.opened"]})),
            )
            .await;
        assert_eq!(
            (outside.status, outside.body["code"].as_str()),
            (403, Some("insufficient_scope"))
        );
        let inside = hub.call("POST", "/v1/subscriptions", Some("doors"), Some(json!({"callback_url": receiver.url("/d"), "topics": ["door.front.opened", "door.*"]}))).await;
        assert_eq!(inside.status, 201);
        assert_eq!(
            hub.call("GET", "/v1/subscriptions", Some("ro"), None)
                .await
                .status,
            200
        );
    }

    /// Reads never show secrets; the logs of a full flow are JSON lines with their context
    /// (request id and account per request; subscription, event id and attempt per delivery) and
    /// contain none of the secrets used.
    pub async fn logs_are_json_and_secrets_never_leak(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let mut secrets: Vec<String> = vec![KEY_A.into()];
        for (path, auth) in [
            (
                "/b",
                json!({"type": "basic", "user": "svc", "password": "basic-pass-7f3a"}),
            ),
            (
                "/t",
                json!({"type": "bearer", "token": "bearer-token-9c1d"}),
            ),
            (
                "/h",
                json!({"type": "header", "name": "X-Api-Key", "value": "header-value-4e2b"}),
            ),
        ] {
            let created = subscribe_confirmed(
                &hub,
                &receiver,
                KEY_A,
                path,
                json!({"receiver_auth": auth, "client_secret": format!("client-secret-{path}-x")}),
            )
            .await;
            secrets.push(format!("client-secret-{path}-x"));
            let id = created["id"].as_str().unwrap();
            let read = hub
                .call("GET", &format!("/v1/subscriptions/{id}"), Some(KEY_A), None)
                .await;
            let text = read.body.to_string();
            for leaked in [
                "basic-pass-7f3a",
                "bearer-token-9c1d",
                "header-value-4e2b",
                "client-secret",
            ] {
                assert!(!text.contains(leaked), "a read shows {leaked}: {text}");
            }
            let rotated = hub
                .call(
                    "POST",
                    &format!("/v1/subscriptions/{id}/secret/rotate"),
                    Some(KEY_A),
                    None,
                )
                .await;
            secrets.push(rotated.body["secret"].as_str().unwrap().to_string());
        }
        secrets.extend(
            ["basic-pass-7f3a", "bearer-token-9c1d", "header-value-4e2b"].map(String::from),
        );
        for r in receiver.received() {
            if let Some(url) = r.json()["confirmation_url"].as_str() {
                secrets.push(url.split("token=").nth(1).unwrap().to_string());
            }
        }
        publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {}}),
        )
        .await;
        receiver
            .wait_for_match(WAIT, |r| {
                r.path == "/h" && r.json()["type"] != "Confirmation"
            })
            .await;
        let listed = hub
            .call("GET", "/v1/subscriptions", Some(KEY_A), None)
            .await
            .body
            .to_string();
        // The attempt line is written once the receiver has answered, so it can reach the log
        // after the receiver saw the event: wait for it instead of reading the log at once.
        let log = eventually(WAIT, "the event's attempt line in the log", || async {
            let log = hub.log();
            let attempt_lines = log
                .lines()
                .filter(|l| l.contains("\"delivery attempt\""))
                .count();
            (attempt_lines >= 4).then_some(log)
        })
        .await;
        assert!(log.lines().count() > 10, "the flow was logged");
        let (mut requests, mut attempts) = (0, 0);
        for line in log.lines() {
            let entry: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(
                entry["timestamp"].is_string()
                    && entry["level"].is_string()
                    && entry["message"].is_string(),
                "{line}"
            );
            match entry["message"].as_str().unwrap() {
                "request" => {
                    requests += 1;
                    for field in [
                        "request_id",
                        "account",
                        "method",
                        "path",
                        "status",
                        "latency_ms",
                    ] {
                        assert!(
                            !entry[field].is_null(),
                            "request line without {field}: {line}"
                        );
                    }
                }
                "delivery attempt" => {
                    attempts += 1;
                    for field in [
                        "subscription_id",
                        "account",
                        "event_id",
                        "attempt",
                        "latency_ms",
                        "delivered",
                    ] {
                        assert!(
                            !entry[field].is_null(),
                            "attempt line without {field}: {line}"
                        );
                    }
                }
                _ => {}
            }
        }
        assert!(
            requests >= 10 && attempts >= 4,
            "{requests} request lines, {attempts} attempt lines"
        );
        for secret in &secrets {
            assert!(
                !log.contains(secret.as_str()),
                "the log contains a secret: {secret}"
            );
            assert!(
                !listed.contains(secret.as_str()),
                "the list shows a secret: {secret}"
            );
        }
    }
}

hub_tests::on_every_backend!(
    circle_server_notifications,
    device_platform_webhooks,
    device_platform_refuses_http,
    access_control_hooks,
    smart_home_listeners,
    webhook_subscribe,
    label_filters,
    secrecy_levels,
    secret_rotation,
    scopes_gate_every_endpoint,
    logs_are_json_and_secrets_never_leak,
);
