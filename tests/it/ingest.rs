//! Publishing from inside AWS without the API, on SQS and EventBridge (moto): producers send the
//! publish body to the ingest queue (`SendMessageBatch`), or put events on the bus whose rule
//! targets the bus queue (set up with boto3, the AWS SDK for Python, from the test venv). Valid
//! messages reach exactly their account's subscribers, once per producer `id`; invalid ones,
//! reserved topics and unknown publishers are dead-lettered, never delivered.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use hub::adapters::sqs::SqsQueue;
use hub::ports::{Queue, ReceivedMessage};
use hub::service::ingest::IngestSource;
use hub_tests::*;
use serde_json::json;

/// moto's `SenderId` for every message (a fixed IAM user id).
const MOTO_SENDER: &str = "AIDAIT2UOQQY3AUEKVGXU";

/// Waits until the hub's log holds `n` lines containing `needle` (a copy that met another's
/// claim of its producer id looks again after the claim's 30 s lease at most).
async fn logged(hub: &HubProcess, needle: &str, n: usize) {
    let found = within(WAIT * 2, || async {
        (hub.log().matches(needle).count() >= n).then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "never logged {n}× {needle}:\n{}",
        hub.log()
    );
}

/// Everything waiting on `queue` now.
async fn drain(queue: &SqsQueue, at_least: usize) -> Vec<ReceivedMessage> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < at_least && Instant::now() < deadline {
        got.extend(queue.receive(10, Duration::from_secs(1)).await.unwrap());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_producers_publish_through_sqs_and_eventbridge() {
    let name = unique("ingest");
    let (direct, bus) = (format!("{name}-ingest"), format!("{name}-bus"));
    let hub = HubProcess::start_on(
        Backend::Aws,
        &name,
        &[],
        &[
            ("HUB_INGEST_QUEUE", &direct),
            ("HUB_BUS_INGEST_QUEUE", &bus),
            ("HUB_INGEST_SENDERS", &format!("{MOTO_SENDER}=acme")),
        ],
    )
    .await;
    let acme = TestReceiver::start().await;
    let secret = subscribe_confirmed(&hub, &acme, KEY_A, "/acme", json!({})).await["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let beta = TestReceiver::start().await;
    subscribe_confirmed(&hub, &beta, KEY_B, "/beta", json!({})).await;
    // A subscription of acme's customer-42: it gets only the events addressed to customer-42.
    let customer = TestReceiver::start().await;
    subscribe_confirmed(
        &hub,
        &customer,
        KEY_A,
        "/c42",
        json!({"owner": "customer-42"}),
    )
    .await;

    // Straight to the ingest queue, as a producer with IAM rights on it would.
    let sqs = aws_sdk_sqs::Client::new(&aws_config::load_from_env().await);
    let ingest = SqsQueue::open(sqs.clone(), &direct).await.unwrap();
    let bodies = [
        json!({"topic": "door.request.allowed", "data": {"n": 1}, "id": "k1"}).to_string(),
        json!({"topic": "door.request.allowed", "data": {"n": 2}, "id": "k1"}).to_string(),
        json!({"topic": "door.request.allowed", "data": {"n": 6}, "owner": "customer-42"})
            .to_string(),
        json!({"topic": "bad topic!", "data": {}}).to_string(),
        json!({"topic": "hub.delivery.exhausted", "data": {}}).to_string(),
        "not json".to_string(),
    ];
    let entries = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(body)
                .build()
                .unwrap()
        })
        .collect();
    sqs.send_message_batch()
        .queue_url(ingest_url(&sqs, &direct).await)
        .set_entries(Some(entries))
        .send()
        .await
        .unwrap();

    // The two messages with producer id k1 came in one batch: whichever was claimed first is
    // the one published.
    let first = acme
        .wait_for_match(WAIT, |r| {
            r.path == "/acme" && [1, 2].contains(&r.json()["data"]["n"].as_i64().unwrap_or(0))
        })
        .await;
    assert!(first.header("webhook-id").starts_with("evt_"));
    assert!(verify_standard(&secret, &first), "signed like any delivery");
    assert_eq!(first.json()["account"], "acme", "the sender's account");
    let dead = drain(&ingest.dead_letter_queue().await.unwrap(), 3).await;
    let refused: Vec<&str> = dead.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    for body in &bodies[3..] {
        assert!(refused.contains(&body.as_str()), "{body} dead-lettered");
    }
    logged(
        &hub,
        "\"ingest message refused: to the dead-letter queue\"",
        3,
    )
    .await;
    logged(&hub, "\"ingested message repeats a published id\"", 1).await;

    // Through the bus: its rule sends `webhook-hub.*` events to the bus queue.
    let script = r#"
import sys, json, boto3
name, queue_arn = sys.argv[1], sys.argv[2]
events = boto3.client("events")
events.create_event_bus(Name=name)
events.put_rule(Name="to-hub", EventBusName=name,
                EventPattern=json.dumps({"source": [{"prefix": "webhook-hub."}]}))
events.put_targets(Rule="to-hub", EventBusName=name, Targets=[{"Id": "hub", "Arn": queue_arn}])
entries = [
    {"Source": "webhook-hub.acme", "DetailType": "door.request.allowed", "Detail": json.dumps({"data": {"n": 3}})},
    {"Source": "webhook-hub.beta", "DetailType": "door.request.allowed", "Detail": json.dumps({"data": {"n": 4}})},
    {"Source": "webhook-hub.acme", "DetailType": "door request", "Detail": json.dumps({"data": {"n": 5}})},
    {"Source": "webhook-hub.acme", "DetailType": "door.request.allowed", "Detail": json.dumps({"data": {"n": 7}, "owner": "customer-42"})},
]
for entry in entries:
    entry["EventBusName"] = name
out = events.put_events(Entries=entries)
print(out["FailedEntryCount"])
"#;
    let arn = format!("arn:aws:sqs:us-east-1:123456789012:{bus}");
    let script = format!("import sys; sys.argv = ['bus', {name:?}, {arn:?}]\n{script}");
    let failed = venv_python(&script, b"");
    assert_eq!(String::from_utf8_lossy(&failed).trim(), "0");
    acme.wait_for_match(WAIT, |r| r.path == "/acme" && r.json()["data"]["n"] == 3)
        .await;
    let to_beta = beta
        .wait_for_match(WAIT, |r| r.path == "/beta" && r.json()["data"]["n"] == 4)
        .await;
    assert_eq!(to_beta.json()["account"], "beta", "the source's account");
    logged(
        &hub,
        "\"ingest message refused: to the dead-letter queue\"",
        4,
    )
    .await;

    // Both paths carry the owner: customer-42's subscription gets exactly its two events.
    customer
        .wait_until_events(WAIT, |seen| events_at(seen, "/c42").len() >= 2)
        .await;
    acme.wait_until_events(WAIT, |seen| events_at(seen, "/acme").len() >= 4)
        .await;
    let to_customer = customer.received();
    let to_customer = events_at(&to_customer, "/c42");
    let mut numbers: Vec<i64> = to_customer
        .iter()
        .map(|r| r.json()["data"]["n"].as_i64().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(numbers, [6, 7]);
    assert!(
        to_customer
            .iter()
            .all(|r| r.json()["owner"] == "customer-42")
    );

    // Each account got only its own, once.
    let mut acme_events: Vec<i64> = events_at(&acme.received(), "/acme")
        .iter()
        .map(|r| r.json()["data"]["n"].as_i64().unwrap())
        .collect();
    acme_events.sort();
    assert_eq!(
        acme_events.len(),
        4,
        "k1's repeat is not delivered: {acme_events:?}"
    );
    assert!(
        [1, 2].contains(&acme_events[0]) && acme_events[1..] == [3, 6, 7],
        "{acme_events:?}"
    );
    let beta_events: Vec<i64> = events_at(&beta.received(), "/beta")
        .iter()
        .map(|r| r.json()["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(beta_events, [4]);
}

async fn ingest_url(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.get_queue_url()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

/// A sender no account is mapped to publishes nothing: refused for good, not retried.
#[tokio::test]
async fn an_unknown_sender_is_refused_for_good() {
    let settings = hub::Settings {
        ingest_senders: [("AIDAKNOWN".to_string(), "acme".to_string())].into(),
        ..hub::Settings::default()
    };
    let (hub, _) = hub::runtime::memory_hub(settings);
    let msg = |sender: &str, body: &str| ReceivedMessage {
        id: "m-1".into(),
        body: body.into(),
        sender: Some(sender.into()),
        ..Default::default()
    };
    let body = json!({"topic": "door.opened", "data": {}}).to_string();
    let err = hub
        .ingest(IngestSource::Direct, &msg("AIDASTRANGER", &body))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unknown_publisher");
    assert!(!err.is_transient());
    // A role's session does not matter, only the role.
    hub.ingest(IngestSource::Direct, &msg("AIDAKNOWN:session-1", &body))
        .await
        .unwrap();
    let err = hub
        .ingest(
            IngestSource::Bus,
            &msg("events", &json!({"source": "someone.else", "detail-type": "door.opened", "detail": {"data": {}}}).to_string()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unknown_publisher");
}

/// A producer's trace context rides on an ingest message (a `traceparent` message attribute, or
/// the `AWSTraceHeader` X-Ray sets): the event it publishes carries that trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_ingested_events_carry_their_producers_trace() {
    use aws_sdk_sqs::types::{
        MessageAttributeValue, MessageSystemAttributeNameForSends, MessageSystemAttributeValue,
    };
    let name = unique("ingtrace");
    let direct = format!("{name}-ingest");
    let hub = HubProcess::start_on(
        Backend::Aws,
        &name,
        &[],
        &[
            ("HUB_INGEST_QUEUE", &direct),
            ("HUB_INGEST_SENDERS", &format!("{MOTO_SENDER}=acme")),
        ],
    )
    .await;
    let acme = TestReceiver::start().await;
    subscribe_confirmed(&hub, &acme, KEY_A, "/acme", json!({})).await;
    let sqs = aws_sdk_sqs::Client::new(&aws_config::load_from_env().await);
    SqsQueue::open(sqs.clone(), &direct).await.unwrap();
    let url = ingest_url(&sqs, &direct).await;
    sqs.send_message()
        .queue_url(&url)
        .message_body(json!({"topic": "door.request.allowed", "data": {"n": 1}}).to_string())
        .message_attributes(
            "traceparent",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    sqs.send_message()
        .queue_url(&url)
        .message_body(json!({"topic": "door.request.allowed", "data": {"n": 2}}).to_string())
        .message_system_attributes(
            MessageSystemAttributeNameForSends::AwsTraceHeader,
            MessageSystemAttributeValue::builder()
                .data_type("String")
                .string_value(
                    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    for (n, trace) in [
        (1, "4bf92f3577b34da6a3ce929d0e0e4736"),
        (2, "5759e988bd862e3fe1be46a994272793"),
    ] {
        let delivered = acme
            .wait_for_match(WAIT, |r| r.path == "/acme" && r.json()["data"]["n"] == n)
            .await;
        let id = delivered.header("webhook-id").to_string();
        let read = eventually(WAIT, "the event in the history", || async {
            let read = hub
                .call("GET", &format!("/v1/events/{id}"), Some(KEY_A), None)
                .await;
            (read.status == 200).then_some(read.body)
        })
        .await;
        assert_eq!(read["trace_id"], trace, "{read}");
    }
}
