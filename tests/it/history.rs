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
        // A sustained publish rate under a moved clock: three events every 12 hours for three
        // days, a 48-hour retention, and (SQLite, memory) at most five events held. After each
        // sweep the history holds exactly what the bounds allow: the last 48 hours' events,
        // the newest five of them where the count bound applies.
        let hub = HubProcess::start(
            backend,
            &["--retention", "48h", "--history-max-events", "5"],
        )
        .await;
        let mut published: Vec<String> = Vec::new();
        for round in 0..6 {
            for n in 0..3 {
                let p = publish(
                    &hub,
                    KEY_A,
                    json!({"topic": "door.opened", "data": {"round": round, "n": n}}),
                )
                .await;
                published.push(p["id"].as_str().unwrap().to_string());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let wanted = published.len().min(12); // 0, 12, 24 and 36 h old: four rounds
            eventually(WAIT, "this round's events in the history", || {
                let hub = &hub;
                async move {
                    let held = listed(hub, KEY_A, "/v1", "").await.len();
                    (held >= wanted.min(if backend == Backend::Aws { 12 } else { 8 })).then_some(())
                }
            })
            .await;
            hub.advance_clock(Duration::from_secs(12 * 3600)).await;
            hub.sweep().await;
            // Now 12, 24 and 36 h old: the last three rounds (the fourth is 48 h old: past).
            let within: Vec<String> = published.iter().rev().take(9).cloned().collect();
            let bound = if backend == Backend::Aws {
                within.len() // DynamoDB: the retention alone (TTL)
            } else {
                5
            };
            let held = listed(&hub, KEY_A, "/v1", "").await;
            assert_eq!(
                held,
                within.into_iter().take(bound).collect::<Vec<_>>(),
                "round {round}: the newest events within the bounds"
            );
        }
        hub.advance_clock(Duration::from_secs(48 * 3600)).await;
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

/// The history store contract, on every adapter directly: events kept in several writes (as
/// concurrent fan-outs make them: interleaved in time, one event written twice) read back by id
/// and page by page in both orders, each exactly once; another account's, an expired one and an
/// unknown id are absent.
mod history_store {

    use hub::model::{Event, KeptEvent};
    use hub::ports::{Audience, EventQuery, Store};

    use super::*;

    fn kept(account: &str, ms: i64, n: u64, until_ms: i64) -> KeptEvent {
        KeptEvent {
            event: Event::new(
                format!("evt_{ms:012x}{n:016x}"),
                account,
                hub::topic::Topic::parse("door.opened").unwrap(),
                ms,
                json!({"n": n}),
            ),
            subscriptions: vec![format!("sub_{n}")],
            fanned_out: 1,
            until_ms,
        }
    }

    /// Every page of `query` followed to its end: the ids, in the order given.
    async fn walk(store: &dyn Store, mut query: EventQuery) -> Vec<String> {
        let mut ids = Vec::new();
        loop {
            let page = query.page_of(store.scan_events(&query).await.unwrap());
            ids.extend(page.items.iter().map(|k| k.event.id.clone()));
            match page.next_cursor {
                Some(next) => query.cursor = Some(next),
                None => return ids,
            }
        }
    }

    async fn contract(store: &dyn Store) {
        let now = now_ms();
        let (t, later) = (now - 3_600_000, now + 86_400_000);
        let account = unique("acct");
        let at = |offset: i64, n: u64| kept(&account, t + offset, n, later);
        // Three fan-outs' writes, interleaved in time; the first event written again with
        // another batch; 30 events within one second; another account's; an expired one.
        let writes = vec![
            vec![at(0, 1), at(300, 2), at(600, 3)],
            vec![at(100, 4), at(400, 5), at(1200, 6)],
            vec![at(0, 1), at(1300, 7)],
            (0..30).map(|n| at(2500 + n as i64, 100 + n)).collect(),
            vec![kept("someone-else", t + 50, 9, later)],
            vec![kept(&account, t + 700, 8, now - 1)],
        ];
        // And 1,100 more from two fan-outs writing 25 at a time, each batch spanning most of a
        // second and the two interleaved every 20 ms: more than one read of the store holds (its
        // scan bound), so a page ends where one read stopped, and the next goes on from there.
        let mut writes = writes;
        for batch in 0..22 {
            for stream in 0..2 {
                writes.push(
                    (0..25)
                        .map(|i| {
                            let n = 1000 + (batch * 50 + i * 2 + stream) as u64;
                            let offset = 10_000 + 1000 * batch + 40 * i + 20 * stream;
                            let mut kept = at(offset, n);
                            kept.event.owner = Some(format!("customer-{}", n % 20));
                            kept
                        })
                        .collect(),
                );
            }
        }
        for write in &writes {
            store.keep_events(write.clone()).await.unwrap();
        }
        let mut expected: Vec<String> = writes
            .iter()
            .enumerate()
            .filter(|(index, _)| ![4, 5].contains(index))
            .flat_map(|(_, write)| write)
            .map(|k| k.event.id.clone())
            .collect();
        expected.sort();
        expected.dedup();
        assert_eq!(expected.len(), 37 + 1100);
        let query = EventQuery {
            account: account.clone(),
            topic: None,
            audience: Audience::Everyone,
            subscription_id: None,
            since_ms: t - 60_000,
            until_ms: now,
            cursor: None,
            limit: 100,
            oldest_first: true,
            now_ms: now,
        };
        // SQLite writes the history behind (committed before the next awaited write).
        let oldest_first = eventually(WAIT, "every event kept", || {
            let query = query.clone();
            let expected = expected.len();
            async move {
                let ids = walk(store, query).await;
                (ids.len() >= expected).then_some(ids)
            }
        })
        .await;
        assert_eq!(oldest_first, expected, "oldest first, each once");
        let whole_reads = walk(
            store,
            EventQuery {
                limit: 1000,
                ..query.clone()
            },
        )
        .await;
        assert_eq!(
            whole_reads, expected,
            "pages as long as a read, oldest first"
        );
        let mut whole_reads = walk(
            store,
            EventQuery {
                limit: 1000,
                oldest_first: false,
                ..query.clone()
            },
        )
        .await;
        whole_reads.reverse();
        assert_eq!(
            whole_reads, expected,
            "pages as long as a read, newest first"
        );
        let newest_first = walk(
            store,
            EventQuery {
                oldest_first: false,
                ..query.clone()
            },
        )
        .await;
        let mut reversed = expected.clone();
        reversed.reverse();
        assert_eq!(newest_first, reversed, "newest first, each once");
        // A window inside: from the 400 ms event up to the 1300 ms one (excluded).
        let inside = walk(
            store,
            EventQuery {
                since_ms: t + 400,
                until_ms: t + 1300,
                oldest_first: false,
                limit: 1,
                ..query.clone()
            },
        )
        .await;
        let want: Vec<String> = [(1200, 6), (600, 3), (400, 5)]
            .iter()
            .map(|(offset, n)| at(*offset, *n).event.id)
            .collect();
        assert_eq!(inside, want);
        // A selective filter: a page holds fewer than its limit, so each read of the store
        // goes to its bound and the next goes on from where it stopped.
        let customers: Vec<String> = expected
            .iter()
            .filter(|id| {
                writes
                    .iter()
                    .flatten()
                    .any(|k| k.event.id == **id && k.event.owner.as_deref() == Some("customer-3"))
            })
            .cloned()
            .collect();
        assert_eq!(customers.len(), 55);
        for oldest_first in [true, false] {
            let mut ids = walk(
                store,
                EventQuery {
                    audience: Audience::AddressedTo("customer-3".into()),
                    oldest_first,
                    ..query.clone()
                },
            )
            .await;
            if !oldest_first {
                ids.reverse();
            }
            assert_eq!(
                ids, customers,
                "a selective walk, oldest first: {oldest_first}"
            );
        }
        // By subscription.
        let by_sub = walk(
            store,
            EventQuery {
                subscription_id: Some("sub_5".into()),
                ..query.clone()
            },
        )
        .await;
        assert_eq!(by_sub, vec![at(400, 5).event.id]);
        for id in &expected {
            let found = store.kept_event(&account, id, now).await.unwrap();
            assert_eq!(found.map(|k| k.event.id).as_deref(), Some(id.as_str()));
        }
        let expired = kept(&account, t + 700, 8, now - 1).event.id;
        assert!(
            store
                .kept_event(&account, &expired, now)
                .await
                .unwrap()
                .is_none()
        );
        let foreign = kept("someone-else", t + 50, 9, later).event.id;
        assert!(
            store
                .kept_event(&account, &foreign, now)
                .await
                .unwrap()
                .is_none()
        );
        for unknown in ["evt_unknown", "nonsense", &at(200, 77).event.id] {
            assert!(
                store
                    .kept_event(&account, unknown, now)
                    .await
                    .unwrap()
                    .is_none()
            );
        }
    }

    contract_on_every_store!();
}
