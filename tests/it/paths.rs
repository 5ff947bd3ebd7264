//! Error and race paths, each with its own test: a lost race on save, a sweep that read before a
//! refresh, an expiry notice whose marking loses a race, fan-out to a subscription two of whose
//! patterns match, a callback URL another subscription holds, topic changes that leave no stale
//! entries, `null` clearing a field, the old confirmation link after a callback change, bearer
//! receiver credentials at the receiver, `HUB_*` settings beside flags, a graceful stop that
//! finishes the attempt in flight, and the SSRF guard of a hub that does not lift it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use hub::auth::Caller;
use hub::ports::Store;
use hub::service::subscriptions::{SubscribeRequest, UpdateRequest};
use hub::{HubError, Settings};
use hub_tests::*;
use serde_json::{Value, json};

const HOUR_MS: i64 = 3_600_000;

fn acme() -> Caller {
    Caller::of_account("acme", "acme:test", None)
}

fn request(body: Value) -> SubscribeRequest {
    serde_json::from_value(body).expect("a subscribe request")
}

fn update(body: Value) -> UpdateRequest {
    serde_json::from_value(body).expect("an update request")
}

/// The ids of the subscriptions whose topic entries `pattern` holds for `acme`.
async fn entries(store: &dyn Store, pattern: &str) -> Vec<String> {
    store
        .topic_entries(
            "acme",
            &hub::topic::Pattern::parse(pattern).unwrap(),
            None,
            1_000,
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.subscription_id)
        .collect()
}

mod scenarios {
    use super::*;

    /// The store's allowances (confirmations per customer and hour): each key counts to its
    /// limit within one window, concurrent takes never pass it, a new window starts over, and a
    /// limit of 0 allows nothing.
    pub async fn an_allowance_counts_to_its_limit_in_each_window(backend: Backend) {
        let hub = InProcess::start(backend, Settings::default()).await;
        let store = hub.store.inner().clone();
        let start = 1_800_000_000_000 / HOUR_MS * HOUR_MS;
        let takes = futures::future::join_all(
            (0..8).map(|i| store.take_allowance("confirm-a", start + i, HOUR_MS, 5)),
        )
        .await;
        let granted = takes.into_iter().filter(|t| *t.as_ref().unwrap()).count();
        assert_eq!(granted, 5, "eight at once, five granted");
        assert!(
            !store
                .take_allowance("confirm-a", start + HOUR_MS - 1, HOUR_MS, 5)
                .await
                .unwrap()
        );
        assert!(
            store
                .take_allowance("confirm-b", start + 10, HOUR_MS, 5)
                .await
                .unwrap(),
            "another key counts apart"
        );
        for _ in 0..5 {
            assert!(
                store
                    .take_allowance("confirm-a", start + HOUR_MS, HOUR_MS, 5)
                    .await
                    .unwrap(),
                "the next window starts over"
            );
        }
        assert!(
            !store
                .take_allowance("confirm-a", start + HOUR_MS + 1, HOUR_MS, 5)
                .await
                .unwrap()
        );
        assert!(
            !store
                .take_allowance("confirm-c", start, HOUR_MS, 0)
                .await
                .unwrap()
        );
    }

    /// With `--delivery-log lean`, the delivery log holds the failed attempts only, and the
    /// odometer still counts every delivered event.
    pub async fn the_lean_delivery_log_keeps_failures_and_counts_successes(backend: Backend) {
        let hub = HubProcess::start(
            backend,
            &["--delivery-log", "lean", "--retry-schedule", "1s"],
        )
        .await;
        let tries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = tries.clone();
        let receiver = TestReceiver::scripted(move |req, _| {
            let first_event = req.json()["type"] != "Confirmation"
                && req.path == "/flaky"
                && seen.fetch_add(1, Ordering::SeqCst) == 0;
            Reply::status(if first_event { 500 } else { 200 })
        })
        .await;
        let ok = subscribe_confirmed(&hub, &receiver, KEY_A, "/ok", json!({})).await;
        let flaky = subscribe_confirmed(&hub, &receiver, KEY_A, "/flaky", json!({})).await;
        for n in 0..3 {
            publish(
                &hub,
                KEY_A,
                json!({"topic": "door.request.allowed", "data": {"n": n}}),
            )
            .await;
        }
        let log_of = |id: &str| {
            let (hub, id) = (&hub, id.to_string());
            async move {
                let sub = hub
                    .call("GET", &format!("/v1/subscriptions/{id}"), Some(KEY_A), None)
                    .await;
                (
                    sub.body["odometer"].as_u64().unwrap(),
                    delivery_log(hub, &id).await,
                    sub.body["last_delivered_at"].clone(),
                )
            }
        };
        // The odometer is the barrier: once it reads 3, every attempt is recorded (or not).
        for (sub, failures) in [(&ok, 0), (&flaky, 1)] {
            let id = sub["id"].as_str().unwrap();
            let (log, last) = eventually(WAIT, "three delivered", || async {
                let (odometer, log, last) = log_of(id).await;
                (odometer == 3).then_some((log, last))
            })
            .await;
            // The last success is kept though no success is stored one by one.
            assert!(
                last.as_str()
                    .is_some_and(|t| timestamp_ms(&last) > 0 && t.ends_with('Z')),
                "{id}: last_delivered_at {last}"
            );
            assert_eq!(
                log.len(),
                failures,
                "{id}: only failures are stored: {log:#?}"
            );
            assert!(
                log.iter()
                    .all(|a| a["delivered"] == false && a["status_code"] == 500)
            );
        }
    }

    /// A save that loses to a concurrent change answers `409 conflict` and leaves the winner's
    /// change in place.
    pub async fn a_lost_race_on_save_is_a_409(backend: Backend) {
        let hub = InProcess::start(backend, Settings::default()).await;
        let now = hub.hub.now_ms();
        let sub = active_subscription(1, "acme", &["a.b.c"], "https://h.example/1", now, HOUR_MS);
        hub.store.inner().save(&sub, None).await.unwrap();
        hub.store.race_saves.store(1, Ordering::SeqCst);
        let err = hub
            .hub
            .update_subscription(&acme(), &sub.id, update(json!({"name": "mine"})))
            .await
            .err()
            .expect("the racer saved first");
        assert!(matches!(err, HubError::Conflict), "{err:?}");
        assert_eq!((err.status(), err.code()), (409, "conflict"));
        let stored = hub.store.inner().get(&sub.id).await.unwrap().unwrap();
        assert_eq!(
            stored.name.as_deref(),
            Some("racer"),
            "the winner's change stays"
        );
        // Retrying, as the code says is safe, succeeds.
        let again = hub
            .hub
            .update_subscription(&acme(), &sub.id, update(json!({"name": "mine"})))
            .await
            .unwrap();
        assert_eq!(again.name.as_deref(), Some("mine"));
    }

    /// The sweep removes only the subscription it read: one refreshed after the sweep read the
    /// expiry index survives, with its topic entries.
    pub async fn the_sweep_skips_a_subscription_refreshed_after_it_looked(backend: Backend) {
        let hub = InProcess::start(backend, Settings::default()).await;
        let now = hub.hub.now_ms();
        let mut lapsed = active_subscription(
            2,
            "acme",
            &["a.b.c"],
            "https://h.example/2",
            now - HOUR_MS,
            HOUR_MS,
        );
        lapsed.expires_at_ms = now - 1_000;
        hub.store.inner().save(&lapsed, None).await.unwrap();
        let mut refreshed = lapsed.clone();
        refreshed.expires_at_ms = now + HOUR_MS;
        refreshed.version += 1;
        hub.store
            .inner()
            .save(&refreshed, Some(&lapsed))
            .await
            .unwrap();
        // The sweep sees the index as it was before the refresh.
        *hub.store.stale_sweep_reads.lock().unwrap() = Some(vec![lapsed.clone()]);
        let report = hub.hub.sweep().await.unwrap();
        assert_eq!(report.removed, 0, "refreshed meanwhile: not removed");
        assert!(hub.store.inner().get(&lapsed.id).await.unwrap().is_some());
        assert_eq!(
            entries(hub.store.inner().as_ref(), "a.b.c").await,
            vec![lapsed.id.clone()]
        );
    }

    /// An expiry notice whose marking loses a race is queued, not marked, and the next sweep
    /// queues it again under the same id (a receiver dedupes it); the racer's change stays.
    pub async fn an_expiry_notice_that_loses_its_mark_is_sent_again_with_the_same_id(
        backend: Backend,
    ) {
        let hub = InProcess::start(backend, Settings::default()).await;
        let now = hub.hub.now_ms();
        let mut sub =
            active_subscription(3, "acme", &["a.b.c"], "https://h.example/3", now, HOUR_MS);
        sub.expires_at_ms = now + 60_000; // a tenth of the hour's lease is left: due
        sub.expiry_notice = true;
        hub.store.inner().save(&sub, None).await.unwrap();
        hub.store.race_saves.store(1, Ordering::SeqCst);
        assert_eq!(hub.hub.sweep().await.unwrap().notices, 1);
        let stored = hub.store.inner().get(&sub.id).await.unwrap().unwrap();
        assert!(!stored.expiry_notice_sent, "not marked");
        assert_eq!(stored.name.as_deref(), Some("racer"));
        assert_eq!(hub.hub.sweep().await.unwrap().notices, 1, "decided again");
        assert_eq!(hub.hub.sweep().await.unwrap().notices, 0, "marked now");
        let ids: Vec<Value> = hub
            .deliveries
            .bodies()
            .iter()
            .map(|task| task["payload"]["event"]["id"].clone())
            .collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert_eq!(ids[0], ids[1], "the same webhook-id both times");
    }

    /// One delivery for a subscription two of whose patterns match the event.
    pub async fn two_matching_patterns_make_one_delivery(backend: Backend) {
        let hub = InProcess::start(backend, Settings::default()).await;
        let now = hub.hub.now_ms();
        let both = active_subscription(
            4,
            "acme",
            &["door.*", "door.request.allowed", "*"],
            "https://h.example/4",
            now,
            HOUR_MS,
        );
        hub.store.inner().save(&both, None).await.unwrap();
        let event = hub::model::Event {
            id: "evt_twopatterns".into(),
            account: "acme".into(),
            topic: hub::topic::Topic::parse("door.request.allowed").unwrap(),
            timestamp_ms: now,
            data: json!({}),
            labels: Default::default(),
            sensitive: Default::default(),
            owner: None,
            broadcast: false,
            trace: None,
        };
        assert_eq!(hub.hub.fan_out(&event).await.unwrap(), 1);
        let tasks = hub.deliveries.bodies();
        assert_eq!(tasks.len(), 1, "{tasks:?}");
        assert_eq!(tasks[0]["subscription_id"], both.id.as_str());
    }

    /// Changing the topics removes the old topic entries: the old topic no longer reaches the
    /// subscription, the new one does.
    pub async fn changed_topics_leave_no_stale_entries(backend: Backend) {
        let hub = InProcess::start(backend, Settings::default()).await;
        let created = hub
            .hub
            .subscribe(
                &acme(),
                request(
                    json!({"callback_url": "https://h.example/5", "topics": ["a.b.c", "keep.me"]}),
                ),
            )
            .await
            .unwrap();
        let id = created.subscription.id.clone();
        assert_eq!(
            entries(hub.store.inner().as_ref(), "a.b.c").await,
            vec![id.clone()]
        );
        hub.hub
            .update_subscription(
                &acme(),
                &id,
                update(json!({"topics": ["x.y.z", "keep.me"]})),
            )
            .await
            .unwrap();
        let store = hub.store.inner().as_ref();
        assert!(
            entries(store, "a.b.c").await.is_empty(),
            "the old entry is gone"
        );
        assert_eq!(entries(store, "x.y.z").await, vec![id.clone()]);
        assert_eq!(entries(store, "keep.me").await, vec![id.clone()]);
    }

    /// A callback URL another live subscription of the account holds is refused on update,
    /// with its code, and nothing changes.
    pub async fn a_callback_another_subscription_holds_is_refused(backend: Backend) {
        let hub = InProcess::start(backend, Settings::default()).await;
        let subscribe = |url: &str| request(json!({"callback_url": url, "topic": "a.b.c"}));
        let first = hub
            .hub
            .subscribe(&acme(), subscribe("https://h.example/first"))
            .await
            .unwrap();
        let second = hub
            .hub
            .subscribe(&acme(), subscribe("https://h.example/second"))
            .await
            .unwrap();
        let err = hub
            .hub
            .update_subscription(
                &acme(),
                &second.subscription.id,
                update(json!({"callback_url": "https://h.example/first"})),
            )
            .await
            .err()
            .expect("held by the first");
        assert_eq!((err.status(), err.code()), (400, "duplicate_callback_url"));
        let stored = hub
            .store
            .inner()
            .get(&second.subscription.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.callback_url, "https://h.example/second");
        assert!(
            hub.store
                .inner()
                .get(&first.subscription.id)
                .await
                .unwrap()
                .is_some()
        );
    }

    /// `null` clears a field; an absent field is left alone.
    pub async fn null_clears_a_field_and_absence_keeps_it(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let created = subscribe_confirmed(
            &hub,
            &receiver,
            KEY_A,
            "/n",
            json!({"name": "door", "user_data": {"k": 1}, "labels": {"device": ["85"]},
                   "receiver_auth": {"type": "bearer", "token": "tok"}}),
        )
        .await;
        let id = created["id"].as_str().unwrap();
        let path = format!("/v1/subscriptions/{id}");
        let kept = hub
            .call(
                "PATCH",
                &path,
                Some(KEY_A),
                Some(json!({"expiry_notice": false})),
            )
            .await;
        assert_eq!(kept.status, 200);
        assert_eq!(
            (&kept.body["name"], &kept.body["user_data"]),
            (&json!("door"), &json!({"k": 1}))
        );
        let cleared = hub
            .call(
                "PATCH",
                &path,
                Some(KEY_A),
                Some(
                    json!({"name": null, "user_data": null, "labels": null, "receiver_auth": null}),
                ),
            )
            .await;
        assert_eq!(cleared.status, 200, "{:?}", cleared.body);
        assert!(cleared.body["name"].is_null() && cleared.body["user_data"].is_null());
        assert_eq!(cleared.body["labels"], json!({}));
        // Receiver credentials are gone: the next delivery carries no authorization header.
        publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {"after": "clear"}}),
        )
        .await;
        let got = receiver
            .wait_for_match(WAIT, |r| {
                r.path == "/n" && r.json()["data"]["after"] == "clear"
            })
            .await;
        assert!(
            !got.headers.contains_key("authorization"),
            "{:?}",
            got.headers
        );
        assert!(got.json()["user_data"].is_null());
    }

    /// After a callback change, the link sent to the old callback no longer confirms; the new one
    /// does.
    pub async fn the_old_confirmation_link_dies_with_the_old_callback(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::scripted(|_, _| Reply::status(200)).await;
        let created = subscribe_pending(&hub, &receiver, KEY_A, "/old", json!({})).await;
        let id = created["id"].as_str().unwrap();
        let old = receiver.wait_for_match(WAIT, |r| r.path == "/old").await;
        let moved = hub
            .call(
                "PATCH",
                &format!("/v1/subscriptions/{id}"),
                Some(KEY_A),
                Some(json!({"callback_url": receiver.url("/new")})),
            )
            .await;
        assert_eq!(
            (moved.status, moved.body["status"].as_str()),
            (200, Some("pending"))
        );
        let new = receiver.wait_for_match(WAIT, |r| r.path == "/new").await;
        let link = |r: &Received| r.json()["confirmation_url"].as_str().unwrap().to_string();
        assert_ne!(link(&old), link(&new));
        let refused = hub.call("GET", &link(&old), None, None).await;
        assert_eq!(
            (refused.status, refused.body["code"].as_str().unwrap_or("")),
            (400, "invalid_token")
        );
        let confirmed = hub.call("GET", &link(&new), None, None).await;
        assert_eq!(
            (confirmed.status, confirmed.body["status"].as_str()),
            (200, Some("active"))
        );
    }
}

hub_tests::on_every_backend!(
    an_allowance_counts_to_its_limit_in_each_window,
    the_lean_delivery_log_keeps_failures_and_counts_successes,
    a_lost_race_on_save_is_a_409,
    the_sweep_skips_a_subscription_refreshed_after_it_looked,
    an_expiry_notice_that_loses_its_mark_is_sent_again_with_the_same_id,
    two_matching_patterns_make_one_delivery,
    changed_topics_leave_no_stale_entries,
    a_callback_another_subscription_holds_is_refused,
    null_clears_a_field_and_absence_keeps_it,
    the_old_confirmation_link_dies_with_the_old_callback,
);

/// Bearer receiver credentials arrive as `Authorization: Bearer …` on every delivery, the
/// confirmation included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_receiver_auth_reaches_the_receiver() {
    let hub = HubProcess::start(Backend::Memory, &[]).await;
    let receiver = TestReceiver::start().await;
    subscribe_confirmed(
        &hub,
        &receiver,
        KEY_A,
        "/b",
        json!({"receiver_auth": {"type": "bearer", "token": "s3cr3t-t0ken"}}),
    )
    .await;
    publish(
        &hub,
        KEY_A,
        json!({"topic": "door.request.allowed", "data": {}}),
    )
    .await;
    receiver
        .wait_for_match(WAIT, |r| {
            r.path == "/b" && r.json()["type"] != "Confirmation"
        })
        .await;
    let at_b: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|r| r.path == "/b")
        .collect();
    assert_eq!(at_b.len(), 2, "the confirmation and the event");
    assert!(
        at_b.iter()
            .all(|r| r.header("authorization") == "Bearer s3cr3t-t0ken")
    );
}

/// Settings come from flags and from `HUB_*` variables; a flag wins over its variable. Seen
/// in the retry the hub schedules (and records) after a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_wins_over_its_hub_variable() {
    async fn scheduled_delay_ms(extra: &[&str], env: &[(&str, &str)]) -> i64 {
        let hub = HubProcess::start_on(Backend::Memory, &unique("env"), extra, env).await;
        let receiver = TestReceiver::failing_events().await;
        let created = subscribe_confirmed(&hub, &receiver, KEY_A, "/e", json!({})).await;
        let id = created["id"].as_str().unwrap().to_string();
        publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {}}),
        )
        .await;
        let first = eventually(WAIT, "the failed attempt is logged", || async {
            delivery_log(&hub, &id)
                .await
                .into_iter()
                .find(is_event_attempt)
        })
        .await;
        timestamp_ms(&first["next_attempt_at"])
            - timestamp_ms(&first["timestamp"])
            - first["latency_ms"].as_i64().unwrap()
    }
    // ±20 % jitter around each delay.
    let from_env = scheduled_delay_ms(&[], &[("HUB_RETRY_SCHEDULE", "100s")]).await;
    assert!(
        (80_000..=120_000).contains(&from_env),
        "HUB_RETRY_SCHEDULE alone: {from_env} ms"
    );
    let from_flag = scheduled_delay_ms(
        &["--retry-schedule", "10s"],
        &[("HUB_RETRY_SCHEDULE", "100s")],
    )
    .await;
    assert!(
        (8_000..=12_000).contains(&from_flag),
        "the flag wins: {from_flag} ms"
    );
}

/// Ctrl-C while an attempt is in flight: the hub waits for the receiver's answer, records the
/// attempt and acknowledges the message before it exits (the restarted hub's queue is empty),
/// so nothing is sent twice after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_finishes_the_attempt_in_flight() {
    let mut hub = HubProcess::start(Backend::Sqlite, &[]).await;
    let receiver = TestReceiver::scripted(|req, _| {
        if req.json()["type"] == "Confirmation" {
            Reply::status(200)
        } else {
            Reply {
                delay: Duration::from_secs(2),
                ..Reply::status(200)
            }
        }
    })
    .await;
    let created = subscribe_confirmed(&hub, &receiver, KEY_A, "/slow", json!({})).await;
    let id = created["id"].as_str().unwrap().to_string();
    let published = publish(
        &hub,
        KEY_A,
        json!({"topic": "door.request.allowed", "data": {}}),
    )
    .await;
    receiver
        .wait_for_match(WAIT, |r| {
            r.path == "/slow" && r.json()["type"] != "Confirmation"
        })
        .await;
    // The receiver holds the request for 2 s: the stop comes while it is in flight.
    let status = hub.interrupt();
    assert!(status.success(), "{status:?}");
    let log = hub.log();
    assert!(
        log.lines().any(|l| l.contains("\"delivery attempt\"")
            && l.contains(published["id"].as_str().unwrap())
            && l.contains("\"delivered\":true")),
        "the attempt in flight finished before the exit:\n{log}"
    );
    hub.restart().await;
    // The message itself was acknowledged: the deliveries queue holds nothing (an
    // unacknowledged one would still be there, and come back at once after the restart).
    assert_eq!(deliveries_depth(&hub).await, 0);
    let log = delivery_log(&hub, &id).await;
    let events: Vec<&Value> = log.iter().filter(|a| is_event_attempt(a)).collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["delivered"], true);
    // A sentinel through the same pipeline: once it arrived, a redelivery would have too.
    publish(
        &hub,
        KEY_A,
        json!({"topic": "door.request.allowed", "data": {"sentinel": 1}}),
    )
    .await;
    receiver
        .wait_for_match(WAIT, |r| r.json()["data"]["sentinel"] == 1)
        .await;
    assert_eq!(
        events_at(&receiver.received(), "/slow").len(),
        2,
        "no redelivery"
    );
}

/// A hub that does not lift the SSRF guard refuses a private address when it is saved, and a
/// name that resolves to loopback when it connects: the attempt is recorded as refused and the
/// receiver never hears from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssrf_guard_holds_end_to_end() {
    // Names are looked up as in production: the machine's name below must be refused by the
    // resolver's inward-address filter, not by a test mode that resolves nothing.
    let hub = HubProcess::start_production(Backend::Memory).await;
    let receiver = TestReceiver::start().await;
    let port = receiver
        .url("/")
        .split(':')
        .next_back()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let literal = hub
        .call(
            "POST",
            "/v1/subscriptions",
            Some(KEY_A),
            Some(json!({"callback_url": format!("https://127.0.0.1:{port}/x"), "topic": "a.b.c"})),
        )
        .await;
    assert_eq!(
        (literal.status, literal.body["code"].as_str().unwrap_or("")),
        (400, "forbidden_target")
    );
    // The machine's own name passes the check on save (it is not an address) and resolves to
    // this machine (loopback or its private address) when the hub connects.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let resolved: Vec<std::net::SocketAddr> =
        std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), 443))
            .unwrap()
            .collect();
    assert!(
        resolved.iter().all(|a| match a.ip() {
            std::net::IpAddr::V4(ip) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
            std::net::IpAddr::V6(ip) => ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00,
        }),
        "this test needs the machine's name ({host}) to resolve inward: {resolved:?}"
    );
    let named = hub
        .call(
            "POST",
            "/v1/subscriptions",
            Some(KEY_A),
            Some(json!({"callback_url": format!("https://{host}:{port}/x"), "topic": "a.b.c"})),
        )
        .await;
    assert_eq!(named.status, 201, "{:?}", named.body);
    let id = named.body["id"].as_str().unwrap();
    let attempt = eventually(WAIT, "the confirmation attempt is logged", || async {
        delivery_log(&hub, id).await.into_iter().next()
    })
    .await;
    assert_eq!(attempt["error"], "forbidden_target", "{attempt}");
    assert!(receiver.received().is_empty());
}

/// Publishing refuses labels out of bounds and an event over the size limit, each with its
/// code, and queues nothing for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_refuses_bad_labels_and_oversized_events() {
    let hub = HubProcess::start(Backend::Memory, &[]).await;
    for labels in [json!({"": "empty key"}), json!({"k": "v".repeat(257)})] {
        let refused = hub
            .call(
                "POST",
                "/v1/events",
                Some(KEY_A),
                Some(json!({"topic": "a.b.c", "data": {}, "labels": labels})),
            )
            .await;
        assert_eq!(
            (refused.status, refused.body["code"].as_str()),
            (400, Some("invalid_labels")),
            "{labels}"
        );
    }
    let huge = json!({"topic": "a.b.c", "data": {"blob": "x".repeat(300 * 1024)}});
    let refused = hub
        .call("POST", "/v1/events", Some(KEY_A), Some(huge))
        .await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    // A sentinel through the same pipeline: once it is fanned out, a refused event queued
    // before it would have been too.
    let sentinel = publish(&hub, KEY_A, json!({"topic": "a.b.c", "data": {}})).await;
    fanned_out(&hub, sentinel["id"].as_str().unwrap()).await;
    assert_eq!(
        hub.log().matches("\"fanned out\"").count(),
        1,
        "only the sentinel was queued"
    );
}
