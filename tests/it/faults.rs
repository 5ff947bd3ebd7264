//! Receivers out there are slow, broken, hostile or gone. A fault-injecting receiver drives each
//! case to its outcome, each its own test on every backend: retried failures that end in the
//! dead-letter queue, timeouts, resets, redirects not followed, 410, 429 with `Retry-After`,
//! capped reads, bad TLS, and auto-disable after continuous failure.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use hub_tests::*;
use serde_json::{Value, json};

/// Three attempts: now, ~1 s later, ~3 s after that.
const SCHEDULE: &str = "1s,3s";

/// The attempts of a subscription's delivery log whose `webhook-id` starts with `prefix`
/// (`evt_` for events, `msg_` for confirmations), oldest first.
async fn attempts_of(hub: &HubProcess, id: &str, prefix: &str) -> Vec<Value> {
    let mut attempts = delivery_log(hub, id).await;
    attempts.retain(|a| {
        a["message_id"]
            .as_str()
            .is_some_and(|m| m.starts_with(prefix))
    });
    attempts.reverse();
    attempts
}

async fn deliveries(hub: &HubProcess, id: &str) -> Vec<Value> {
    attempts_of(hub, id, "evt_").await
}

/// Waits until the subscription's log holds `n` event attempts.
async fn wait_attempts(hub: &HubProcess, id: &str, n: usize, within: Duration) -> Vec<Value> {
    wait_attempts_of(hub, id, "evt_", n, within).await
}

/// Waits until the subscription's log holds `n` attempts of `prefix` messages.
async fn wait_attempts_of(
    hub: &HubProcess,
    id: &str,
    prefix: &str,
    n: usize,
    within: Duration,
) -> Vec<Value> {
    eventually(within, &format!("{id}: {n} {prefix} attempts"), || async {
        let attempts = attempts_of(hub, id, prefix).await;
        (attempts.len() >= n).then_some(attempts)
    })
    .await
}

/// A receiver whose answer depends on its path (confirmations always answered 200): the
/// failures the scenarios below drive to their outcome.
async fn misbehaving_receiver() -> TestReceiver {
    let counts = std::sync::Arc::new(std::sync::Mutex::new(HashMap::<String, usize>::new()));
    TestReceiver::scripted(move |req, _| {
        if req.json()["type"] == "Confirmation" {
            return Reply::status(200);
        }
        let n = {
            let mut c = counts.lock().unwrap();
            let n = c.entry(req.path.clone()).or_default();
            *n += 1;
            *n
        };
        let moved = |status: u16| Reply {
            headers: vec![("location".into(), "/landing".into())],
            ..Reply::status(status)
        };
        match req.path.as_str() {
            "/500" => Reply::status(500),
            "/503" => Reply::status(503),
            "/flaky" if n == 1 => Reply::status(500),
            "/flaky" => Reply::status(200),
            "/hang" => Reply {
                delay: Duration::from_secs(8),
                ..Reply::status(200)
            },
            "/301" => moved(301),
            "/302" => moved(302),
            "/307" => moved(307),
            "/gone" => Reply::status(410),
            "/429" if n == 1 => Reply {
                headers: vec![("retry-after".into(), "2".into())],
                ..Reply::status(429)
            },
            "/429" => Reply::status(200),
            "/big" => Reply {
                body: Bytes::from(vec![b'x'; 10 * 1024 * 1024]),
                ..Reply::status(200)
            },
            _ => Reply::status(200),
        }
    })
    .await
}

/// Servers that cannot answer a confirmation: their first delivery (the signed confirmation,
/// through the same transport and retries as any event) is the one tested. Kept alive as long
/// as the scenario holds them.
struct RawServers {
    reset: std::net::SocketAddr,
    drip: std::net::SocketAddr,
    tls: SelfSignedTls,
    endless: EndlessReceiver,
}

/// One hub with the three-attempt schedule, a subscription per named path (paths of
/// [`misbehaving_receiver`] confirmed through it, `/reset`, `/drip`, `/tls` and `/endless` on
/// their own servers, left pending), and one event published to all of them.
struct Faulty {
    hub: HubProcess,
    receiver: TestReceiver,
    ids: HashMap<&'static str, String>,
    event_id: String,
    _raw: Option<RawServers>,
}

impl Faulty {
    async fn start(backend: Backend, paths: &[&'static str]) -> Faulty {
        let hub = HubProcess::start(backend, &["--retry-schedule", SCHEDULE]).await;
        let receiver = misbehaving_receiver().await;
        let raw_paths = ["/reset", "/drip", "/tls", "/endless"];
        let mut ids = HashMap::new();
        let mut raw = None;
        for &path in paths {
            if !raw_paths.contains(&path) {
                let created = subscribe_confirmed(&hub, &receiver, KEY_A, path, json!({})).await;
                ids.insert(path, created["id"].as_str().unwrap().to_string());
                continue;
            }
            if raw.is_none() {
                raw = Some(RawServers {
                    reset: resetting_receiver().await,
                    drip: dripping_receiver().await,
                    tls: SelfSignedTls::start().await,
                    endless: endless_receiver().await,
                });
            }
            let servers = raw.as_ref().unwrap();
            let url = match path {
                "/reset" => format!("http://{}/reset", servers.reset),
                "/drip" => format!("http://{}/drip", servers.drip),
                "/tls" => format!("https://127.0.0.1:{}/tls", servers.tls.port),
                _ => format!("http://{}/endless", servers.endless.addr),
            };
            let body = json!({"callback_url": url, "topics": ["door.request.allowed"]});
            let created = hub
                .call("POST", "/v1/subscriptions", Some(KEY_A), Some(body))
                .await;
            assert_eq!(created.status, 201);
            ids.insert(path, created.body["id"].as_str().unwrap().to_string());
        }
        let published = publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {"x": 1}}),
        )
        .await;
        let event_id = published["id"].as_str().unwrap().to_string();
        Faulty {
            hub,
            receiver,
            ids,
            event_id,
            _raw: raw,
        }
    }

    /// The subscription of `path`.
    fn id(&self, path: &str) -> &str {
        &self.ids[path]
    }
}

mod scenarios {
    use super::*;

    /// Always failing: three attempts with the same `webhook-id`, each timestamped anew, then
    /// the dead-letter queue, holding what it takes to replay them; no attempt after that.
    pub async fn always_failing_receivers_end_in_the_dead_letter_queue(backend: Backend) {
        let f = Faulty::start(backend, &["/500", "/503"]).await;
        for path in ["/500", "/503"] {
            let attempts = wait_attempts(&f.hub, f.id(path), 3, Duration::from_secs(30)).await;
            let code: u16 = path[1..].parse().unwrap();
            assert!(
                attempts
                    .iter()
                    .all(|a| a["status_code"] == code && a["delivered"] == false),
                "{attempts:#?}"
            );
            let received = f.receiver.received();
            let got = events_at(&received, path);
            assert!(got.iter().all(|r| r.header("webhook-id") == f.event_id));
            assert!(
                got.iter()
                    .map(|r| r.header("webhook-timestamp").to_string())
                    .collect::<std::collections::HashSet<_>>()
                    .len()
                    >= 2,
                "each attempt is timestamped anew"
            );
        }
        // Each read takes what it returns off the queue: gather until both are in.
        let gathered = std::sync::Mutex::new(Vec::<Value>::new());
        let dead = within(Duration::from_secs(30), || async {
            let got = f
                .hub
                .call("POST", "/_test/dead-letters", Some(KEY_A), None)
                .await;
            let mut dead = gathered.lock().unwrap();
            for body in got.body["messages"].as_array().cloned().unwrap_or_default() {
                dead.push(serde_json::from_str(body.as_str().unwrap()).unwrap());
            }
            dead.retain(|d| {
                d["subscription_id"] == f.id("/500") || d["subscription_id"] == f.id("/503")
            });
            (dead.len() >= 2).then(|| dead.clone())
        })
        .await
        .unwrap_or_else(|| panic!("both dead letters within 30 s; log:\n{}", f.hub.log()));
        assert!(
            dead.iter()
                .all(|d| d["payload"]["event"]["id"] == f.event_id.as_str()
                    && d["payload"]["event"]["data"] == json!({"x": 1}))
        );
        // Both messages are dead letters now, so no attempt can follow: exactly three each, the
        // last recorded with no next attempt.
        for path in ["/500", "/503"] {
            assert_eq!(events_at(&f.receiver.received(), path).len(), 3, "{path}");
            let log = deliveries(&f.hub, f.id(path)).await;
            assert_eq!(log.len(), 3, "{path}: {log:#?}");
            assert!(log[..2].iter().all(|a| !a["next_attempt_at"].is_null()));
            assert!(log[2]["next_attempt_at"].is_null(), "{path}: {log:#?}");
        }
        assert!(dead.iter().all(|d| d["attempts_made"] == 3), "{dead:#?}");
    }

    /// 500 then 200: delivered once, both tries with the same `webhook-id`, counted once.
    pub async fn a_failure_then_a_success_is_delivered_once(backend: Backend) {
        let f = Faulty::start(backend, &["/flaky"]).await;
        let flaky = wait_attempts(&f.hub, f.id("/flaky"), 2, Duration::from_secs(20)).await;
        assert_eq!(
            (
                flaky[0]["status_code"].as_u64(),
                flaky[1]["status_code"].as_u64()
            ),
            (Some(500), Some(200))
        );
        let tries = events_at(&f.receiver.received(), "/flaky")
            .into_iter()
            .map(|r| r.header("webhook-id").to_string())
            .collect::<Vec<_>>();
        assert_eq!(tries, vec![f.event_id.clone(), f.event_id.clone()]);
        // The attempt is recorded just before the odometer counts it: wait for the count.
        eventually(WAIT, "the odometer at 1", || async {
            let sub = f
                .hub
                .call(
                    "GET",
                    &format!("/v1/subscriptions/{}", f.id("/flaky")),
                    Some(KEY_A),
                    None,
                )
                .await;
            (sub.body["odometer"] == 1).then_some(())
        })
        .await;
        // Acknowledged: nothing is left to come back after the visibility timeout.
        eventually(WAIT, "the deliveries queue empty", || async {
            (deliveries_depth(&f.hub).await == 0).then_some(())
        })
        .await;
    }

    /// Redirects are failures and are never followed.
    pub async fn redirects_are_failures_never_followed(backend: Backend) {
        let f = Faulty::start(backend, &["/301", "/302", "/307"]).await;
        for path in ["/301", "/302", "/307"] {
            let attempts = wait_attempts(&f.hub, f.id(path), 2, Duration::from_secs(20)).await;
            for attempt in &attempts {
                assert_eq!(
                    attempt["status_code"].as_u64(),
                    Some(path[1..].parse().unwrap())
                );
                assert_eq!(attempt["delivered"], false);
            }
        }
        assert!(
            f.receiver.received().iter().all(|r| r.path != "/landing"),
            "redirects are not followed"
        );
    }

    /// 410: the subscription is deleted after one attempt, and that attempt is the last.
    pub async fn gone_deletes_the_subscription(backend: Backend) {
        let f = Faulty::start(backend, &["/gone"]).await;
        let path = format!("/v1/subscriptions/{}", f.id("/gone"));
        eventually(WAIT, "410 Gone deletes the subscription", || async {
            let got = f.hub.call("GET", &path, Some(KEY_A), None).await;
            (got.status == 404).then_some(())
        })
        .await;
        // The hub decided on the 410 and settled the message: that one attempt is all there
        // will ever be.
        f.hub
            .wait_for_log("receiver answered 410 Gone: subscription deleted")
            .await;
        assert_eq!(events_at(&f.receiver.received(), "/gone").len(), 1);
    }

    /// 429 with `Retry-After: 2`: the hub scheduled the next try no sooner than 2 s after the
    /// 429 (the schedule alone said 1 s), recorded it, and made it no sooner than recorded.
    pub async fn retry_after_floors_the_next_try(backend: Backend) {
        let f = Faulty::start(backend, &["/429"]).await;
        let tries = wait_attempts(&f.hub, f.id("/429"), 2, Duration::from_secs(20)).await;
        assert_eq!(tries[0]["status_code"], 429);
        let answered =
            timestamp_ms(&tries[0]["timestamp"]) + tries[0]["latency_ms"].as_i64().unwrap();
        let scheduled = timestamp_ms(&tries[0]["next_attempt_at"]) - answered;
        assert!(
            (1_995..=2_100).contains(&scheduled),
            "Retry-After 2 is the floor of the recorded delay: {scheduled} ms"
        );
        assert!(
            timestamp_ms(&tries[1]["timestamp"]) >= timestamp_ms(&tries[0]["next_attempt_at"]) - 5,
            "not retried before the recorded time: {tries:#?}"
        );
        assert_eq!(
            (
                tries[1]["delivered"].as_bool(),
                tries[1]["next_attempt_at"].is_null()
            ),
            (Some(true), true)
        );
    }

    /// A 10 MiB answer and a body that never ends: read up to a cap, delivered well within the
    /// budget (reading the endless one whole would have been a timeout).
    pub async fn answers_are_read_to_a_cap(backend: Backend) {
        let f = Faulty::start(backend, &["/big", "/endless"]).await;
        let big = wait_attempts(&f.hub, f.id("/big"), 1, Duration::from_secs(20)).await;
        assert_eq!(
            (
                big[0]["status_code"].as_u64(),
                big[0]["delivered"].as_bool()
            ),
            (Some(200), Some(true))
        );
        let endless =
            wait_attempts_of(&f.hub, f.id("/endless"), "msg_", 1, Duration::from_secs(20)).await;
        assert_eq!(
            (
                endless[0]["status_code"].as_u64(),
                endless[0]["delivered"].as_bool(),
                endless[0]["error"].is_null()
            ),
            (Some(200), Some(true), true),
            "{endless:#?}"
        );
        assert!(
            endless[0]["latency_ms"].as_u64().unwrap() < 4_000,
            "{endless:#?}"
        );
        // The hub read 64 KiB and hung up: what the receiver got to write is that and the
        // sockets' buffers, far from what a reader without a cap takes in the same time.
        let servers = f._raw.as_ref().unwrap();
        let written = servers
            .endless
            .most_written
            .load(std::sync::atomic::Ordering::SeqCst);
        assert!(written < 8 << 20, "the receiver wrote {written} bytes");
    }

    /// A hang and a drip past 5 s: timeouts, each attempt cut at the budget, and retried.
    pub async fn hangs_and_drips_are_cut_at_the_budget(backend: Backend) {
        let f = Faulty::start(backend, &["/hang", "/drip"]).await;
        for (path, prefix) in [("/hang", "evt_"), ("/drip", "msg_")] {
            let attempts =
                wait_attempts_of(&f.hub, f.id(path), prefix, 2, Duration::from_secs(40)).await;
            for a in &attempts[..2] {
                assert_eq!(a["error"], "timeout", "{path}: {a}");
                // The receiver would have answered after 8 s (hang) or 10 s (drip): an attempt
                // recorded as a timeout under that was cut by the hub, and not before 5 s.
                let ms = a["latency_ms"].as_u64().unwrap();
                assert!(
                    (4_990..8_000).contains(&ms),
                    "{path}: cut at the 5 s budget, took {ms} ms"
                );
                assert!(!a["next_attempt_at"].is_null(), "{path}: retried");
            }
        }
    }

    /// A reset connection and a self-signed certificate: failures with no status, retried.
    pub async fn resets_and_bad_certificates_are_retried(backend: Backend) {
        let f = Faulty::start(backend, &["/reset", "/tls"]).await;
        for path in ["/reset", "/tls"] {
            let attempts =
                wait_attempts_of(&f.hub, f.id(path), "msg_", 2, Duration::from_secs(30)).await;
            assert!(
                attempts
                    .iter()
                    .all(|a| a["delivered"] == false && a["status_code"].is_null()),
                "{path}: {attempts:#?}"
            );
        }
        assert_eq!(
            attempts_of(&f.hub, f.id("/tls"), "msg_").await[0]["error"],
            "tls"
        );
    }

    /// Deliveries that keep failing past `--disable-after` disable the subscription; an update
    /// turns it back on.
    pub async fn continuous_failure_disables(backend: Backend) {
        let hub = HubProcess::start(
            backend,
            &[
                "--retry-schedule",
                "1s,1s,1s,1s,1s",
                "--disable-after",
                "2s",
            ],
        )
        .await;
        let receiver = TestReceiver::scripted(|req, _| {
            if req.json()["type"] == "Confirmation" {
                Reply::status(200)
            } else {
                Reply::status(500)
            }
        })
        .await;
        let created = subscribe_confirmed(&hub, &receiver, KEY_A, "/down", json!({})).await;
        let id = created["id"].as_str().unwrap();
        publish(
            &hub,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {}}),
        )
        .await;
        eventually(
            Duration::from_secs(20),
            "the subscription disabled",
            || async {
                let sub = hub
                    .call("GET", &format!("/v1/subscriptions/{id}"), Some(KEY_A), None)
                    .await;
                (sub.body["status"] == "disabled").then_some(())
            },
        )
        .await;
        // The attempt that disabled it is recorded as the last: no next attempt was scheduled.
        let log = eventually(WAIT, "the disabling attempt is logged", || async {
            let log = deliveries(&hub, id).await;
            log.last()
                .is_some_and(|a| a["next_attempt_at"].is_null())
                .then_some(log)
        })
        .await;
        assert!(
            (2..=5).contains(&log.len()),
            "{} attempts before disabling",
            log.len()
        );
        assert!(
            log[..log.len() - 1]
                .iter()
                .all(|a| !a["next_attempt_at"].is_null()),
            "{log:#?}"
        );
        hub.wait_for_log("subscription disabled after continuous failure")
            .await;
        let back = hub
            .call(
                "PATCH",
                &format!("/v1/subscriptions/{id}"),
                Some(KEY_A),
                Some(json!({"active": true})),
            )
            .await;
        assert_eq!(back.body["status"], "active");
    }
}

hub_tests::on_every_backend!(
    always_failing_receivers_end_in_the_dead_letter_queue,
    a_failure_then_a_success_is_delivered_once,
    redirects_are_failures_never_followed,
    gone_deletes_the_subscription,
    retry_after_floors_the_next_try,
    answers_are_read_to_a_cap,
    hangs_and_drips_are_cut_at_the_budget,
    resets_and_bad_certificates_are_retried,
    continuous_failure_disables,
);

/// At least once: the hub is killed (SIGKILL) while deliveries are in flight; a new process on
/// the same table and queues delivers every event, duplicates carrying the same `webhook-id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_crash_mid_batch_loses_nothing() {
    let name = unique("crash");
    let env = [("HUB_QUEUE_VISIBILITY", "6s")];
    let mut first = HubProcess::start_on(Backend::Aws, &name, &[], &env).await;
    let receiver = TestReceiver::scripted(|req, _| {
        let slow = req.json()["type"] != "Confirmation";
        Reply {
            delay: Duration::from_millis(if slow { 150 } else { 0 }),
            ..Reply::status(200)
        }
    })
    .await;
    subscribe_confirmed(&first, &receiver, KEY_A, "/c", json!({})).await;
    let mut ids = std::collections::HashSet::new();
    for n in 0..40 {
        let published = publish(
            &first,
            KEY_A,
            json!({"topic": "door.request.allowed", "data": {"n": n}}),
        )
        .await;
        ids.insert(published["id"].as_str().unwrap().to_string());
    }
    eventually(Duration::from_secs(30), "deliveries started", || async {
        (events_at(&receiver.received(), "/c").len() >= 5).then_some(())
    })
    .await;
    first.crash();
    let before = events_at(&receiver.received(), "/c").len();
    assert!(
        before < 40,
        "the crash came mid-stream ({before} delivered)"
    );

    let _second = HubProcess::start_on(Backend::Aws, &name, &[], &env).await;
    let got = within(Duration::from_secs(60), || async {
        let got: std::collections::HashSet<String> = events_at(&receiver.received(), "/c")
            .iter()
            .map(|r| r.header("webhook-id").to_string())
            .collect();
        (got == ids).then_some(())
    })
    .await;
    let seen = receiver.received();
    let delivered: std::collections::HashSet<String> = events_at(&seen, "/c")
        .iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect();
    assert!(
        got.is_some(),
        "lost after the crash: {:?}",
        ids.difference(&delivered).collect::<Vec<_>>()
    );
    println!(
        "crash: {before} delivered before the crash, all {} after the restart ({} requests in all)",
        ids.len(),
        events_at(&seen, "/c").len()
    );
}
