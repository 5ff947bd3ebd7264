//! The defects of the security review, one named scenario each, on every backend the behaviour
//! exists on: driven through the API and a receiver where they can be, through an in-process hub
//! with ports that fail on command where the trigger is a failure.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use hub::auth::Caller;
use hub::model::{DeliveryTask, Event, TaskPayload, queue_json};
use hub::ports::{ClaimOutcome, KeyClaim, MAX_HIDE, OutgoingMessage, Queue, Store};
use hub::retry::RetrySchedule;
use hub::runtime::consume::{QueueRole, consume};
use hub::runtime::lambda::sqs_handler;
use hub::service::events::PublishRequest;
use hub::{HubError, Settings};
use hub_tests::*;
use serde_json::{Value, json};

const DAY: Duration = Duration::from_secs(86_400);

fn acme() -> Caller {
    Caller::of_account("acme", "acme:test", None)
}

fn keyed(key: &str) -> PublishRequest {
    PublishRequest {
        topic: "door.opened".into(),
        data: json!({"door": 1}),
        id: Some(key.into()),
        labels: BTreeMap::new(),
        sensitive: BTreeMap::new(),
        owner: None,
        broadcast: false,
        trace: None,
    }
}

fn event(id: &str, account: &str, topic: &str, now: i64) -> Event {
    Event {
        id: id.into(),
        account: account.into(),
        topic: hub::topic::Topic::parse(topic).unwrap(),
        timestamp_ms: now,
        data: json!({"n": 1}),
        labels: BTreeMap::new(),
        sensitive: BTreeMap::new(),
        owner: None,
        broadcast: false,
        trace: None,
    }
}

/// `n` levels of nested arrays around a number.
fn nested(n: usize) -> Value {
    (0..n).fold(json!(1), |inner, _| json!([inner]))
}

/// A receiver's check of `X-Logi-Verify`: base64 HMAC-SHA256 of the raw body with the
/// secret's UTF-8 bytes.
fn logi_verifies(secret: &str, received: &Received) -> bool {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&received.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    received.header("x-logi-verify") == expected
}

async fn status_of(hub: &HubProcess, id: &str) -> (u16, Value) {
    let got = hub
        .call("GET", &format!("/v1/subscriptions/{id}"), Some(KEY_A), None)
        .await;
    (got.status, got.body)
}

mod scenarios {
    use super::*;

    /// 1. A `202` means queued: a failed send lets the retry through, a claim still being
    ///    queued answers `409 in_progress` with `Retry-After`, an abandoned one is taken over.
    pub async fn keyed_publish_means_queued(backend: Backend) {
        let p = InProcess::start(backend, Settings::default()).await;
        p.events.fail_send.store(1, Ordering::SeqCst);
        let failed = p.hub.publish(&acme(), keyed("k1")).await.unwrap_err();
        assert_eq!(failed.status(), 503);
        let first = p.hub.publish(&acme(), keyed("k1")).await.unwrap();
        assert!(!first.duplicate, "nothing was queued under k1 before");
        let repeat = p.hub.publish(&acme(), keyed("k1")).await.unwrap();
        assert!(repeat.duplicate);
        assert_eq!(repeat.id, first.id, "a repeat names the queued event");
        assert_eq!(p.events.bodies().len(), 1);

        // A publisher that died between its claim and its send.
        let now = p.hub.now_ms();
        let claim = KeyClaim {
            account: "acme".into(),
            key: "k2".into(),
            event_id: "evt_abandoned".into(),
            now_ms: now,
            claim_until_ms: now + 30_000,
            window_until_ms: now + DAY.as_millis() as i64,
        };
        assert_eq!(
            p.store.inner().claim_event_key(&claim).await.unwrap(),
            ClaimOutcome::Claimed
        );
        let busy = p.hub.publish(&acme(), keyed("k2")).await.unwrap_err();
        assert_eq!((busy.status(), busy.code()), (409, "in_progress"));
        assert!(
            matches!(busy, HubError::InProgress { retry_after_secs } if (1..=30).contains(&retry_after_secs)),
            "{busy:?}"
        );
        p.clock.advance(31_000);
        let taken = p.hub.publish(&acme(), keyed("k2")).await.unwrap();
        assert!(!taken.duplicate);
        assert_ne!(taken.id, "evt_abandoned");
        assert_eq!(p.events.bodies().len(), 2, "both keys queued exactly once");
    }

    /// 2. Fan-out sends page by page in batches of at most `FANOUT_BATCH` (past two store pages
    ///    of 50 entries), deduplicates a subscription matched twice, and a failing event is reported
    ///    alone.
    pub async fn fan_out_streams_and_isolates_failures(backend: Backend) {
        let settings = Settings {
            fanout_page: 50,
            ..Settings::default()
        };
        let p = InProcess::start(backend, settings).await;
        let now = p.hub.now_ms();
        const SUBSCRIBERS: usize = 130;
        for i in 0..SUBSCRIBERS {
            let topics: &[&str] = if i < 5 { &["*", "door.opened"] } else { &["*"] };
            let sub = active_subscription(
                i,
                "acme",
                topics,
                &format!("https://hooks.example.com/{i}"),
                now,
                DAY.as_millis() as i64,
            );
            p.store.save(&sub, None).await.unwrap();
        }
        let queued = p
            .hub
            .fan_out(&event("evt_fan", "acme", "door.opened", now))
            .await
            .unwrap();
        assert_eq!(queued, SUBSCRIBERS);
        let sizes = p.deliveries.send_sizes();
        let most = hub::service::events::FANOUT_BATCH;
        assert!(sizes.iter().all(|n| (1..=most).contains(n)), "{sizes:?}");
        assert!(sizes.len() >= 2, "a send per full batch: {sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), SUBSCRIBERS);
        let mut ids: Vec<String> = p
            .deliveries
            .bodies()
            .iter()
            .map(|b| b["subscription_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), SUBSCRIBERS, "one task per subscription");

        p.store
            .poisoned_accounts
            .lock()
            .unwrap()
            .push("poison".into());
        let record = |id: &str, event: &Event| {
            json!({"messageId": id, "receiptHandle": id, "body": queue_json(event),
                   "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                   "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:1:events",
                   "awsRegion": "us-east-1"})
        };
        let batch: SqsEvent = serde_json::from_value(json!({"Records": [
            record("good", &event("evt_good", "acme", "door.opened", now)),
            record("bad", &event("evt_bad", "poison", "door.opened", now)),
        ]}))
        .unwrap();
        let answer = sqs_handler(&p.hub, QueueRole::Events, batch).await;
        let failed: Vec<&str> = answer
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["bad"], "only the failing event goes round again");
    }

    /// 2. The subscription limit per account: a clear `409` once reached; refreshes still work.
    pub async fn subscription_limit_per_account(backend: Backend) {
        let hub = HubProcess::start(backend, &["--max-subscriptions-per-account", "3"]).await;
        let receiver = TestReceiver::start().await;
        let mut ids = Vec::new();
        for i in 0..3 {
            let created =
                subscribe_pending(&hub, &receiver, KEY_A, &format!("/s{i}"), json!({})).await;
            ids.push(created["id"].as_str().unwrap().to_string());
        }
        let body = json!({"callback_url": receiver.url("/s3"), "topics": ["door.opened"]});
        let refused = hub
            .call("POST", "/v1/subscriptions", Some(KEY_A), Some(body.clone()))
            .await;
        assert_eq!(refused.status, 409, "{:?}", refused.body);
        assert_eq!(refused.body["code"], "subscription_limit_reached");
        let refresh = json!({"callback_url": receiver.url("/s0"), "topics": ["door.opened"]});
        let refreshed = hub
            .call("POST", "/v1/subscriptions", Some(KEY_A), Some(refresh))
            .await;
        assert_eq!(refreshed.status, 200, "a refresh is not a new subscription");
        let other = hub
            .call("POST", "/v1/subscriptions", Some(KEY_B), Some(body.clone()))
            .await;
        assert_eq!(other.status, 201, "the limit is per account");
        let deleted = hub
            .call(
                "DELETE",
                &format!("/v1/subscriptions/{}", ids[0]),
                Some(KEY_A),
                None,
            )
            .await;
        assert_eq!(deleted.status, 204);
        let now_fits = hub
            .call("POST", "/v1/subscriptions", Some(KEY_A), Some(body))
            .await;
        assert_eq!(now_fits.status, 201);
    }

    /// 3. What the pipeline cannot carry is refused at publish; whatever is accepted arrives.
    pub async fn publish_refuses_what_cannot_be_delivered(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let created = subscribe_confirmed(&hub, &receiver, KEY_A, "/hook", json!({})).await;
        let secret = created["secret"].as_str().unwrap().to_string();
        let topic = "door.request.allowed";

        let deep = hub
            .call(
                "POST",
                "/v1/events",
                Some(KEY_A),
                Some(json!({"topic": topic, "data": nested(125)})),
            )
            .await;
        assert_eq!(deep.status, 400, "{:?}", deep.body);
        assert_eq!(deep.body["code"], "invalid_data");
        let mut accepted = vec![(
            publish(&hub, KEY_A, json!({"topic": topic, "data": nested(64)})).await["id"].clone(),
            nested(64),
        )];

        // Data near its limit, then labels until the wrapped task no longer fits: every
        // accepted one is delivered, then the first refused is a 413.
        let blob = "x".repeat(240 * 1024 - 100);
        let mut refused = None;
        for count in [0, 10, 20, 30, 40, 50] {
            let labels: BTreeMap<String, String> = (0..count)
                .map(|i| (format!("{i:0>128}"), "v".repeat(256)))
                .collect();
            let answer = hub
                .call(
                    "POST",
                    "/v1/events",
                    Some(KEY_A),
                    Some(json!({"topic": topic, "data": {"blob": blob}, "labels": labels})),
                )
                .await;
            match answer.status {
                202 => accepted.push((answer.body["id"].clone(), json!({"blob": blob}))),
                413 => {
                    assert_eq!(answer.body["code"], "payload_too_large");
                    refused = Some(count);
                    break;
                }
                other => panic!("{other}: {:?}", answer.body),
            }
        }
        assert!(refused.is_some(), "50 long labels on 240 KiB cannot fit");
        assert!(accepted.len() >= 2, "the bare 240 KiB event fits");

        // Characters SQS refuses in a message body still travel (escaped on the queue).
        let odd = json!({"s": "a\u{ffff}b\u{fffe}c"});
        accepted.push((
            publish(&hub, KEY_A, json!({"topic": topic, "data": odd})).await["id"].clone(),
            odd,
        ));

        let arrived = receiver.wait_for(1 + accepted.len(), WAIT).await;
        for (id, data) in &accepted {
            let delivery = arrived
                .iter()
                .find(|r| r.header("webhook-id") == id.as_str().unwrap())
                .unwrap_or_else(|| panic!("{id} accepted but not delivered"));
            assert!(verify_standard(&secret, delivery));
            assert_eq!(&delivery.json()["data"], data);
        }
    }

    /// 4. A verdict about an attempt never overwrites a change made while it ran: no disable
    ///    of a subscription that moved to a new callback, no `410` removal of it.
    pub async fn late_failures_respect_changes_made_during_the_attempt(backend: Backend) {
        let hub = HubProcess::start(
            backend,
            &["--disable-after", "0s", "--retry-schedule", "1s"],
        )
        .await;
        let slow = |status: u16| {
            move |r: &Received, _: usize| {
                if r.json()["type"] == "Confirmation" {
                    Reply::status(200)
                } else {
                    Reply {
                        delay: Duration::from_millis(1500),
                        ..Reply::status(status)
                    }
                }
            }
        };
        for (status, verdict_line) in [
            (
                500,
                "not disabled: the subscription changed during the attempt",
            ),
            (
                410,
                "410 Gone from a callback the subscription changed during the attempt",
            ),
        ] {
            let old = TestReceiver::scripted(slow(status)).await;
            let new = TestReceiver::start().await;
            let created = subscribe_confirmed(&hub, &old, KEY_A, "/old", json!({})).await;
            let id = created["id"].as_str().unwrap().to_string();
            publish(
                &hub,
                KEY_A,
                json!({"topic": "door.request.allowed", "data": {}}),
            )
            .await;
            old.wait_for_match(WAIT, |r| r.json()["type"] != "Confirmation")
                .await;
            let moved = hub
                .call(
                    "PATCH",
                    &format!("/v1/subscriptions/{id}"),
                    Some(KEY_A),
                    Some(json!({"callback_url": new.url("/new")})),
                )
                .await;
            assert_eq!(moved.status, 200);
            assert_eq!(moved.body["status"], "pending");
            hub.wait_for_log(verdict_line).await;
            let (code, body) = status_of(&hub, &id).await;
            assert_eq!(code, 200, "{status}: the moved subscription was removed");
            assert_eq!(body["status"], "pending", "{status}: {body}");
            assert_eq!(body["callback_url"], new.url("/new").as_str());
            let resumed = hub
                .call(
                    "PATCH",
                    &format!("/v1/subscriptions/{id}"),
                    Some(KEY_A),
                    Some(json!({"active": true})),
                )
                .await;
            assert_eq!(
                resumed.body["status"], "pending",
                "the new callback is confirmed first"
            );
            new.wait_for_match(WAIT, |r| r.json()["type"] == "Confirmation")
                .await;
        }
    }

    /// 5. The expiry notice is queued before it is marked sent: a failed queue leaves it due.
    pub async fn expiry_notice_is_queued_before_it_is_marked(backend: Backend) {
        let p = InProcess::start(backend, Settings::default()).await;
        let now = p.hub.now_ms();
        let sub = active_subscription(
            1,
            "acme",
            &["door.*"],
            "https://h.example.com/x",
            now,
            600_000,
        );
        p.store.save(&sub, None).await.unwrap();
        p.clock.advance(545_000); // the notice is due 60 s before the end
        p.deliveries.fail_send.store(1, Ordering::SeqCst);
        assert!(p.hub.sweep().await.is_err(), "the queue failed");
        let stored = p.store.get(&sub.id).await.unwrap().unwrap();
        assert!(
            !stored.expiry_notice_sent,
            "not marked: it was never queued"
        );
        assert_eq!(p.hub.sweep().await.unwrap().notices, 1);
        let notices: Vec<Value> = p
            .deliveries
            .bodies()
            .into_iter()
            .filter(|b| b["payload"]["kind"] == "notice")
            .collect();
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0]["payload"]["event"]["type"], Value::Null);
        assert_eq!(
            notices[0]["payload"]["event"]["topic"],
            "subscription.expiring"
        );
        assert_eq!(p.hub.sweep().await.unwrap().notices, 0, "once per lease");
    }

    /// 6. Receives that made no attempt do not use up attempts: with a store that fails once,
    ///    a two-attempt schedule still makes two real attempts before the dead letter.
    pub async fn only_real_attempts_count(backend: Backend) {
        let receiver = TestReceiver::scripted(|_, _| Reply::status(500)).await;
        let settings = Settings {
            retry: RetrySchedule::parse("1s").unwrap().with_jitter(0.0),
            ..Settings::default()
        };
        let p = InProcess::start(backend, settings).await;
        let now = p.hub.now_ms();
        let sub = active_subscription(1, "acme", &["door.*"], &receiver.url("/r"), now, 3_600_000);
        p.store.save(&sub, None).await.unwrap();
        p.hub
            .enqueue_delivery(&DeliveryTask::new(
                sub.id.clone(),
                TaskPayload::Event {
                    event: event("evt_real", "acme", "door.opened", now),
                },
            ))
            .await
            .unwrap();
        p.store.fail_get.store(1, Ordering::SeqCst);
        p.drain(QueueRole::Deliveries, Duration::from_secs(4)).await;
        assert_eq!(
            receiver.received().len(),
            2,
            "both configured attempts were made"
        );
        let dead = p.dead_letters().await;
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0]["attempts_made"], 2);
        assert_eq!(dead[0]["payload"]["event"]["id"], "evt_real");
    }

    /// 7. A 12 h delay (plus jitter) is held, not refused: the retry is sent with SQS's longest
    ///    delay and hidden again on arrival for at most the 12 h a receive allows.
    pub async fn long_delays_are_held_not_refused(backend: Backend) {
        let receiver = TestReceiver::scripted(|_, _| Reply::status(500)).await;
        let settings = Settings {
            retry: RetrySchedule::parse("12h").unwrap(),
            ..Settings::default()
        };
        let p = InProcess::start(backend, settings).await;
        let now = p.hub.now_ms();
        let sub = active_subscription(
            1,
            "acme",
            &["door.*"],
            &receiver.url("/r"),
            now,
            7 * 86_400_000,
        );
        p.store.save(&sub, None).await.unwrap();
        let task = DeliveryTask::new(
            sub.id.clone(),
            TaskPayload::Event {
                event: event("evt_long", "acme", "door.opened", now),
            },
        );
        p.hub.enqueue_delivery(&task).await.unwrap();
        let first = p
            .deliveries
            .receive(1, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(consume(&p.hub, QueueRole::Deliveries, &first[0]).await);
        p.deliveries.ack(&first[0].receipt).await.unwrap();
        let retry = p.deliveries.sent.lock().unwrap().back().unwrap()[0].clone();
        assert_eq!(
            retry.delay,
            Duration::from_secs(900),
            "SQS's longest send delay"
        );
        let body: Value = serde_json::from_str(&retry.body).unwrap();
        assert_eq!(body["attempts_made"], 1);
        let not_before = body["not_before_ms"].as_i64().unwrap();
        assert!(
            not_before >= now + (12 * 3_600_000) * 8 / 10,
            "{}",
            not_before - now
        );

        // Its early arrival: hidden again, for no longer than one receive may hide it.
        let early = DeliveryTask {
            attempts_made: 1,
            not_before_ms: Some(p.hub.now_ms() + 14 * 3_600_000),
            ..task
        };
        p.deliveries
            .send(vec![OutgoingMessage {
                body: queue_json(&early),
                delay: Duration::ZERO,
                group: None,
            }])
            .await
            .unwrap();
        let arrived = p
            .deliveries
            .receive(1, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(!consume(&p.hub, QueueRole::Deliveries, &arrived[0]).await);
        assert_eq!(*p.deliveries.postponed.lock().unwrap(), [MAX_HIDE]);
        assert!(MAX_HIDE <= Duration::from_secs(12 * 3600));
        assert_eq!(receiver.received().len(), 1, "no attempt before its time");
        // The adapter clamps what no queue would take.
        p.deliveries
            .postpone(&arrived[0].receipt, Duration::from_secs(13 * 3600))
            .await
            .unwrap();
    }

    /// 8. A topic-limited key acts only on subscriptions its scopes cover entirely.
    pub async fn topic_scopes_hold_on_every_subscription(backend: Backend) {
        let hub = HubProcess::start(
            backend,
            &[
                "--api-key",
                "key-door=acme:webhooks:subscribe,webhooks:read,topic:door.*",
            ],
        )
        .await;
        let receiver = TestReceiver::start().await;
        let billing = subscribe_pending(
            &hub,
            &receiver,
            KEY_A,
            "/billing",
            json!({"topics": ["billing.*", "door.*"]}),
        )
        .await;
        let id = billing["id"].as_str().unwrap();
        let door = "key-door";
        for (method, path, body) in [
            ("GET", format!("/v1/subscriptions/{id}"), None),
            (
                "PATCH",
                format!("/v1/subscriptions/{id}"),
                Some(json!({"callback_url": receiver.url("/stolen")})),
            ),
            ("DELETE", format!("/v1/subscriptions/{id}"), None),
            (
                "POST",
                format!("/v1/subscriptions/{id}/secret/rotate"),
                None,
            ),
            ("GET", format!("/v1/subscriptions/{id}/secret"), None),
            ("GET", format!("/v1/subscriptions/{id}/deliveries"), None),
        ] {
            let answer = hub.call(method, &path, Some(door), body).await;
            assert_eq!(answer.status, 403, "{method} {path}: {:?}", answer.body);
            assert_eq!(answer.body["code"], "insufficient_scope");
        }
        let own = subscribe_pending(
            &hub,
            &receiver,
            door,
            "/door",
            json!({"topics": ["door.*"]}),
        )
        .await;
        let listed = hub.call("GET", "/v1/subscriptions", Some(door), None).await;
        let ids: Vec<&str> = listed.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [own["id"].as_str().unwrap()]);
        let (code, body) = status_of(&hub, id).await;
        assert_eq!(code, 200);
        assert_eq!(body["callback_url"], receiver.url("/billing").as_str());
    }

    /// 9. The signing secret takes `webhooks:subscribe`, not `webhooks:read`.
    pub async fn the_secret_needs_the_subscribe_scope(backend: Backend) {
        let hub = HubProcess::start(
            backend,
            &[
                "--api-key",
                "key-read=acme:webhooks:read",
                "--api-key",
                "key-sub=acme:webhooks:subscribe",
            ],
        )
        .await;
        let receiver = TestReceiver::start().await;
        let created = subscribe_pending(&hub, &receiver, KEY_A, "/s", json!({})).await;
        let id = created["id"].as_str().unwrap();
        let path = format!("/v1/subscriptions/{id}/secret");
        let read = hub.call("GET", &path, Some("key-read"), None).await;
        assert_eq!(
            (read.status, read.body["code"].as_str()),
            (403, Some("insufficient_scope"))
        );
        assert_eq!(
            hub.call(
                "GET",
                &format!("/v1/subscriptions/{id}"),
                Some("key-read"),
                None
            )
            .await
            .status,
            200
        );
        let sub = hub.call("GET", &path, Some("key-sub"), None).await;
        assert_eq!(sub.status, 200);
        assert_eq!(sub.body["secret"], created["secret"]);
    }

    /// 10. The test hooks need a key and refuse an overflowing clock jump.
    pub async fn test_hooks_need_a_key(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        for path in [
            "/_test/clock/advance?ms=1",
            "/_test/sweep",
            "/_test/dead-letters",
        ] {
            let answer = hub.call("POST", path, None, None).await;
            assert_eq!(answer.status, 401, "{path}");
        }
        for ms in ["9223372036854775807", "-9223372036854775808", "x"] {
            let answer = hub
                .call(
                    "POST",
                    &format!("/_test/clock/advance?ms={ms}"),
                    Some(KEY_A),
                    None,
                )
                .await;
            assert_eq!(answer.status, 400, "{ms}: {:?}", answer.body);
            assert_eq!(answer.body["code"], "invalid_ms");
        }
        hub.advance_clock(Duration::from_secs(1)).await;
    }

    /// 12. Sensitive array elements are resolved against the original event: the named
    ///     elements go, the others stay.
    pub async fn array_redaction_removes_the_named_elements(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let created = subscribe_confirmed(&hub, &receiver, KEY_A, "/hook", json!({})).await;
        let list: Vec<usize> = (0..12).collect();
        publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed",
                   "data": {"pins": ["p0", "p1", "p2"], "list": list},
                   "sensitive": {"/data/pins/0": 1, "/data/pins/1": 1, "/data/list/10": 1, "/data/list/2": 1}}),
        )
        .await;
        let delivery = receiver
            .wait_for_match(WAIT, |r| r.json()["type"] == "door.request.allowed")
            .await;
        assert!(verify_standard(
            created["secret"].as_str().unwrap(),
            &delivery
        ));
        assert_eq!(
            delivery.json()["data"],
            json!({"pins": ["p2"], "list": [0, 1, 3, 4, 5, 6, 7, 8, 9, 11]})
        );
    }

    /// 13. Listing and owner-wide removal walk past DynamoDB's 1 MB query page.
    pub async fn listing_walks_past_the_store_page(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        const COUNT: usize = 95;
        let topics: Vec<String> = (0..10)
            .map(|t| format!("t{t}.{}", "x".repeat(120)))
            .collect();
        let labels: BTreeMap<String, Vec<String>> = (0..3)
            .map(|k| {
                (
                    format!("k{k}"),
                    (0..5).map(|v| format!("{v}{}", "v".repeat(249))).collect(),
                )
            })
            .collect();
        let bodies: Vec<Value> = (0..COUNT)
            .map(|i| {
                json!({
                "callback_url": receiver.url(&format!("/big/{i}")), "topics": topics,
                "user_data": "u".repeat(1000), "labels": labels, "name": "n".repeat(70),
                "receiver_auth": {"type": "header", "name": "x-auth", "value": "a".repeat(4000)}})
            })
            .collect();
        // One at a time: moto's DynamoDB is not safe under concurrent writes.
        for chunk in bodies.chunks(1) {
            let created = futures::future::join_all(chunk.iter().map(|body| {
                hub.call("POST", "/v1/subscriptions", Some(KEY_A), Some(body.clone()))
            }))
            .await;
            for answer in created {
                assert_eq!(answer.status, 201, "{:?}", answer.body);
            }
        }
        let page = hub
            .call("GET", "/v1/subscriptions?limit=100", Some(KEY_A), None)
            .await;
        assert_eq!(page.body["data"].as_array().unwrap().len(), COUNT);
        assert_eq!(page.body["next_cursor"], Value::Null);
        let mut seen = 0;
        let mut cursor = String::new();
        loop {
            let page = hub
                .call(
                    "GET",
                    &format!("/v1/subscriptions?limit=40{cursor}"),
                    Some(KEY_A),
                    None,
                )
                .await;
            seen += page.body["data"].as_array().unwrap().len();
            match page.body["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => break,
            }
        }
        assert_eq!(seen, COUNT);
        let removed = hub
            .call("DELETE", "/v1/subscriptions?owner=me", Some(KEY_A), None)
            .await;
        assert_eq!(removed.body["deleted"], COUNT);
    }

    /// 14 and 20. Label filters and receiver credentials are bounded; hop-by-hop and framing
    /// headers are refused.
    pub async fn unbounded_fields_are_refused(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let many_keys: BTreeMap<String, Vec<&str>> =
            (0..21).map(|k| (format!("k{k}"), vec!["v"])).collect();
        let big: BTreeMap<String, Vec<String>> = (0..20)
            .map(|k| {
                (
                    format!("k{k}"),
                    (0..100).map(|v| format!("{v:05}")).collect(),
                )
            })
            .collect();
        let cases = [
            ("labels", json!(many_keys), "invalid_labels"),
            ("labels", json!({"k": ["v".repeat(257)]}), "invalid_labels"),
            ("labels", json!(big), "invalid_labels"),
            (
                "receiver_auth",
                json!({"type": "header", "name": "x-a", "value": "v".repeat(4097)}),
                "invalid_receiver_auth",
            ),
            (
                "receiver_auth",
                json!({"type": "basic", "user": "u", "password": "p".repeat(4097)}),
                "invalid_receiver_auth",
            ),
            (
                "receiver_auth",
                json!({"type": "bearer", "token": "t".repeat(4097)}),
                "invalid_receiver_auth",
            ),
        ];
        let hop_by_hop = [
            "transfer-encoding",
            "connection",
            "expect",
            "te",
            "upgrade",
            "keep-alive",
        ]
        .map(|name| {
            (
                "receiver_auth",
                json!({"type": "header", "name": name, "value": "x"}),
                "invalid_receiver_auth",
            )
        });
        for (field, value, code) in cases.into_iter().chain(hop_by_hop) {
            let mut body = json!({"callback_url": receiver.url("/b"), "topics": ["door.*"]});
            body[field] = value.clone();
            let answer = hub
                .call("POST", "/v1/subscriptions", Some(KEY_A), Some(body))
                .await;
            assert_eq!(answer.status, 400, "{field} {value}");
            assert_eq!(answer.body["code"], code, "{field} {value}");
        }
        let fits: BTreeMap<String, Vec<String>> = (0..20)
            .map(|k| (format!("k{k}"), vec!["v".repeat(100)]))
            .collect();
        subscribe_pending(&hub, &receiver, KEY_A, "/fits", json!({"labels": fits})).await;
    }

    /// 15. Two subscribes of one callback make one subscription: the one that looked before
    ///     the other saved loses the conditional write of the callback index and refreshes the
    ///     winner's subscription instead.
    pub async fn concurrent_subscribes_make_one_subscription(backend: Backend) {
        let p = InProcess::start(backend, Settings::default()).await;
        let request = || hub::service::subscriptions::SubscribeRequest {
            callback_url: "http://127.0.0.1:9/race".into(),
            topic: Some("door.*".into()),
            ..Default::default()
        };
        let first = p.hub.subscribe(&acme(), request()).await.unwrap();
        assert!(first.created);
        p.store.blind_finds.store(1, Ordering::SeqCst);
        let second = p.hub.subscribe(&acme(), request()).await.unwrap();
        assert_eq!(
            p.store.blind_finds.load(Ordering::SeqCst),
            0,
            "the race was staged"
        );
        assert!(!second.created, "the loser refreshes the winner");
        assert_eq!(second.subscription.id, first.subscription.id);
        assert_eq!(p.store.count_subscriptions("acme").await.unwrap(), 1);
    }

    /// 15b. A new subscription whose confirmation could not be queued is taken back: the
    ///      caller's retry makes it whole, with its secret shown.
    pub async fn a_subscribe_whose_confirmation_was_not_queued_keeps_nothing(backend: Backend) {
        let p = InProcess::start(backend, Settings::default()).await;
        let request = || hub::service::subscriptions::SubscribeRequest {
            callback_url: "http://127.0.0.1:9/unqueued".into(),
            topic: Some("door.*".into()),
            ..Default::default()
        };
        p.deliveries.fail_send.store(1, Ordering::SeqCst);
        assert!(p.hub.subscribe(&acme(), request()).await.is_err());
        assert_eq!(p.store.count_subscriptions("acme").await.unwrap(), 0);
        let retried = p.hub.subscribe(&acme(), request()).await.unwrap();
        assert!(retried.created, "made anew");
        assert!(retried.secret.is_some(), "its secret is shown");
        assert_eq!(p.store.count_subscriptions("acme").await.unwrap(), 1);
        let confirmations = p
            .deliveries
            .bodies()
            .into_iter()
            .filter(|b| b["subscription_id"] == retried.subscription.id.as_str())
            .count();
        assert_eq!(confirmations, 1, "its confirmation is queued");
    }

    /// 16. A legacy single-signature receiver keeps verifying with the secret it has through a
    ///     rotation, a second rotation keeps the original, and the overlap's end switches it.
    pub async fn legacy_receivers_survive_rotation(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let original = "original-secret-of-the-receiver";
        let created = subscribe_confirmed(
            &hub,
            &receiver,
            KEY_A,
            "/logi",
            json!({"signature_scheme": "logi", "client_secret": original}),
        )
        .await;
        let id = created["id"].as_str().unwrap();
        async fn rotate(hub: &HubProcess, id: &str, secret: &str) {
            let answer = hub
                .call(
                    "POST",
                    &format!("/v1/subscriptions/{id}/secret/rotate"),
                    Some(KEY_A),
                    Some(json!({"secret": secret})),
                )
                .await;
            assert_eq!(answer.status, 200, "{:?}", answer.body);
        }
        async fn delivered(hub: &HubProcess, receiver: &TestReceiver, n: usize) -> Received {
            publish(
                hub,
                KEY_A,
                json!({"topic": "door.request.allowed", "data": {"n": n}}),
            )
            .await;
            receiver
                .wait_for_match(WAIT, |r| r.json()["data"]["n"] == n)
                .await
        }
        rotate(&hub, id, "second-secret-of-the-receiver").await;
        let one = delivered(&hub, &receiver, 1).await;
        assert!(
            logi_verifies(original, &one),
            "the legacy header keeps the old secret"
        );
        assert!(
            verify_standard(original, &one)
                && verify_standard("second-secret-of-the-receiver", &one)
        );
        rotate(&hub, id, "third-secret-of-the-receiver").await;
        let two = delivered(&hub, &receiver, 2).await;
        assert!(
            logi_verifies(original, &two),
            "a second rotation keeps the original"
        );
        for secret in [
            original,
            "second-secret-of-the-receiver",
            "third-secret-of-the-receiver",
        ] {
            assert!(verify_standard(secret, &two), "{secret}");
        }
        hub.advance_clock(DAY + Duration::from_secs(60)).await;
        let three = delivered(&hub, &receiver, 3).await;
        assert!(logi_verifies("third-secret-of-the-receiver", &three));
        assert!(!verify_standard(original, &three));
    }

    /// 17. A producer key reused after its window is a new event; accounts whose names hold `#`
    ///     never share keys.
    pub async fn producer_keys_and_account_names(backend: Backend) {
        let hub = HubProcess::start(
            backend,
            &["--api-key", "key-x=x", "--api-key", "key-xy=x#y"],
        )
        .await;
        let receiver = TestReceiver::start().await;
        subscribe_confirmed(&hub, &receiver, "key-x", "/x", json!({})).await;
        subscribe_confirmed(&hub, &receiver, "key-xy", "/xy", json!({})).await;
        let topic = "door.request.allowed";
        let a = publish(
            &hub,
            "key-xy",
            json!({"topic": topic, "id": "z", "data": {}}),
        )
        .await;
        let b = publish(
            &hub,
            "key-x",
            json!({"topic": topic, "id": "y#z", "data": {}}),
        )
        .await;
        assert_eq!(
            (a["duplicate"].as_bool(), b["duplicate"].as_bool()),
            (Some(false), Some(false))
        );
        let first = publish(
            &hub,
            "key-x",
            json!({"topic": topic, "id": "k", "data": {}}),
        )
        .await;
        let repeat = publish(
            &hub,
            "key-x",
            json!({"topic": topic, "id": "k", "data": {}}),
        )
        .await;
        assert_eq!(repeat["duplicate"], true);
        assert_eq!(repeat["id"], first["id"]);
        hub.advance_clock(DAY + Duration::from_secs(1)).await;
        let later = publish(
            &hub,
            "key-x",
            json!({"topic": topic, "id": "k", "data": {}}),
        )
        .await;
        assert_eq!(later["duplicate"], false);
        assert_ne!(
            later["id"], first["id"],
            "a new event gets a new webhook-id"
        );
        for (path, id) in [("/xy", &a), ("/x", &b), ("/x", &first), ("/x", &later)] {
            let id = id["id"].as_str().unwrap();
            receiver
                .wait_for_match(WAIT, |r| r.path == path && r.header("webhook-id") == id)
                .await;
        }
    }

    /// 21. A receiver's `Retry-After` is a floor: never retried sooner than asked.
    pub async fn retry_after_is_a_floor(backend: Backend) {
        let hub = HubProcess::start(backend, &["--retry-schedule", "1s,1s"]).await;
        // The confirmation is request 0; the event's first attempt, request 1, is asked to wait.
        let receiver = TestReceiver::scripted(|_, index| {
            if index == 1 {
                Reply {
                    headers: vec![("retry-after".into(), "3".into())],
                    ..Reply::status(429)
                }
            } else {
                Reply::status(200)
            }
        })
        .await;
        let created = subscribe_confirmed(&hub, &receiver, KEY_A, "/ra", json!({})).await;
        let id = created["id"].as_str().unwrap().to_string();
        publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {}}),
        )
        .await;
        let arrived = receiver.wait_for(3, WAIT).await;
        let gap = arrived[2].at - arrived[1].at;
        assert!(gap >= Duration::from_secs(3), "retried after {gap:?}");
        // The receiver sees the attempt before the hub has recorded it: wait for the record.
        let (times, log) = eventually(WAIT, "both attempts of the event logged", || async {
            let log = hub
                .call(
                    "GET",
                    &format!("/v1/subscriptions/{id}/deliveries"),
                    Some(KEY_A),
                    None,
                )
                .await;
            let times: Vec<i64> = log.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["message_id"].as_str().unwrap().starts_with("evt_"))
                .map(|a| {
                    time::OffsetDateTime::parse(
                        a["timestamp"].as_str().unwrap(),
                        &time::format_description::well_known::Rfc3339,
                    )
                    .unwrap()
                    .unix_timestamp_nanos() as i64
                        / 1_000_000
                })
                .collect();
            (times.len() >= 2).then_some((times, log))
        })
        .await;
        assert_eq!(times.len(), 2, "{}", log.body);
        assert!(times[0] - times[1] >= 3000, "recorded attempts {times:?}");
    }

    /// 15. The same race for real: eight subscribes of one callback at once make one
    ///     subscription. On memory and SQLite only: moto's DynamoDB checks a transaction's
    ///     conditions and applies its writes without a lock while its server answers requests on
    ///     threads, so on moto four of eight creates can pass the callback index's condition
    ///     (seen: `[201, 201, 201, 201, 409, …]`). DynamoDB's conditional write is exercised by
    ///     the staged race above, on every backend.
    pub async fn eight_subscribes_of_one_callback_at_once_make_one(backend: Backend) {
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        let body = json!({"callback_url": receiver.url("/race"), "topics": ["door.*"]});
        let answers = futures::future::join_all(
            (0..8).map(|_| hub.call("POST", "/v1/subscriptions", Some(KEY_A), Some(body.clone()))),
        )
        .await;
        let mut statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
        statuses.sort();
        assert_eq!(
            statuses,
            [200, 200, 200, 200, 200, 200, 200, 201],
            "{answers:?}"
        );
        let ids: std::collections::BTreeSet<&str> = answers
            .iter()
            .map(|a| a.body["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 1, "one subscription");
        let listed = hub
            .call("GET", "/v1/subscriptions", Some(KEY_A), None)
            .await;
        assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
    }
}

hub_tests::on_every_backend!(
    keyed_publish_means_queued,
    fan_out_streams_and_isolates_failures,
    subscription_limit_per_account,
    publish_refuses_what_cannot_be_delivered,
    late_failures_respect_changes_made_during_the_attempt,
    expiry_notice_is_queued_before_it_is_marked,
    only_real_attempts_count,
    long_delays_are_held_not_refused,
    topic_scopes_hold_on_every_subscription,
    the_secret_needs_the_subscribe_scope,
    test_hooks_need_a_key,
    array_redaction_removes_the_named_elements,
    listing_walks_past_the_store_page,
    unbounded_fields_are_refused,
    concurrent_subscribes_make_one_subscription,
    a_subscribe_whose_confirmation_was_not_queued_keeps_nothing,
    legacy_receivers_survive_rotation,
    producer_keys_and_account_names,
    retry_after_is_a_floor,
);

/// The real race on the backends whose stores isolate a transaction (see its scenario).
mod race {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_memory() {
        scenarios::eight_subscribes_of_one_callback_at_once_make_one(Backend::Memory).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_sqlite() {
        scenarios::eight_subscribes_of_one_callback_at_once_make_one(Backend::Sqlite).await
    }
}

/// 10. `--test-control` never listens beyond loopback.
#[test]
fn test_hooks_refuse_a_public_listen_address() {
    let out = std::process::Command::new(binary("webhook-hub"))
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--test-control",
            "--api-key",
            "k=a",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
}

/// 18. Hundreds of slow uploads hold neither the server nor each other: unauthenticated ones are
///     answered on their headers, authenticated ones time out, a normal request answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_do_not_starve_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub = HubProcess::start(Backend::Memory, &[]).await;
    let addr = hub.url.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for i in 0..300 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let auth = if i % 3 == 0 {
            ""
        } else {
            "Authorization: Bearer key-acme\r\n"
        };
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 200000\r\n\r\n{{\"topic\""
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push((i % 3 == 0, stream));
    }
    let started = std::time::Instant::now();
    let answer = hub
        .call("GET", "/v1/subscriptions", Some(KEY_A), None)
        .await;
    assert_eq!(answer.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let read_status = |mut stream: tokio::net::TcpStream| async move {
        let mut buf = vec![0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let mut unauthenticated = slow.iter().position(|(anon, _)| *anon);
    let (_, anon) = slow.remove(unauthenticated.take().unwrap());
    let anon_started = std::time::Instant::now();
    assert!(read_status(anon).await.starts_with("HTTP/1.1 401"));
    assert!(
        anon_started.elapsed() < Duration::from_secs(2),
        "answered on its headers"
    );
    let (_, authed) = slow.remove(slow.iter().position(|(anon, _)| !*anon).unwrap());
    assert!(
        read_status(authed).await.starts_with("HTTP/1.1 408"),
        "a slow body times out"
    );
}

/// 19. Backend failures reach clients as a stable code and a fixed sentence; details stay in
///     the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_details_stay_in_the_log() {
    let name = unique("opaque");
    let hub = HubProcess::start_on(Backend::Aws, &name, &[], &[]).await;
    let (_, sqs) = hub::runtime::aws_clients(None).await;
    let url = sqs
        .get_queue_url()
        .queue_name(format!("{name}-events"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    sqs.delete_queue().queue_url(&url).send().await.unwrap();
    let answer = hub
        .call(
            "POST",
            "/v1/events",
            Some(KEY_A),
            Some(json!({"topic": "door.opened", "data": {}})),
        )
        .await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.body["code"], "backend_unavailable");
    let message = answer.body["message"].as_str().unwrap();
    for detail in ["arn:", "123456789012", "sqs", "queue", "Queue", &name] {
        assert!(!message.contains(detail), "{message}");
    }
    hub.wait_for_log("backend failure").await;
}
