//! Figures 1 and 5: cold init of every Lambda binary under the Runtime API emulator (exec → first
//! `next`) beside a hello-world `lambda_runtime` binary; the sender's peak memory on the largest
//! batch of 240 KiB events Lambda hands it; every binary's size.

use std::time::Duration;

use hub::adapters::dynamodb::DynamoStore;
use hub::model::{DeliveryTask, Event, SubscriptionStatus, TaskPayload};
use hub::ports::Store;
use hub::runtime::aws_clients;
use hub_tests::{
    RuntimeEmulator, SAMPLE_SUB, TestReceiver, lambda_env, sample_subscription, unique,
};
use serde_json::json;

use crate::{Options, Section};

/// The nine Lambda functions.
pub const FUNCTIONS: [&str; 9] = [
    "subscribe",
    "confirm",
    "unsubscribe",
    "manage",
    "publish",
    "fanout",
    "sender",
    "fold",
    "sweeper",
];

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

pub async fn cold_init(options: &Options) -> Section {
    let mut section =
        Section::new("1. Cold init: exec → first `next` under the Runtime API emulator");
    let boots = if options.smoke { 2 } else { 15 };
    let env = lambda_env("webhook-hub");
    let boot = |name: &'static str| {
        let path = options.binary(name);
        let env = env.clone();
        async move {
            let mut times = Vec::new();
            for _ in 0..boots {
                let emulator = RuntimeEmulator::start("{}".into()).await;
                times.push(emulator.boot(&path, &env).await);
            }
            median(times)
        }
    };
    let hello = boot("hello-lambda").await;
    section.line(format!(
        "measured, hello-lambda: median {:>6.2} ms over {boots} boots (the reference)",
        ms(hello)
    ));
    let mut worst: f64 = 0.0;
    for name in FUNCTIONS {
        let time = boot(name).await;
        let ratio = time.as_secs_f64() / hello.as_secs_f64();
        worst = worst.max(ratio);
        section.line(format!(
            "measured, {name:>12}: median {:>6.2} ms, {ratio:.2}× hello-world",
            ms(time)
        ));
    }
    section.line(format!("computed: worst ratio {worst:.2}× (goal ≤ 2×)"));
    // This Debian image keeps ~150 separate files in /etc/ssl/certs, and the AWS SDK's TLS
    // (rustls-native-certs) reads the bundle and the whole directory at client construction.
    // AL2023, which Lambda runs, keeps one bundle file: the same boots with only the bundle.
    let empty = std::env::temp_dir().join(format!("no-cert-dir-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let bundle_only: Vec<(&'static str, String)> = env
        .iter()
        .cloned()
        .chain([
            ("SSL_CERT_DIR", empty.display().to_string()),
            ("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt".into()),
        ])
        .collect();
    let mut worst_bundle: f64 = 0.0;
    let mut lines = Vec::new();
    for name in FUNCTIONS {
        let mut times = Vec::new();
        for _ in 0..boots {
            let emulator = RuntimeEmulator::start("{}".into()).await;
            times.push(emulator.boot(&options.binary(name), &bundle_only).await);
        }
        let ratio = median(times.clone()).as_secs_f64() / hello.as_secs_f64();
        worst_bundle = worst_bundle.max(ratio);
        lines.push(format!("{name} {:.2} ms", ms(median(times))));
    }
    section.line(format!(
        "measured, with one CA bundle file as on AL2023 (SSL_CERT_DIR empty): {}",
        lines.join(", ")
    ));
    section.line(format!("computed: worst ratio then {worst_bundle:.2}×"));
    section
}

/// Lambda's largest synchronous invocation payload: an SQS batch is cut to fit it.
const LAMBDA_PAYLOAD: usize = 6 * 1024 * 1024;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub async fn memory_and_size(options: &Options) -> Section {
    let mut section = Section::new(
        "5. Memory and size: the sender on its largest batch of 240 KiB events; stripped binaries",
    );
    let table = unique("bench-rss");
    let (dynamo, sqs) = aws_clients(None).await;
    let store = DynamoStore::new(dynamo, &table);
    store.ensure_table().await.expect("table");
    // Where the sender queues the retries of the refused attempts.
    hub::adapters::sqs::SqsQueue::ensure(
        sqs,
        &format!("{table}-deliveries"),
        Duration::from_secs(180),
        30,
    )
    .await
    .expect("deliveries queue");
    let receiver = TestReceiver::start().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    store
        .save(
            &sample_subscription(now, SubscriptionStatus::Active, &receiver.url("/big")),
            None,
        )
        .await
        .expect("seed");
    let blob = "x".repeat(240 * 1024 - 64);
    // The template's batch size, or as many as Lambda's 6 MB invocation payload holds (it hands
    // over no more), whichever is smaller.
    let batch = crate::cost::sender_batch().min(LAMBDA_PAYLOAD / (241 * 1024));
    let records: Vec<_> = (0..batch)
        .map(|i| {
            let task = DeliveryTask::new(
                SAMPLE_SUB,
                TaskPayload::Event {
                    event: Event {
                        id: format!("evt_big{i}"),
                        account: "acme".into(),
                        topic: hub::topic::Topic::parse("door.request.allowed").unwrap(),
                        timestamp_ms: now,
                        data: json!({"blob": blob}),
                        labels: Default::default(),
                        sensitive: Default::default(),
                        owner: None,
                        broadcast: false,
                        trace: None,
                    },
                },
            );
            json!({
                "messageId": format!("m{i}"), "receiptHandle": format!("r{i}"),
                "body": serde_json::to_string(&task).unwrap(),
                "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:deliveries", "awsRegion": "us-east-1"
            })
        })
        .collect();
    let event = json!({"Records": records}).to_string();
    let emulator = RuntimeEmulator::start(event).await;
    let answer = emulator
        .invoke_path(&options.binary("sender"), &lambda_env(&table))
        .await;
    assert!(
        answer.body["batchItemFailures"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "{}",
        answer.body
    );
    // A deployed sender keeps its SSRF guard whatever its environment says, and this machine
    // has no public receiver: each body is built and signed, and the attempt is refused at
    // connect time (its retry queued), so the figure holds everything but the socket buffers.
    assert_eq!(
        receiver.received().len(),
        0,
        "the Lambda sender reached loopback"
    );
    section.line(format!(
        "measured, sender, batch of {batch} × 240 KiB (the template's batch size, or what Lambda's 6 MB payload holds) built, signed and refused at connect (loopback receiver; the Lambda guard holds): peak RSS {:.1} MB (goal ≤ 40 MB), {:.0} ms from exec to answer",
        answer.peak_rss_kib as f64 / 1024.0,
        ms(answer.answered)
    ));
    for name in FUNCTIONS.iter().chain(&["webhook-hub", "hello-lambda"]) {
        let size = std::fs::metadata(options.binary(name))
            .map(|m| m.len())
            .unwrap_or(0);
        section.line(format!(
            "measured, {name:>12}: {:>5.1} MB",
            size as f64 / 1e6
        ));
    }
    section
}
