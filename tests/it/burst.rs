//! A burst in the embedded mode: 1,000 events to 10 subscriptions while an 11th subscription's
//! receiver hangs. Every one of the 10,000 deliveries arrives (exactly once after the receiver's
//! dedupe on `webhook-id`), and the hanging receiver does not hold the others back.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use hub_tests::*;
use serde_json::json;

const EVENTS: usize = 1_000;
const SUBSCRIBERS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_does_not_hold_back_the_others() {
    let hub = HubProcess::start(Backend::Memory, &[]).await;
    let receiver = TestReceiver::start().await;
    let hanging = TestReceiver::scripted(|req, _| {
        if req.json()["type"] == "Confirmation" {
            Reply::status(200)
        } else {
            Reply {
                delay: Duration::from_secs(30),
                ..Reply::status(200)
            }
        }
    })
    .await;
    for i in 0..SUBSCRIBERS {
        subscribe_confirmed(&hub, &receiver, KEY_A, &format!("/s{i}"), json!({})).await;
    }
    subscribe_confirmed(&hub, &hanging, KEY_A, "/hang", json!({})).await;

    let started = Instant::now();
    let publishers: Vec<_> = (0..8)
        .map(|p| {
            let (http, url) = (hub.http.clone(), hub.url.clone());
            tokio::spawn(async move {
                for n in (p..EVENTS).step_by(8) {
                    let body = json!({"topic": "door.request.allowed", "data": {"n": n, "pad": "x".repeat(700)}});
                    let resp = http.post(format!("{url}/v1/events")).bearer_auth(KEY_A).json(&body).send().await.unwrap();
                    assert_eq!(resp.status(), 202);
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    let published = started.elapsed();

    let expected = EVENTS * SUBSCRIBERS;
    let deadline = Instant::now() + Duration::from_secs(120);
    let distinct = loop {
        let mut per_path: HashMap<String, HashSet<String>> = HashMap::new();
        for r in receiver.received() {
            if r.json()["type"] != "Confirmation" {
                per_path
                    .entry(r.path.clone())
                    .or_default()
                    .insert(r.header("webhook-id").to_string());
            }
        }
        let total: usize = per_path.values().map(HashSet::len).sum();
        if total >= expected {
            break per_path;
        }
        assert!(
            Instant::now() < deadline,
            "{total} of {expected} deliveries after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let elapsed = started.elapsed();
    for i in 0..SUBSCRIBERS {
        assert_eq!(
            distinct[&format!("/s{i}")].len(),
            EVENTS,
            "/s{i} got every event"
        );
    }
    let raw = receiver
        .received()
        .iter()
        .filter(|r| r.json()["type"] != "Confirmation")
        .count();
    println!(
        "burst: {expected} deliveries to {SUBSCRIBERS} receivers (+1 hanging) in {:.2} s \
         (publishing took {:.2} s), {raw} requests before dedupe, {} to the hanging receiver",
        elapsed.as_secs_f64(),
        published.as_secs_f64(),
        hanging.received().len() - 1
    );
    assert!(
        hanging.received().len() > 1,
        "the hanging receiver was being called meanwhile"
    );
}
