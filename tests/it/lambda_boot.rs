//! Every built Lambda binary booted against a Lambda Runtime API emulator (the real
//! `lambda_runtime` loop, as in Lambda), on DynamoDB and SQS (moto), served its sample from
//! `events/`, with its answer asserted and the time from start to its first `next` printed.

use std::time::Duration;

use hub::adapters::dynamodb::DynamoStore;
use hub::adapters::sqs::SqsQueue;
use hub::model::SubscriptionStatus;
use hub::ports::Queue;
use hub::ports::Store;
use hub_tests::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_every_function_binary_answers_its_sample() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL must point at moto_server"
    );
    let name = unique("boot");
    let config = aws_config::load_from_env().await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), &name);
    store.ensure_table().await.unwrap();
    hub::runtime::ensure_kms_key(TEST_KMS_KEY).await.unwrap();
    let sqs = aws_sdk_sqs::Client::new(&config);
    for queue in ["events", "deliveries"] {
        SqsQueue::ensure(
            sqs.clone(),
            &format!("{name}-{queue}"),
            Duration::from_secs(30),
            3,
        )
        .await
        .unwrap();
    }
    let receiver = TestReceiver::scripted(|_, _| Reply::status(500)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    store
        .save(
            &sample_subscription(now, SubscriptionStatus::Pending, &receiver.url("/hook")),
            None,
        )
        .await
        .unwrap();

    // A subscription whose lease ended a minute ago: the sweeper, booted on the Scheduler's
    // sample, must find and remove it.
    let mut lapsed = sample_subscription(
        now - 3_600_000,
        SubscriptionStatus::Active,
        "https://hooks.example.com/lapsed",
    );
    lapsed.id = "sub_lapsed0000000000000000000".into();
    lapsed.expires_at_ms = now - 60_000;
    store.save(&lapsed, None).await.unwrap();
    let due = |subs: Vec<hub::model::Subscription>| subs.iter().any(|s| s.id == lapsed.id);
    assert!(due(store.due_for_sweep(now).await.unwrap()), "due before");

    let mut env = lambda_env(&name);
    env.push(("HUB_RETRY_SCHEDULE", "5s".into()));
    // A stray variable must not lift the SSRF guard of a deployed function: the sender refuses
    // the loopback receiver although this says it may reach it.
    env.push(("HUB_ALLOW_PRIVATE_TARGETS", "1".into()));
    // In an order where each sample finds what it needs: confirm activates the seeded
    // subscription, the sender then tries it (refused: a retry is queued), unsubscribe removes
    // it last.
    let order = [
        "subscribe",
        "manage",
        "confirm",
        "publish",
        "fanout",
        "sender",
        "fold",
        "sweeper",
        "unsubscribe",
    ];
    let mut lines = Vec::new();
    // The publish function runs traced: the span of its request must reach the collector before
    // it answers (the emulator stops the process as soon as it has the answer, as Lambda may
    // freeze it).
    let collector = TestReceiver::start().await;
    for function in order {
        let emulator = RuntimeEmulator::start(event_sample(function)).await;
        let mut env = env.clone();
        if function == "publish" {
            env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url("")));
        }
        let answer = emulator.invoke(function, &env).await;
        if function == "publish" {
            let spans = exported_spans(&collector);
            let publish = spans
                .iter()
                .find(|s| s.name == "POST /v1/events")
                .unwrap_or_else(|| {
                    panic!("the publish span was sent before the answer: {spans:?}")
                });
            assert_eq!(
                publish.trace_id, "6741a2b30a1b2c3d4e5f6a7b8c9d0e1f",
                "the sample's traceparent"
            );
            assert_eq!(publish.parent_span_id, "5c1d2e3f4a5b6c7d");
            assert_eq!(publish.service, "publish", "named after the function");
            assert_eq!(publish.attr("http.response.status_code"), "202");
        }
        assert_eq!(answer.kind, "response", "{function}: {:?}", answer.body);
        let status = answer.body["statusCode"].as_u64();
        let failures: Vec<String> = answer.body["batchItemFailures"]
            .as_array()
            .map(|f| {
                f.iter()
                    .map(|x| x["itemIdentifier"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        match function {
            "subscribe" => assert_eq!(status, Some(201), "{}", answer.body),
            "manage" | "confirm" => assert_eq!(status, Some(200), "{function}: {}", answer.body),
            "publish" => assert_eq!(status, Some(202), "{}", answer.body),
            "unsubscribe" => assert_eq!(status, Some(204), "{}", answer.body),
            "fanout" => {
                assert!(failures.is_empty(), "{}", answer.body);
                // What fan-out did, not only what it reported: the task for the sample's
                // subscription is on the deliveries queue.
                let deliveries = SqsQueue::open(sqs.clone(), &format!("{name}-deliveries"))
                    .await
                    .unwrap();
                let queued = deliveries
                    .receive(10, Duration::from_secs(1))
                    .await
                    .unwrap();
                let tasks: Vec<Value> = queued
                    .iter()
                    .map(|m| serde_json::from_str(&m.body).unwrap())
                    .filter(|t: &Value| t["payload"]["kind"] == "event")
                    .collect();
                assert_eq!(tasks.len(), 1, "{tasks:?}");
                assert_eq!(tasks[0]["subscription_id"], SAMPLE_SUB);
            }
            "sender" => {
                assert!(failures.is_empty(), "the retry was queued: {}", answer.body);
                let log = store.attempts(SAMPLE_SUB, 10).await.unwrap();
                assert_eq!(log.len(), 1, "{log:?}");
                assert_eq!(log[0].error.map(|e| e.as_str()), Some("forbidden_target"));
                let emf = emf_documents(&answer.stdout);
                let attempts = emf
                    .iter()
                    .find(|d| d.get("delivery_attempts").is_some())
                    .unwrap_or_else(|| panic!("an EMF line for the attempt: {}", answer.stdout));
                assert_eq!(attempts["delivery_attempts"], 1);
                assert_eq!(attempts["outcome"], "failed");
                assert_eq!(
                    attempts["_aws"]["CloudWatchMetrics"][0]["Namespace"],
                    "webhook-hub"
                );
                assert!(emf.iter().any(|d| d["delivery_attempt_seconds"].is_array()));
            }
            "fold" => {
                assert_eq!(answer.body["attempts"], 1, "{}", answer.body);
                let sub = store.get(SAMPLE_SUB).await.unwrap().unwrap();
                assert_eq!(sub.odometer, 1, "the sample's success is on the odometer");
            }
            "sweeper" => {
                assert_eq!(answer.body["removed"], 1, "{}", answer.body);
                assert!(
                    !due(store.due_for_sweep(now).await.unwrap()),
                    "the lapsed subscription's item is gone, not only unread"
                );
            }
            _ => unreachable!(),
        }
        lines.push(format!(
            "{function:>11}: first next after {:>6.1} ms, answered after {:>7.1} ms",
            answer.first_next.as_secs_f64() * 1000.0,
            answer.answered.as_secs_f64() * 1000.0
        ));
    }
    assert!(
        receiver.received().is_empty(),
        "the Lambda sender reached a loopback receiver: HUB_ALLOW_PRIVATE_TARGETS lifted its guard"
    );
    assert!(
        store.get(SAMPLE_SUB).await.unwrap().is_none(),
        "unsubscribe removed it"
    );
    let which = match std::env::var("HUB_LAMBDA_ARTIFACTS") {
        Ok(dir) => format!(
            "the artifacts in {dir}, run by `{}`",
            std::env::var("HUB_LAMBDA_RUNNER").unwrap_or_default()
        ),
        Err(_) => "debug build".to_string(),
    };
    println!(
        "Lambda binaries under the Runtime API emulator ({which}):\n{}",
        lines.join("\n")
    );
}

/// The Embedded Metric Format documents among a function's stdout lines, each checked against
/// the EMF specification's JSON schema (`tests/fixtures/emf.schema.json`, by Python's
/// `jsonschema`) and its target-member rules: every dimension named is a string member, every
/// metric a number or an array of at most 100 numbers.
fn emf_documents(stdout: &str) -> Vec<Value> {
    let documents: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|d| d.get("_aws").is_some())
        .collect();
    let script = r#"
import sys, json, jsonschema
schema = json.load(open(sys.argv[1]))
for doc in json.load(sys.stdin):
    jsonschema.validate(doc, schema)
    for directive in doc["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            for name in dimension_set:
                assert isinstance(doc.get(name), str), f"dimension {name} is not a string member"
        for metric in directive["Metrics"]:
            value = doc.get(metric["Name"])
            values = value if isinstance(value, list) else [value]
            assert 1 <= len(values) <= 100, f"{metric['Name']}: {value}"
            assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values), metric
print("ok")
"#;
    let schema = workspace_root().join("tests/fixtures/emf.schema.json");
    let script = format!(
        "import sys; sys.argv = ['emf', {:?}]\n{script}",
        schema.to_string_lossy()
    );
    let out = venv_python(&script, &serde_json::to_vec(&documents).unwrap());
    assert_eq!(String::from_utf8_lossy(&out).trim(), "ok");
    documents
}
