//! The whole path against `webhook-hub serve`, the same scenarios on the embedded backend and on
//! DynamoDB + SQS (moto): subscribe → confirm → publish → signed delivery → unsubscribe, the API
//! contract the README states, and isolation between accounts, topics and states.

use std::time::Duration;

use hub_tests::*;
use serde_json::{Value, json};

mod scenarios {
    use super::*;

    /// subscribe → confirmation (signed) → confirm → publish → signed delivery → unsubscribe.
    pub async fn whole_path(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let created = subscribe_pending(
            &hub,
            &receiver,
            KEY_A,
            "/hook",
            json!({"user_data": {"tenant": 7}}),
        )
        .await;
        assert_eq!(created["status"], "pending");
        let secret = created["secret"].as_str().unwrap().to_string();
        assert!(secret.starts_with("whsec_"));
        let id = created["id"].as_str().unwrap().to_string();

        let confirmation = receiver.wait_for(1, WAIT).await.remove(0);
        assert!(
            verify_standard(&secret, &confirmation),
            "confirmation signature verifies"
        );
        let body = confirmation.json();
        assert_eq!(body["type"], "Confirmation");
        assert_eq!(body["subscription"]["id"], id.as_str());
        assert!(body["message"].as_str().unwrap().len() == 36);
        assert!(body["sent_ts"].as_f64().is_some());
        assert_eq!(confirmation.header("content-type"), "application/json");
        assert!(
            confirmation
                .header("user-agent")
                .starts_with("webhook-hub/")
        );

        let wrong = format!("/v1/subscriptions/{id}/confirm?token=wrong");
        let early = hub.call("GET", &wrong, None, None).await;
        assert_eq!(
            (early.status, early.body["code"].as_str()),
            (400, Some("invalid_token")),
            "a wrong token before activation"
        );
        assert_eq!(
            hub.call("GET", &format!("/v1/subscriptions/{id}"), Some(KEY_A), None)
                .await
                .body["status"],
            "pending",
            "and it activates nothing"
        );
        let confirmed = hub
            .call(
                "GET",
                body["confirmation_url"].as_str().unwrap(),
                None,
                None,
            )
            .await;
        assert_eq!(confirmed.status, 200);
        assert_eq!(confirmed.body["status"], "active");
        assert!(confirmed.body["confirmed_at"].is_string());
        let late = hub.call("GET", &wrong, None, None).await;
        assert_eq!(
            (late.status, late.body["code"].as_str()),
            (400, Some("invalid_token")),
            "a wrong token after activation"
        );

        let published = publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {"door": 12}}),
        )
        .await;
        let event_id = published["id"].as_str().unwrap();
        assert!(event_id.starts_with("evt_"));
        assert_eq!(published["topic"], "door.request.allowed");
        let delivery = receiver.wait_for(2, WAIT).await.remove(1);
        assert!(
            verify_standard(&secret, &delivery),
            "event signature verifies"
        );
        assert_eq!(delivery.header("webhook-id"), event_id);
        let ts: i64 = delivery.header("webhook-timestamp").parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((now - ts).abs() < 60);
        let event = delivery.json();
        assert_eq!(event["id"], event_id);
        assert_eq!(event["type"], "door.request.allowed");
        assert_eq!(event["account"], "acme");
        assert_eq!(event["subscription_id"], id.as_str());
        assert_eq!(event["data"], json!({"door": 12}));
        assert_eq!(event["user_data"], json!({"tenant": 7}));
        assert!(event["timestamp"].as_str().unwrap().ends_with('Z'));

        let deleted = hub
            .call(
                "DELETE",
                &format!("/v1/subscriptions/{id}"),
                Some(KEY_A),
                None,
            )
            .await;
        assert_eq!(deleted.status, 204);
        assert_eq!(
            hub.call("GET", &format!("/v1/subscriptions/{id}"), Some(KEY_A), None)
                .await
                .status,
            404
        );
        let after = publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {}}),
        )
        .await;
        assert_eq!(
            fanned_out(&hub, after["id"].as_str().unwrap()).await,
            0,
            "nothing queued for the deleted subscription"
        );
        assert_eq!(receiver.received().len(), 2);
    }

    /// Re-POST of the same callback refreshes: 201 then 200, same id, later lease, new settings.
    pub async fn resubscribe_refreshes(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let body =
            json!({"callback_url": receiver.url("/r"), "topic": "door.opened", "expires": 3600});
        let first = hub
            .call("POST", "/v1/subscriptions", Some(KEY_A), Some(body.clone()))
            .await;
        assert_eq!(first.status, 201);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut again = body.clone();
        again["expires"] = json!(7200);
        again["name"] = json!("front door");
        let second = hub
            .call("POST", "/v1/subscriptions", Some(KEY_A), Some(again))
            .await;
        assert_eq!(second.status, 200, "{:?}", second.body);
        assert_eq!(second.body["id"], first.body["id"]);
        assert_eq!(second.body["name"], "front door");
        assert!(second.body["secret"].is_null(), "the secret is shown once");
        let v1 = first.body["validity_ts"].as_f64().unwrap();
        let v2 = second.body["validity_ts"].as_f64().unwrap();
        assert!(v2 > v1 + 3000.0, "{v1} → {v2}");
        let text = second.body["validity_ts"].to_string();
        assert!(
            text.split('.').nth(1).is_none_or(|d| d.len() <= 3),
            "three decimals at most: {text}"
        );
        let secret = hub
            .call(
                "GET",
                &format!(
                    "/v1/subscriptions/{}/secret",
                    first.body["id"].as_str().unwrap()
                ),
                Some(KEY_A),
                None,
            )
            .await;
        assert_eq!(secret.body["secret"], first.body["secret"]);
    }

    /// Pending subscriptions, other topics and other accounts get nothing; wildcards get deeper
    /// topics; another account cannot see or touch a subscription.
    pub async fn isolation(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let exact = subscribe_confirmed(&hub, &receiver, KEY_A, "/exact", json!({})).await;
        subscribe_confirmed(
            &hub,
            &receiver,
            KEY_A,
            "/wild",
            json!({"topics": ["door.*"]}),
        )
        .await;
        subscribe_confirmed(&hub, &receiver, KEY_A, "/all", json!({"topics": ["*"]})).await;
        subscribe_confirmed(
            &hub,
            &receiver,
            KEY_A,
            "/other",
            json!({"topics": ["window.opened"]}),
        )
        .await;
        subscribe_confirmed(&hub, &receiver, KEY_B, "/beta", json!({"topics": ["*"]})).await;
        subscribe_pending(&hub, &receiver, KEY_A, "/pending", json!({"topics": ["*"]})).await;
        receiver
            .wait_for_match(WAIT, |r| r.path == "/pending")
            .await;

        let one = publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {"n": 1}}),
        )
        .await;
        let two = publish(
            &hub,
            KEY_A,
            json!({"topic": "door.closed", "data": {"n": 2}}),
        )
        .await;
        // The hub's decisions: /exact, /wild and /all for the first; /wild and /all for the
        // second. Once those five have arrived, nothing else is on its way.
        assert_eq!(fanned_out(&hub, one["id"].as_str().unwrap()).await, 3);
        assert_eq!(fanned_out(&hub, two["id"].as_str().unwrap()).await, 2);
        let before = receiver.received().len();
        receiver
            .wait_until_events(WAIT, |seen| {
                ["/exact", "/wild", "/all"]
                    .iter()
                    .map(|p| events_at(seen, p).len())
                    .sum::<usize>()
                    >= 5
            })
            .await;
        let seen = receiver.received();
        assert!(seen.len() >= before);
        assert_eq!(events_at(&seen, "/exact").len(), 1, "exact topic only");
        assert_eq!(
            events_at(&seen, "/wild").len(),
            2,
            "door.* gets both deeper topics"
        );
        assert_eq!(events_at(&seen, "/all").len(), 2);
        assert!(
            events_at(&seen, "/other").is_empty(),
            "another topic gets nothing"
        );
        assert!(
            events_at(&seen, "/beta").is_empty(),
            "another account gets nothing"
        );
        assert!(
            events_at(&seen, "/pending").is_empty(),
            "pending gets only its confirmation"
        );

        let id = exact["id"].as_str().unwrap();
        for (method, path, body) in [
            ("GET", format!("/v1/subscriptions/{id}"), None),
            (
                "PATCH",
                format!("/v1/subscriptions/{id}"),
                Some(json!({"active": false})),
            ),
            ("DELETE", format!("/v1/subscriptions/{id}"), None),
            ("GET", format!("/v1/subscriptions/{id}/deliveries"), None),
            ("GET", format!("/v1/subscriptions/{id}/secret"), None),
        ] {
            let answer = hub.call(method, &path, Some(KEY_B), body).await;
            assert_eq!(answer.status, 404, "{method} {path} by another account");
            assert_eq!(answer.body["code"], "not_found");
        }
        let listed = hub
            .call("GET", "/v1/subscriptions", Some(KEY_B), None)
            .await;
        assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
        assert_eq!(
            hub.call("GET", &format!("/v1/subscriptions/{id}"), Some(KEY_A), None)
                .await
                .status,
            200
        );
    }

    /// Every validation rule answers 4xx with a JSON code; auth and security headers hold.
    pub async fn api_contract(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let cb = "http://127.0.0.1:9/hook";
        let cases: Vec<(Value, &str)> = vec![
            (json!({"topics": ["door.opened"]}), "invalid_json"),
            (
                json!({"callback_url": "ftp://example.com/x", "topics": ["door.opened"]}),
                "WebhookUnsupportedProtocol",
            ),
            (
                json!({"callback_url": format!("https://example.com/{}", "a".repeat(520)), "topics": ["door.opened"]}),
                "invalid_callback_url",
            ),
            (
                json!({"callback_url": "not a url", "topics": ["door.opened"]}),
                "invalid_callback_url",
            ),
            (json!({"callback_url": cb}), "missing_topics"),
            (json!({"callback_url": cb, "topics": []}), "invalid_topics"),
            (
                json!({"callback_url": cb, "topics": (0..51).map(|i| format!("t{i}.x")).collect::<Vec<_>>()}),
                "invalid_topics",
            ),
            (
                json!({"callback_url": cb, "topics": ["ab"]}),
                "invalid_topic",
            ),
            (
                json!({"callback_url": cb, "topics": ["bad topic!"]}),
                "invalid_topic",
            ),
            (
                json!({"callback_url": cb, "topics": ["a.*.b"]}),
                "invalid_topic",
            ),
            (
                json!({"callback_url": cb, "topic": "door.opened", "expires": 59}),
                "invalid_expires",
            ),
            (
                json!({"callback_url": cb, "topic": "door.opened", "expires": 604801}),
                "invalid_expires",
            ),
            (
                json!({"callback_url": cb, "topic": "door.opened", "name": "n".repeat(71)}),
                "invalid_name",
            ),
            (
                json!({"callback_url": cb, "topic": "door.opened", "user_data": {"x": "y".repeat(1100)}}),
                "invalid_user_data",
            ),
            (
                json!({"callback_url": cb, "topic": "door.opened", "client_secret": "s".repeat(256)}),
                "invalid_client_secret",
            ),
            (
                json!({"callback_url": cb, "topic": "door.opened", "expires": "soon"}),
                "invalid_json",
            ),
            (
                json!({"callback_url": cb, "topic": "door.opened", "secrecy_level": 3}),
                "invalid_secrecy_level",
            ),
            (
                json!({"callback_url": cb, "topic": "door.opened", "receiver_auth": {"type": "digest"}}),
                "invalid_json",
            ),
        ];
        for (body, code) in cases {
            let answer = hub
                .call("POST", "/v1/subscriptions", Some(KEY_A), Some(body.clone()))
                .await;
            assert!(
                (400..500).contains(&answer.status),
                "{body} → {}",
                answer.status
            );
            assert_eq!(answer.body["code"], code, "{body}");
            assert!(
                answer.body["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
        let raw = hub
            .call_raw("POST", "/v1/subscriptions", Some(KEY_A), "{not json")
            .await;
        assert_eq!(
            (raw.status, raw.body["code"].as_str()),
            (400, Some("invalid_json"))
        );
        for (body, code) in [
            (json!({"data": {}}), "invalid_json"),
            (json!({"topic": "door.*", "data": {}}), "invalid_topic"),
            (
                json!({"topic": "ok.topic", "data": {}, "id": ""}),
                "invalid_event_id",
            ),
            (
                json!({"topic": "ok.topic", "data": {}, "sensitive": {"pin": 1}}),
                "invalid_sensitive",
            ),
        ] {
            let answer = hub
                .call("POST", "/v1/events", Some(KEY_A), Some(body.clone()))
                .await;
            assert_eq!(answer.status, 400, "{body}");
            assert_eq!(answer.body["code"], code, "{body}");
        }
        let limit = hub
            .call("GET", "/v1/subscriptions?limit=0", Some(KEY_A), None)
            .await;
        assert_eq!(
            (limit.status, limit.body["code"].as_str()),
            (400, Some("invalid_limit"))
        );

        for (method, path) in [
            ("POST", "/v1/subscriptions"),
            ("GET", "/v1/subscriptions"),
            ("GET", "/v1/subscriptions/sub_x"),
            ("PATCH", "/v1/subscriptions/sub_x"),
            ("DELETE", "/v1/subscriptions/sub_x"),
            ("POST", "/v1/events"),
            ("GET", "/v1/subscriptions/sub_x/deliveries"),
        ] {
            let answer = hub.call(method, path, None, Some(json!({}))).await;
            assert_eq!(answer.status, 401, "{method} {path} without a token");
            assert_eq!(answer.body["code"], "unauthorized");
            let wrong = hub
                .call(method, path, Some("not-a-key"), Some(json!({})))
                .await;
            assert_eq!(wrong.status, 401);
        }
        let missing = hub
            .call("GET", "/v1/subscriptions/sub_missing", Some(KEY_A), None)
            .await;
        assert_eq!(
            (missing.status, missing.body["code"].as_str()),
            (404, Some("not_found"))
        );
        assert_eq!(
            hub.call("GET", "/v1/nothing", Some(KEY_A), None)
                .await
                .status,
            404
        );
        assert_eq!(
            hub.call("PUT", "/v1/subscriptions", Some(KEY_A), None)
                .await
                .status,
            405
        );
        for answer in [
            missing,
            hub.call("GET", "/v1/subscriptions", Some(KEY_A), None)
                .await,
        ] {
            for (name, value) in [
                ("strict-transport-security", "max-age"),
                ("x-content-type-options", "nosniff"),
                ("x-frame-options", "DENY"),
                ("content-security-policy", "default-src 'none'"),
                ("referrer-policy", "no-referrer"),
                ("cache-control", "no-store"),
            ] {
                let got = answer
                    .headers
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                assert!(got.contains(value), "{name}: {got}");
            }
        }
    }

    /// Listing pages through `limit` and `cursor`; PATCH pauses, resumes and re-confirms a new
    /// callback; the delivery log and odometer count; a repeated event id is delivered once.
    pub async fn manage_and_log(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let created = subscribe_confirmed(&hub, &receiver, KEY_A, "/m", json!({})).await;
        let id = created["id"].as_str().unwrap().to_string();
        for i in 0..2 {
            subscribe_pending(&hub, &receiver, KEY_A, &format!("/p{i}"), json!({})).await;
        }
        let page1 = hub
            .call("GET", "/v1/subscriptions?limit=2", Some(KEY_A), None)
            .await;
        assert_eq!(page1.body["data"].as_array().unwrap().len(), 2);
        let cursor = page1.body["next_cursor"]
            .as_str()
            .expect("a next page")
            .to_string();
        let page2 = hub
            .call(
                "GET",
                &format!("/v1/subscriptions?limit=2&cursor={cursor}"),
                Some(KEY_A),
                None,
            )
            .await;
        assert_eq!(page2.body["data"].as_array().unwrap().len(), 1);
        assert!(page2.body["next_cursor"].is_null());
        assert!(
            page1.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .chain(page2.body["data"].as_array().unwrap())
                .all(|s| s["secret"].is_null())
        );

        let event = json!({"topic": "door.request.allowed", "data": {"k": 1}, "id": "order-1"});
        let first = publish(&hub, KEY_A, event.clone()).await;
        let repeat = publish(&hub, KEY_A, event).await;
        assert_eq!(
            first["id"], repeat["id"],
            "the same producer id maps to the same event"
        );
        receiver
            .wait_for_match(WAIT, |r| r.path == "/m" && r.json()["data"]["k"] == 1)
            .await;

        let paused = hub
            .call(
                "PATCH",
                &format!("/v1/subscriptions/{id}"),
                Some(KEY_A),
                Some(json!({"active": false})),
            )
            .await;
        assert_eq!(paused.body["status"], "paused");
        let while_paused = publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {"k": 2}}),
        )
        .await;
        assert_eq!(
            fanned_out(&hub, while_paused["id"].as_str().unwrap()).await,
            1,
            "queued for the paused subscription, to be parked"
        );
        assert_eq!(
            fanned_out(&hub, first["id"].as_str().unwrap()).await,
            1,
            "the repeated id reached the one subscription"
        );
        assert_eq!(
            events_at(&receiver.received(), "/m").len(),
            1,
            "a repeated id and a paused subscription deliver nothing"
        );

        let resumed = hub
            .call(
                "PATCH",
                &format!("/v1/subscriptions/{id}"),
                Some(KEY_A),
                Some(json!({"active": true, "name": "renamed"})),
            )
            .await;
        assert_eq!(
            (
                resumed.body["status"].as_str(),
                resumed.body["name"].as_str()
            ),
            (Some("active"), Some("renamed"))
        );
        publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {"k": 3}}),
        )
        .await;
        receiver
            .wait_for_match(WAIT, |r| r.path == "/m" && r.json()["data"]["k"] == 3)
            .await;
        // What was published while it was paused was parked, and comes with the resume.
        receiver
            .wait_for_match(WAIT, |r| r.path == "/m" && r.json()["data"]["k"] == 2)
            .await;

        // The receiver sees a request before the hub records its outcome: wait for the record.
        let attempts = eventually(WAIT, "four attempts and an odometer of 3", || async {
            let log = hub
                .call(
                    "GET",
                    &format!("/v1/subscriptions/{id}/deliveries"),
                    Some(KEY_A),
                    None,
                )
                .await;
            let attempts = log.body["data"].as_array().unwrap().clone();
            let odometer = hub
                .call("GET", &format!("/v1/subscriptions/{id}"), Some(KEY_A), None)
                .await
                .body["odometer"]
                .clone();
            (attempts.len() >= 4 && odometer == 3).then_some(attempts)
        })
        .await;
        assert!(
            attempts.len() >= 4,
            "confirmation and three events: {attempts:?}"
        );
        assert!(attempts.iter().all(|a| a["status_code"] == 200
            && a["latency_ms"].is_u64()
            && a["timestamp"].is_string()));
        let got = hub
            .call("GET", &format!("/v1/subscriptions/{id}"), Some(KEY_A), None)
            .await;
        assert_eq!(got.body["odometer"], 3);

        let moved = hub
            .call(
                "PATCH",
                &format!("/v1/subscriptions/{id}"),
                Some(KEY_A),
                Some(json!({"callback_url": receiver.url("/moved")})),
            )
            .await;
        assert_eq!(moved.body["status"], "pending");
        let confirmation = receiver.wait_for_match(WAIT, |r| r.path == "/moved").await;
        assert_eq!(confirmation.json()["type"], "Confirmation");
        let again = hub
            .call(
                "GET",
                confirmation.json()["confirmation_url"].as_str().unwrap(),
                None,
                None,
            )
            .await;
        assert_eq!(again.body["status"], "active");
    }
}

hub_tests::on_every_backend!(
    whole_path,
    resubscribe_refreshes,
    isolation,
    api_contract,
    manage_and_log
);
