//! A subscription's pace, on every backend: its own rate limit holds at the receiver (no
//! one-second window over the limit and a little, every event delivered) without slowing another
//! subscription's burst; a receiver that answers `429` above its capacity is backed off to about
//! that capacity, with nothing exhausted and the others unaffected; the pace shows on reads and
//! in `/metrics`. And the pace store contract, on every adapter directly.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hub_tests::*;
use serde_json::{Value, json};

/// The most requests any one-second window holds, of `times` (in any order).
fn busiest_second(times: &[Instant]) -> usize {
    busiest_window(times, Duration::from_secs(1))
}

/// The most requests any window of `span` holds, of `times` (in any order).
fn busiest_window(times: &[Instant], span: Duration) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort();
    let mut most = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end].duration_since(sorted[start]) >= span {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

/// Publishes `count` events of `topic`, numbered, in batches of 100.
async fn publish_burst(hub: &HubProcess, topic: &str, count: usize) {
    publish_numbered(hub, topic, "n", count).await;
}

/// The distinct event ids `path` received (events only) and when each request came.
fn arrivals(receiver: &TestReceiver, path: &str) -> (HashSet<String>, Vec<Instant>) {
    let received = receiver.received();
    let events = events_at(&received, path);
    let ids = events
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap_or_default().to_string())
        .collect();
    (ids, events.iter().map(|r| r.at).collect())
}

/// The most requests to `path` (events only) the hub sent within any one second, by the
/// `webhook-timestamp` it signed as each left.
fn departures(receiver: &TestReceiver, path: &str) -> usize {
    let received = receiver.received();
    let mut per_second: HashMap<&str, usize> = HashMap::new();
    for request in events_at(&received, path) {
        *per_second
            .entry(request.header("webhook-timestamp"))
            .or_default() += 1;
    }
    per_second.into_values().max().unwrap_or(0)
}

/// How long `path` took to receive `count` distinct events from `since`.
async fn time_to_receive(
    receiver: &TestReceiver,
    path: &str,
    count: usize,
    since: Instant,
) -> Duration {
    eventually(
        Duration::from_secs(300),
        &format!("{count} events at {path}"),
        || {
            let got = arrivals(receiver, path).0.len();
            async move { (got >= count).then(|| since.elapsed()) }
        },
    )
    .await
}

/// The load of a scenario: the acceptance figures on the embedded backends; on the AWS
/// emulator, which serves tens of requests a second, the same shape scaled down (a tenth of the
/// events at a tenth of the limit, about the same 50 s) unless the run asks for full figures.
/// The pushing-back receiver takes a quarter there even then: under load the emulator accepts
/// about ten events a second from the publisher (3,000 took 317 s), so 150 a second cannot be
/// offered and a receiver taking 50 would never push back.
struct Load {
    /// Events in a burst.
    burst: usize,
    /// The limited subscription's `max_per_second`.
    limit: u32,
    /// What the pushing-back receiver takes a second.
    capacity: usize,
}

fn load(backend: Backend) -> Load {
    let capacity = if backend == Backend::Aws { 12 } else { 50 };
    if backend.scaled_down() {
        Load {
            burst: 100,
            limit: 2,
            capacity,
        }
    } else {
        Load {
            burst: 1000,
            limit: 20,
            capacity,
        }
    }
}

async fn read(hub: &HubProcess, id: &str) -> Value {
    hub.call("GET", &format!("/v1/subscriptions/{id}"), Some(KEY_A), None)
        .await
        .body
}

mod scenarios {
    use super::*;

    pub async fn a_rate_limit_holds_and_leaves_the_others_alone(backend: Backend) {
        let Load { burst, limit, .. } = load(backend);
        let hub = HubProcess::start(backend, &[]).await;
        let receiver = TestReceiver::start().await;
        subscribe_confirmed(
            &hub,
            &receiver,
            KEY_A,
            "/free",
            json!({"topics": ["burst.*"]}),
        )
        .await;
        // The reference: the free subscription's burst beside another unlimited one (the same
        // work for the hub and its queues, without a limit).
        subscribe_confirmed(
            &hub,
            &receiver,
            KEY_A,
            "/unlimited",
            json!({"topics": ["burst.reference"]}),
        )
        .await;
        let started = Instant::now();
        publish_burst(&hub, "burst.reference", burst).await;
        let reference = time_to_receive(&receiver, "/free", burst, started).await;
        time_to_receive(&receiver, "/unlimited", burst, started).await;
        println!("free burst beside an unlimited one: {reference:?}");

        let limited = subscribe_confirmed(
            &hub,
            &receiver,
            KEY_A,
            "/limited",
            json!({"topics": ["burst.limited"], "max_per_second": limit}),
        )
        .await;
        assert_eq!(limited["max_per_second"], limit);
        assert_eq!(
            limited["pace"]["per_second"],
            f64::from(limit),
            "{}",
            limited["pace"]
        );
        let started = Instant::now();
        publish_burst(&hub, "burst.limited", burst).await;
        let beside = time_to_receive(&receiver, "/free", 2 * burst, started).await;
        let ratio = beside.as_secs_f64() / reference.as_secs_f64().max(0.001);
        println!("free burst beside a limited one: {beside:?}, {ratio:.2}× the reference");
        // Held back, the free burst would take as long as the limited one (burst / limit, 50 s).
        // On the AWS emulator, which every test of the suite shares, the two bursts run under
        // different loads and the ratio is noisy (3.07× seen under the whole suite): there the
        // free burst must end within half the limited one's least time instead.
        let held_back = Duration::from_secs_f64(burst as f64 / f64::from(limit));
        let not_held = match backend {
            Backend::Aws => ratio <= 3.0 || beside < held_back / 2,
            _ => ratio <= 2.0 || beside < Duration::from_secs(5),
        };
        assert!(
            not_held,
            "the free subscription's burst is not held back by the limited one: {beside:?}, {ratio:.2}×"
        );

        let took = time_to_receive(&receiver, "/limited", burst, started).await;
        let (ids, times) = arrivals(&receiver, "/limited");
        assert_eq!(ids.len(), burst, "every event arrives");
        let busiest = busiest_second(&times);
        println!(
            "limited to {limit}/s: {burst} events in {took:?}, busiest second {busiest} at the receiver, {} as sent",
            departures(&receiver, "/limited")
        );
        // 22 for a limit of 20: the limit and a tenth, in any second, as the requests left (by
        // the signed `webhook-timestamp`, whole seconds, the hub stamps as each leaves) and as
        // the receiver saw them.
        let limit = limit as usize;
        let most = (limit * 11 / 10).max(limit + 1);
        let stamped = departures(&receiver, "/limited");
        assert!(
            stamped <= most,
            "at most {most} sent in any second: {stamped}"
        );
        match backend {
            // On the AWS emulator, which shares the machine's two cores with the hub and the
            // whole suite (this receiver included), requests that left one interval apart can
            // be taken in late and together: what the receiver saw is only checked for a burst
            // there (over eight seconds' worth in five).
            Backend::Aws => {
                let busiest = busiest_window(&times, Duration::from_secs(5));
                assert!(
                    busiest <= 8 * limit,
                    "at most {} in any 5 s: {busiest}",
                    8 * limit
                );
            }
            _ => {
                assert!(busiest <= most, "at most {most} in any second: {busiest}");
            }
        }
        let limit = limit as u32;
        let least = Duration::from_secs_f64(burst as f64 / f64::from(limit) * 0.9);
        assert!(
            took >= least,
            "{burst} at {limit} a second take about that long: {took:?}"
        );
    }

    pub async fn a_receiver_that_pushes_back_is_backed_off(backend: Backend) {
        let Load { capacity, .. } = load(backend);
        let hub = HubProcess::start(backend, &[]).await;
        // Answers 429 to what is over its capacity (50) in the last second.
        let recent: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
        let window = recent.clone();
        let receiver = TestReceiver::scripted(move |req, _| {
            if req.path != "/tight" || req.json()["type"] == "Confirmation" {
                return Reply::status(200);
            }
            let mut recent = window.lock().unwrap();
            let now = Instant::now();
            while recent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
            {
                recent.pop_front();
            }
            recent.push_back(now);
            if recent.len() > capacity {
                Reply::status(429)
            } else {
                Reply::status(200)
            }
        })
        .await;
        let tight = subscribe_confirmed(&hub, &receiver, KEY_A, "/tight", json!({})).await;
        subscribe_confirmed(&hub, &receiver, KEY_A, "/calm", json!({})).await;
        let tight_id = tight["id"].as_str().unwrap().to_string();

        // Three times its capacity (150 events a second), for 20 s.
        let per_tick = capacity * 3 / 10;
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut backing_off_seen = false;
        for round in 0..200 {
            tick.tick().await;
            let events: Vec<Value> = (0..per_tick)
                .map(|n| json!({"topic": "door.request.allowed", "data": {"n": round * per_tick + n}}))
                .collect();
            publish_all(&hub, KEY_A, events).await;
            if round % 20 == 19 {
                let pace = &read(&hub, &tight_id).await["pace"];
                backing_off_seen |= pace["backing_off"] == true;
            }
        }
        let offered = started.elapsed();
        let attempts: Vec<Instant> = receiver
            .received()
            .into_iter()
            .filter(|r| r.path == "/tight" && r.json()["type"] != "Confirmation")
            .map(|r| r.at)
            .collect();
        let in_window = attempts
            .iter()
            .filter(|at| {
                let since = at.duration_since(started);
                since >= Duration::from_secs(10) && since < Duration::from_secs(20)
            })
            .count();
        let per_second = in_window as f64 / 10.0;
        println!(
            "offered {} events in {offered:?}; attempts to the receiver taking {capacity}/s, in seconds 10-20: {per_second}/s",
            per_tick * 200
        );
        // 55 a second for a capacity of 50: the capacity and a tenth.
        let most = capacity as f64 * 1.1;
        assert!(
            per_second <= most,
            "backed off to about its capacity: {per_second}/s"
        );
        // Still delivering: at least 40 % of what the receiver takes, or of what was offered
        // where publishing could not keep up the rate (the AWS emulator, under the whole suite).
        let offered_per_second = (per_tick * 200) as f64 / offered.as_secs_f64();
        let least = capacity as f64 * 0.4;
        let least = least.min(offered_per_second * 0.4);
        assert!(
            per_second >= least,
            "and still delivering: {per_second}/s (offered {offered_per_second:.1}/s)"
        );
        assert!(backing_off_seen, "the read shows it backing off");

        // The others are unaffected: every event reached /calm soon after it was published.
        time_to_receive(&receiver, "/calm", per_tick * 200, started).await;
        // Nothing exhausted; the pace shows in the metrics.
        let metrics = reqwest::get(format!("{}/metrics", hub.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let exhausted = metrics
            .lines()
            .find(|l| l.starts_with("webhook_hub_deliveries_exhausted_total"))
            .unwrap_or("webhook_hub_deliveries_exhausted_total 0");
        assert!(exhausted.ends_with(" 0"), "{exhausted}");
        assert!(
            metrics.contains(&format!(
                "webhook_hub_subscription_pace_per_second{{subscription=\"{tight_id}\"}}"
            )),
            "the back-off rate per subscription"
        );
        let push_backs = metrics
            .lines()
            .find(|l| l.starts_with("webhook_hub_receiver_push_backs_total"))
            .unwrap_or_default();
        assert!(!push_backs.ends_with(" 0"), "{push_backs}");
    }
}

on_every_backend!(
    a_rate_limit_holds_and_leaves_the_others_alone,
    a_receiver_that_pushes_back_is_backed_off,
);

/// The pace store contract, on every adapter directly: a pace is written only over the version
/// it was read at, is read back with its subscription, survives a save of the subscription, and
/// goes with it.
mod pace_store {

    use hub::model::Subscription;
    use hub::pacing::Pace;
    use hub::ports::Store;

    use super::*;

    async fn contract(store: &dyn Store) {
        let now = hub::clock::wall_ms();
        let mut sub = Subscription::new_pending(
            hub::model::new_id("sub_", now),
            "acme".into(),
            "acme".into(),
            format!("https://example.com/{}", unique("hook")),
            now,
            hub::keyring::Sealed::plain("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        );
        sub.topics = vec![hub::topic::Pattern::parse("door.opened").unwrap()];
        sub.expires_at_ms = now + 3_600_000;
        store.save(&sub, None).await.unwrap();
        let first = Pace {
            version: 1,
            next_slot_ms: 1234.5,
            ..Pace::default()
        };
        assert!(
            !store.swap_pace(&sub.id, Some(7), &first).await.unwrap(),
            "no pace yet"
        );
        assert!(store.swap_pace(&sub.id, None, &first).await.unwrap());
        assert!(
            !store.swap_pace(&sub.id, None, &first).await.unwrap(),
            "one is there now"
        );
        let read = store.get(&sub.id).await.unwrap().unwrap();
        assert_eq!(read.pace.as_ref(), Some(&first));
        let second = Pace {
            version: 2,
            backoff_per_second: Some(12.5),
            pushed_back_ms: Some(99),
            ..first.clone()
        };
        assert!(store.swap_pace(&sub.id, Some(1), &second).await.unwrap());
        assert!(
            !store.swap_pace(&sub.id, Some(1), &second).await.unwrap(),
            "over a stale version"
        );
        // A save of the subscription (as read before the pace changed) keeps the pace.
        let mut renamed = sub.clone();
        renamed.name = Some("renamed".into());
        renamed.version += 1;
        store.save(&renamed, Some(&sub)).await.unwrap();
        let read = store.get(&sub.id).await.unwrap().unwrap();
        assert_eq!(read.name.as_deref(), Some("renamed"));
        assert_eq!(read.pace.as_ref(), Some(&second));
        store.delete(&renamed).await.unwrap();
        assert!(
            !store.swap_pace(&sub.id, Some(2), &second).await.unwrap(),
            "gone with its subscription"
        );
    }

    contract_on_every_store!();
}
