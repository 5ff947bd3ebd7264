//! The event history, on every backend: a delivered event is listed, read with its delivery
//! (the body as delivered, its attempt) and resent under its `webhook-id`; `recover` with
//! `"include": "all"` sends a window again, delivered events included; a customer's session lists
//! only the events addressed to it (and broadcasts), with the fields it never receives removed;
//! after the retention an event is gone (404) and the store is back within its bound, the
//! history's size bound holds; with the history off, nothing is kept.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hub_tests::*;
use serde_json::{Value, json};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The `webhook-id`s `receiver` got at `path`, in order.
fn ids_at(receiver: &TestReceiver, path: &str) -> Vec<String> {
    events_at(&receiver.received(), path)
        .into_iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect()
}

async fn wait_for_count(receiver: &TestReceiver, path: &str, n: usize) {
    eventually(WAIT, &format!("{n} deliveries at {path}"), || {
        let got = ids_at(receiver, path).len();
        async move { (got >= n).then_some(()) }
    })
    .await;
}

/// The ids of a history page.
fn page_ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a page: {page}"))
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// Every event id of the history `key` (a key or a session token) lists at `base` (`/v1` or
/// the portal's), following the cursor.
async fn listed(hub: &HubProcess, key: &str, base: &str, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("{base}/events?limit=2{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = hub.call("GET", &path, Some(key), None).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        ids.extend(page_ids(&page.body));
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return ids,
        }
    }
}

mod scenarios {
    use super::*;

    pub async fn a_delivered_event_is_read_back_resent_and_recovered(backend: Backend) {
        let hub = HubProcess::start(backend, &["--retry-schedule", "1s"]).await;
        let receiver = TestReceiver::start().await;
        let sub =
            subscribe_confirmed(&hub, &receiver, KEY_A, "/r", json!({"secrecy_level": 1})).await;
        let sub_id = sub["id"].as_str().unwrap().to_string();
        let since = hub::clock::rfc3339(now_ms() - 1000);

        let first = publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {"door": 7, "pin": "1234"},
                   "sensitive": {"/data/pin": 1}}),
        )
        .await;
        let first_id = first["id"].as_str().unwrap().to_string();
        wait_for_count(&receiver, "/r", 1).await;
        let delivered = events_at(&receiver.received(), "/r")[0].json();
        assert_eq!(delivered["data"], json!({"door": 7}), "pin removed");

        // Listed and read back: the platform sees the whole payload; the delivery shows the
        // body as delivered and its attempt.
        let page = hub.call("GET", "/v1/events", Some(KEY_A), None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert_eq!(page_ids(&page.body), vec![first_id.clone()]);
        assert_eq!(
            page.body["data"][0]["data"],
            json!({"door": 7, "pin": "1234"})
        );
        assert_eq!(page.body["data"][0]["fanned_out"], 1);
        let read = eventually(WAIT, "the delivery read back as delivered", || {
            let hub = &hub;
            let path = format!("/v1/events/{first_id}");
            async move {
                let read = hub.call("GET", &path, Some(KEY_A), None).await;
                assert_eq!(read.status, 200, "{}", read.body);
                (read.body["deliveries"][0]["status"] == "delivered").then_some(read.body)
            }
        })
        .await;
        let delivery = &read["deliveries"][0];
        assert_eq!(delivery["subscription_id"], sub_id.as_str());
        assert_eq!(
            delivery["body"], delivered,
            "the body as the endpoint received it"
        );
        assert_eq!(delivery["attempts"].as_array().unwrap().len(), 1);
        assert_eq!(delivery["attempts"][0]["status_code"], 200);

        // Resent although it was delivered: the same webhook-id arrives again.
        let resent = hub
            .call(
                "POST",
                &format!("/v1/subscriptions/{sub_id}/deliveries/{first_id}/resend"),
                Some(KEY_A),
                None,
            )
            .await;
        assert_eq!(resent.status, 202, "{}", resent.body);
        wait_for_count(&receiver, "/r", 2).await;
        assert_eq!(
            ids_at(&receiver, "/r"),
            vec![first_id.clone(), first_id.clone()]
        );
        let again = events_at(&receiver.received(), "/r")[1].json();
        assert_eq!(again, delivered, "resent as delivered");

        // Recover every event of the window, delivered or not.
        let mut ids = vec![first_id.clone()];
        for n in 0..2 {
            let p = publish(
                &hub,
                KEY_A,
                json!({"topic": "door.request.allowed", "data": {"n": n}}),
            )
            .await;
            ids.push(p["id"].as_str().unwrap().to_string());
        }
        wait_for_count(&receiver, "/r", 4).await;
        let recovered = hub
            .call(
                "POST",
                &format!("/v1/subscriptions/{sub_id}/recover"),
                Some(KEY_A),
                Some(json!({"since": since, "include": "all"})),
            )
            .await;
        assert_eq!(recovered.status, 202, "{}", recovered.body);
        assert_eq!(recovered.body["requeued"], 3, "{}", recovered.body);
        assert_eq!(recovered.body["more"], false);
        wait_for_count(&receiver, "/r", 7).await;
        let mut again: Vec<String> = ids_at(&receiver, "/r")[4..].to_vec();
        again.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(again, want, "every event of the window, once more");
        // The exhausted-only default finds nothing to recover here.
        let exhausted = hub
            .call(
                "POST",
                &format!("/v1/subscriptions/{sub_id}/recover"),
                Some(KEY_A),
                Some(json!({"since": since})),
            )
            .await;
        assert_eq!(exhausted.body["requeued"], 0, "{}", exhausted.body);

        // Filters: by subscription, by topic pattern, by time; another account sees nothing.
        let by_sub = listed(&hub, KEY_A, "/v1", &format!("&subscription_id={sub_id}")).await;
        assert_eq!(by_sub.len(), 3);
        assert_eq!(
            by_sub,
            ids.iter().rev().cloned().collect::<Vec<_>>(),
            "newest first"
        );
        assert!(
            listed(&hub, KEY_A, "/v1", "&topic=light.*")
                .await
                .is_empty()
        );
        assert_eq!(listed(&hub, KEY_A, "/v1", "&topic=door.*").await.len(), 3);
        let future = hub::clock::rfc3339(now_ms() + 3_600_000);
        assert!(
            listed(&hub, KEY_A, "/v1", &format!("&since={future}"))
                .await
                .is_empty()
        );
        assert!(listed(&hub, KEY_B, "/v1", "").await.is_empty());
        let foreign = hub
            .call("GET", &format!("/v1/events/{first_id}"), Some(KEY_B), None)
            .await;
        assert_eq!(foreign.status, 404);
        let bad = hub
            .call("GET", "/v1/events?cursor=nope", Some(KEY_A), None)
            .await;
        assert_eq!(bad.status, 400);
        assert_eq!(bad.body["code"], "invalid_cursor");

        // Past the retention: gone, and nothing is listed.
        hub.advance_clock(Duration::from_secs(8 * 86_400)).await;
        hub.sweep().await;
        let gone = hub
            .call("GET", &format!("/v1/events/{first_id}"), Some(KEY_A), None)
            .await;
        assert_eq!(gone.status, 404, "{}", gone.body);
        assert!(listed(&hub, KEY_A, "/v1", "").await.is_empty());
    }

    pub async fn a_customer_sees_only_its_own_events_redacted(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let minted = hub
            .call(
                "POST",
                "/v1/portal/sessions",
                Some(KEY_A),
                Some(json!({"owner": "alice"})),
            )
            .await;
        assert_eq!(minted.status, 201, "{}", minted.body);
        let token = minted.body["token"].as_str().unwrap().to_string();
        let event = |owner: Value, broadcast: bool| {
            let mut body = json!({"topic": "door.request.allowed",
                "data": {"door": 1, "pin": "1234", "name": "Alice"},
                "sensitive": {"/data/pin": 1, "/data/name": 2}});
            if !owner.is_null() {
                body["owner"] = owner;
            }
            if broadcast {
                body["broadcast"] = json!(true);
            }
            body
        };
        let id = |body: Value| {
            let hub = &hub;
            async move {
                publish(hub, KEY_A, body).await["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            }
        };
        let alices = id(event(json!("alice"), false)).await;
        let bobs = id(event(json!("bob"), false)).await;
        let platforms = id(event(Value::Null, false)).await;
        let everyones = id(event(Value::Null, true)).await;

        let all = eventually(WAIT, "four events in the history", || {
            let hub = &hub;
            async move {
                let ids = listed(hub, KEY_A, "/v1", "").await;
                (ids.len() == 4).then_some(ids)
            }
        })
        .await;
        assert_eq!(
            all,
            vec![everyones.clone(), platforms, bobs.clone(), alices.clone()]
        );
        let bobs_only = listed(&hub, KEY_A, "/v1", "&owner=bob").await;
        assert_eq!(bobs_only, vec![bobs.clone()]);

        let theirs = listed(&hub, &token, "/portal/api/v1", "").await;
        assert_eq!(
            theirs,
            vec![everyones, alices.clone()],
            "its own and broadcasts"
        );
        let page = hub
            .call("GET", "/portal/api/v1/events", Some(&token), None)
            .await;
        for event in page.body["data"].as_array().unwrap() {
            assert_eq!(
                event["data"],
                json!({"door": 1}),
                "redacted at the session's floor (the strictest)"
            );
            assert!(event.get("sensitive").is_none(), "{event}");
        }
        let read = hub
            .call(
                "GET",
                &format!("/portal/api/v1/events/{alices}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(read.status, 200, "{}", read.body);
        assert_eq!(read.body["data"], json!({"door": 1}));
        for foreign in [&bobs] {
            let read = hub
                .call(
                    "GET",
                    &format!("/portal/api/v1/events/{foreign}"),
                    Some(&token),
                    None,
                )
                .await;
            assert_eq!(read.status, 404, "another customer's event: {}", read.body);
        }
        let named = hub
            .call("GET", "/portal/api/v1/events?owner=bob", Some(&token), None)
            .await;
        assert_eq!(named.status, 403, "{}", named.body);
    }

    pub async fn the_history_stays_within_its_bound(backend: Backend) {
        let hub = HubProcess::start(backend, &["--history-max-events", "5"]).await;
        let mut ids = Vec::new();
        for n in 0..8 {
            let p = publish(
                &hub,
                KEY_A,
                json!({"topic": "door.opened", "data": {"n": n}}),
            )
            .await;
            ids.push(p["id"].as_str().unwrap().to_string());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        eventually(WAIT, "eight events in the history", || {
            let hub = &hub;
            async move { (listed(hub, KEY_A, "/v1", "").await.len() == 8).then_some(()) }
        })
        .await;
        hub.sweep().await;
        let kept = listed(&hub, KEY_A, "/v1", "").await;
        if backend == Backend::Aws {
            // DynamoDB is bounded by the retention alone (TTL), not by a count.
            assert_eq!(kept.len(), 8);
        } else {
            let newest: Vec<String> = ids.iter().rev().take(5).cloned().collect();
            assert_eq!(kept, newest, "the oldest go first beyond the bound");
        }
        hub.advance_clock(Duration::from_secs(7 * 86_400 + 60))
            .await;
        hub.sweep().await;
        assert!(listed(&hub, KEY_A, "/v1", "").await.is_empty());
    }

    pub async fn with_the_history_off_nothing_is_kept(backend: Backend) {
        let hub = HubProcess::start(backend, &["--history", "off"]).await;
        let receiver = TestReceiver::start().await;
        let sub = subscribe_confirmed(&hub, &receiver, KEY_A, "/r", json!({})).await;
        let p = publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {}}),
        )
        .await;
        wait_for_count(&receiver, "/r", 1).await;
        let list = hub.call("GET", "/v1/events", Some(KEY_A), None).await;
        assert_eq!(list.status, 404);
        assert_eq!(list.body["code"], "history_off");
        let resend = hub
            .call(
                "POST",
                &format!(
                    "/v1/subscriptions/{}/deliveries/{}/resend",
                    sub["id"].as_str().unwrap(),
                    p["id"].as_str().unwrap()
                ),
                Some(KEY_A),
                None,
            )
            .await;
        assert_eq!(resend.status, 404, "{}", resend.body);
    }
}

on_every_backend!(
    a_delivered_event_is_read_back_resent_and_recovered,
    a_customer_sees_only_its_own_events_redacted,
    the_history_stays_within_its_bound,
    with_the_history_off_nothing_is_kept,
);
