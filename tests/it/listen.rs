//! `webhook-hub listen` driven as a user runs it: against a hub on loopback it subscribes and
//! confirms itself, prints a delivery as verified (✓) and forwards it, prints a tampered one as
//! not verified (✗) and refuses it, and unsubscribes on SIGTERM.

use std::process::{Command, Stdio};

use hub_tests::*;
use serde_json::json;

/// What `listen` printed so far.
fn printed(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

async fn wait_for_output(path: &std::path::Path, what: &str, done: impl Fn(&str) -> bool) {
    let found = within(WAIT, || async { done(&printed(path)).then_some(()) }).await;
    assert!(
        found.is_some(),
        "listen never printed {what}; it printed:\n{}",
        printed(path)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_verifies_prints_forwards_and_unsubscribes() {
    let hub = HubProcess::start(Backend::Memory, &[]).await;
    let app = TestReceiver::start().await;
    let out = std::env::temp_dir().join(format!("{}.out", unique("listen")));
    let mut listen = Command::new(binary("webhook-hub"))
        .args(["listen", "--hub", &hub.url, "--api-key", KEY_A])
        .args(["--topics", "door.*", "--forward-to", &app.url("/app")])
        .env_remove("HUB_URL")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("webhook-hub listen starts");

    wait_for_output(&out, "the confirmation", |o| o.contains("is active")).await;
    let text = printed(&out);
    let callback = text
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .expect("listen prints its callback")
        .to_string();
    let sub_id = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| w.starts_with("sub_"))
        .expect("listen names its subscription")
        .to_string();
    assert!(
        text.contains("Confirmation") && text.contains("✓ verified"),
        "{text}"
    );

    let event = publish(
        &hub,
        KEY_A,
        json!({"topic": "door.request.allowed", "data": {"door": "4711"}}),
    )
    .await;
    let id = event["id"].as_str().unwrap();
    wait_for_output(&out, "the delivery", |o| {
        o.lines().any(|l| {
            l.contains(id) && l.contains("door.request.allowed") && l.contains("✓ verified")
        })
    })
    .await;
    // The body's lines follow the verified line; under load they reach the pipe a moment later.
    wait_for_output(&out, "the body, pretty", |o| {
        o.contains("\"door\": \"4711\"")
    })
    .await;
    let forwarded = app
        .wait_for_match(WAIT, |r| r.path == "/app" && r.header("webhook-id") == id)
        .await;
    // `listen` prints the forward once the app has answered, after the app has seen it.
    wait_for_output(&out, "the forward", |o| o.contains("forwarded to")).await;

    // The same headers over another body: what a forger would send.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut tampered = http
        .post(&callback)
        .body(r#"{"id":"evt_forged","type":"door.request.allowed","data":{"door":"0"}}"#);
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        tampered = tampered.header(name, forwarded.header(name));
    }
    let refused = tampered.send().await.unwrap();
    assert_eq!(refused.status(), 401, "a tampered delivery is refused");
    wait_for_output(&out, "the ✗", |o| o.contains("✗ NOT verified")).await;
    assert_eq!(
        app.received().iter().filter(|r| r.path == "/app").count(),
        1,
        "nothing tampered is forwarded"
    );

    // SIGTERM: it unsubscribes and exits cleanly.
    let killed = Command::new("kill")
        .args(["-TERM", &listen.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = eventually(WAIT, "listen to stop", || {
        let status = listen.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(status.success(), "{}", printed(&out));
    assert!(printed(&out).contains(&format!("unsubscribed {sub_id}")));
    let gone = hub
        .call(
            "GET",
            &format!("/v1/subscriptions/{sub_id}"),
            Some(KEY_A),
            None,
        )
        .await;
    assert_eq!(gone.status, 404);
    let _ = std::fs::remove_file(out);
}
