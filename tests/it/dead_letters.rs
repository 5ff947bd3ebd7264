//! `webhook-hub dead-letters list|redrive` against SQS (moto), as an operator runs it: `list`
//! shows what waits without moving it, `redrive` sends each delivery back with a fresh retry
//! schedule and empties the dead-letter queue.

use std::process::Command;
use std::time::Duration;

use hub::adapters::sqs::SqsQueue;
use hub::model::{DeliveryTask, Event, TaskPayload, queue_json};
use hub::ports::Queue;
use hub_tests::*;

fn dead_letters(name: &str, args: &[&str]) -> String {
    let out = Command::new(binary("webhook-hub"))
        .arg("dead-letters")
        .args(args)
        .args(["--deliveries-queue", &format!("{name}-deliveries")])
        .args(["--events-queue", &format!("{name}-events")])
        .output()
        .expect("webhook-hub runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_dead_letters_are_listed_and_redriven() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL must point at moto_server"
    );
    let name = unique("dlq");
    let sqs = aws_sdk_sqs::Client::new(&aws_config::load_from_env().await);
    let deliveries = SqsQueue::ensure(
        sqs.clone(),
        &format!("{name}-deliveries"),
        Duration::from_secs(30),
        3,
    )
    .await
    .unwrap();
    SqsQueue::ensure(sqs, &format!("{name}-events"), Duration::from_secs(30), 3)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..2 {
        let event = Event {
            id: format!("evt_dead{n}"),
            account: "acme".into(),
            topic: hub::topic::Topic::parse("door.opened").unwrap(),
            timestamp_ms: 1_800_000_000_000,
            data: serde_json::json!({"n": n}),
            labels: Default::default(),
            sensitive: Default::default(),
            owner: None,
            broadcast: false,
            trace: None,
        };
        let task = DeliveryTask {
            attempts_made: 7,
            not_before_ms: Some(1_800_000_100_000),
            ..DeliveryTask::new("sub_dead", TaskPayload::Event { event })
        };
        deliveries.dead_letter(queue_json(&task)).await.unwrap();
        ids.push(format!("evt_dead{n}"));
    }

    for _ in 0..2 {
        let listed = dead_letters(&name, &["list"]);
        for id in &ids {
            assert!(listed.contains(id.as_str()), "{listed}");
        }
        assert!(listed.contains("2 dead letter(s)"), "{listed}");
        assert!(listed.contains("attempts 7"), "{listed}");
    }

    let redriven = dead_letters(&name, &["redrive"]);
    assert!(redriven.contains("redrove 2"), "{redriven}");
    let mut back = Vec::new();
    for _ in 0..10 {
        back.extend(
            deliveries
                .receive(10, Duration::from_secs(1))
                .await
                .unwrap(),
        );
        if back.len() >= 2 {
            break;
        }
    }
    let tasks: Vec<DeliveryTask> = back
        .iter()
        .map(|m| serde_json::from_str(&m.body).unwrap())
        .collect();
    assert_eq!(tasks.len(), 2);
    for task in &tasks {
        assert_eq!(
            (task.attempts_made, task.not_before_ms),
            (0, None),
            "a fresh schedule"
        );
    }
    let listed = dead_letters(&name, &["list"]);
    assert!(listed.contains("0 dead letter(s)"), "{listed}");
}
