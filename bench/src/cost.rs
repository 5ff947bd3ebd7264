//! Figure 6: AWS cost per million deliveries, computed from the calls the hub's code was counted
//! making on moto, the log bytes it wrote, the measured handler durations at the template's
//! memory sizes, and list prices. Every scenario is a run of its own: publishing one event per
//! HTTP request or ten per request, one subscriber per event or ten (measured, not
//! extrapolated), a receiver answering in 100 ms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hub::Hub;
use hub::adapters::CallCounter;
use hub::adapters::dynamodb::DynamoStore;
use hub::adapters::http::HttpTransport;
use hub::adapters::sqs::SqsQueue;
use hub::api::{ApiRequest, Operation, handle};
use hub::auth::Caller;
use hub::keyring::Keyring;
use hub::model::SubscriptionStatus;
use hub::ports::Store;
use hub::runtime::consume::{QueueRole, consume_batch, queue_of};
use hub::runtime::{aws_clients, memory_hub};
use hub_tests::{Reply, TestReceiver, sample_subscription, unique};
use serde_json::json;

use crate::{Options, Section};

/// The KMS key (on moto) the benchmark's data keys are wrapped by.
const BENCH_KMS_KEY: &str = "alias/webhook-hub-bench";
/// KMS per request ($0.03 per 10,000).
const KMS_REQUEST: f64 = 0.03 / 1e4;

/// us-east-1 list prices (2026): API Gateway HTTP API per request.
const API_GATEWAY: f64 = 1.00 / 1e6;
/// Lambda per request.
const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
/// Lambda arm64 per GB-second.
const LAMBDA_GB_S: f64 = 0.000_013_333_4;
/// SQS standard per request (64 KB chunk).
const SQS_REQUEST: f64 = 0.40 / 1e6;
/// DynamoDB on-demand per write request unit (1 KB).
const DDB_WRITE: f64 = 0.625 / 1e6;
/// DynamoDB on-demand per read request unit (4 KB strongly consistent, or 2 × 4 KB eventually).
const DDB_READ: f64 = 0.125 / 1e6;
/// CloudWatch Logs ingestion per byte ($0.50 per GB).
const LOG_INGEST: f64 = 0.50 / 1e9;
/// The Lambda platform's own records per invocation (`START`, `END`, `REPORT`), bytes, when the
/// function's system log level lets them through (INFO): about 350 bytes.
const PLATFORM_LOG_BYTES: f64 = 350.0;

/// What `template.yaml` sets for one function: memory (GB) and, for a queue- or
/// stream-triggered one, the event source's batch size and filter. Read from the template, so
/// the bill follows what is deployed.
struct Deployed {
    memory_gb: f64,
    batch: usize,
    /// The event source's filter pattern (the fold's), as JSON.
    filter: Option<serde_json::Value>,
}

/// The template's settings of what a delivery goes through.
struct Template {
    /// Publish, fan-out, sender and fold, in that order.
    functions: [Deployed; 4],
    /// Whether the platform's own records are sent (system log level INFO or DEBUG).
    platform_lines: bool,
    /// The functions' application log level (the `LogLevel` parameter's default).
    log_level: String,
    /// Who folds the odometer (the sender's `HUB_ODOMETER_FOLD`).
    odometer_fold: hub::context::OdometerFold,
}

/// The sender's event-source batch size in `template.yaml`.
pub fn sender_batch() -> usize {
    deployed().functions[2].batch
}

/// The template, read once.
fn deployed() -> &'static Template {
    static DEPLOYED: std::sync::OnceLock<Template> = std::sync::OnceLock::new();
    DEPLOYED.get_or_init(read_template)
}

fn read_template() -> Template {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let text = std::fs::read_to_string(&path).expect("template.yaml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("template.yaml parses");
    let globals = &doc["Globals"]["Function"];
    let memory = |f: &serde_yaml::Value| {
        f["MemorySize"]
            .as_u64()
            .or_else(|| globals["MemorySize"].as_u64())
            .expect("a memory size") as f64
            / 1000.0
    };
    let function = |name: &str, source: &str| {
        let props = &doc["Resources"][name]["Properties"];
        let source = &props["Events"][source]["Properties"];
        Deployed {
            memory_gb: memory(props),
            batch: source["BatchSize"].as_u64().unwrap_or(1) as usize,
            filter: source["FilterCriteria"]["Filters"][0]["Pattern"]
                .as_str()
                .map(|p| serde_json::from_str(p).expect("a JSON filter pattern")),
        }
    };
    let system_level = globals["LoggingConfig"]["SystemLogLevel"]
        .as_str()
        .unwrap_or("INFO");
    let sender_env = &doc["Resources"]["SenderFunction"]["Properties"]["Environment"]["Variables"];
    Template {
        functions: [
            function("PublishFunction", "Publish"),
            function("FanoutFunction", "Events"),
            function("SenderFunction", "Deliveries"),
            function("FoldFunction", "DeliveryLog"),
        ],
        platform_lines: system_level != "WARN",
        log_level: doc["Parameters"]["LogLevel"]["Default"]
            .as_str()
            .unwrap_or("INFO")
            .to_ascii_lowercase(),
        odometer_fold: match sender_env["HUB_ODOMETER_FOLD"].as_str() {
            Some("stream") => hub::context::OdometerFold::Stream,
            _ => hub::context::OdometerFold::Batch,
        },
    }
}

/// Whether a stream record passes an event filter pattern as Lambda applies it: every key of
/// the pattern present, a list matching when one of its values (or `{"prefix": …}`) does.
fn matches(pattern: &serde_json::Value, record: &serde_json::Value) -> bool {
    use serde_json::Value;
    match pattern {
        Value::Object(fields) => fields
            .iter()
            .all(|(key, inner)| record.get(key).is_some_and(|r| matches(inner, r))),
        Value::Array(options) => options.iter().any(|option| match option {
            Value::Object(rule) => match (rule.get("prefix"), record.as_str()) {
                (Some(Value::String(prefix)), Some(text)) => text.starts_with(prefix.as_str()),
                _ => false,
            },
            value => value == record,
        }),
        value => value == record,
    }
}

type Calls = std::collections::BTreeMap<String, u64>;

/// Counts the bytes and lines the hub's logger writes (what CloudWatch Logs would ingest) and
/// keeps one line of each kind to show.
#[derive(Clone, Default)]
struct LogMeter {
    bytes: Arc<AtomicU64>,
    samples: Arc<Mutex<Vec<String>>>,
}

impl std::io::Write for LogMeter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        let text = String::from_utf8_lossy(buf);
        let mut samples = self.samples.lock().unwrap();
        for kind in [
            "\"message\":\"request\"",
            "\"message\":\"delivery attempt\"",
            "\"_aws\"",
        ] {
            if text.contains(kind) && !samples.iter().any(|s| s.contains(kind)) {
                samples.push(text.trim_end().to_string());
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogMeter {
    type Writer = LogMeter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl LogMeter {
    fn bytes(&self) -> f64 {
        self.bytes.load(Ordering::Relaxed) as f64
    }
}

/// What one phase (a function) did: its invocations, their mean duration, the calls it made and
/// the log bytes it wrote.
#[derive(Default)]
struct Phase {
    invocations: f64,
    messages: f64,
    mean_ms: f64,
    calls: Calls,
    log_bytes: f64,
}

impl Phase {
    fn calls(&self, op: &str) -> f64 {
        self.calls.get(op).copied().unwrap_or(0) as f64
    }
}

/// One measured scenario.
struct Run {
    deliveries: f64,
    publish: Phase,
    fanout: Phase,
    sender: Phase,
    fold: Phase,
    sub_item_bytes: usize,
    /// The delivery log as written: its items and their write units (1 KB each, rounded up
    /// per item), measured from the items in the table.
    log_items: f64,
    log_wru: f64,
    /// The event history as written (fan-out's `BatchWriteItem`s): its items and their write
    /// units, measured from the items in the table.
    history_items: f64,
    history_wru: f64,
    /// Events published in the run.
    events: f64,
}

fn since(before: &Calls, after: &Calls) -> Calls {
    after
        .iter()
        .map(|(op, n)| (op.clone(), n - before.get(op).copied().unwrap_or(0)))
        .collect()
}

/// Publishes `events` events through the publish function's handler (`per_request` per HTTP
/// request), then runs the fan-out and sender handlers over the queues in batches of 10, with
/// `fan_out` subscribers per event; everything counted.
/// `per_request` meaning "published straight to the ingest queue", not through the API.
const DIRECT: usize = 0;
/// The `SenderId` moto records for every message: mapped to the bench's account.
const MOTO_SENDER: &str = "AIDAIT2UOQQY3AUEKVGXU";

async fn measure(
    events: usize,
    per_request: usize,
    fan_out: usize,
    delivery_log: hub::context::DeliveryLog,
    max_per_second: Option<u32>,
    counter: &CallCounter,
    logs: &LogMeter,
) -> Run {
    let (dynamo, sqs) = aws_clients(Some(counter)).await;
    let sqs_for_producer = sqs.clone();
    let name = unique("bench-cost");
    let store = DynamoStore::new(dynamo, &name);
    store.ensure_table().await.expect("table");
    let store: Arc<dyn Store> = Arc::new(store);
    // Secrets sealed as deployed: data keys wrapped by a KMS key (moto's), its calls counted.
    hub::runtime::ensure_kms_key(BENCH_KMS_KEY)
        .await
        .expect("KMS key");
    let kms_keyring = || async {
        Arc::new(Keyring::new(
            Arc::new(hub::runtime::kms_master_key(BENCH_KMS_KEY, Some(counter)).await),
            store.clone(),
        ))
    };
    let seeding = kms_keyring().await;
    let events_queue = SqsQueue::ensure(
        sqs.clone(),
        &format!("{name}-events"),
        Duration::from_secs(180),
        5,
    )
    .await
    .unwrap();
    let deliveries_queue: Arc<dyn hub::ports::Queue> = Arc::new(
        SqsQueue::ensure(
            sqs,
            &format!("{name}-deliveries"),
            Duration::from_secs(180),
            7,
        )
        .await
        .unwrap(),
    );
    let receiver = TestReceiver::scripted(|_, _| Reply {
        delay: Duration::from_millis(100),
        ..Reply::status(200)
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut sub_item_bytes = 0;
    for n in 0..fan_out {
        let mut sub = sample_subscription(
            now,
            SubscriptionStatus::Active,
            &receiver.url(&format!("/cost/{n}")),
        );
        sub.id = format!("sub_{now:012x}{n:016x}");
        sub.max_per_second = max_per_second;
        sub.secret = seeding
            .seal(&hub::signing::generate_secret(), &sub.id)
            .await
            .unwrap();
        sub_item_bytes = serde_json::to_string(&sub).unwrap().len() + 200;
        store.save(&sub, None).await.unwrap();
    }
    let (memory, _) = memory_hub(hub::Settings {
        delivery_log,
        odometer_fold: deployed().odometer_fold,
        ingest_senders: [(MOTO_SENDER.to_string(), "acme".to_string())].into(),
        ..Default::default()
    });
    let mut hub = Hub {
        // A fresh keyring, as a cold function has: its first delivery unwraps the data key.
        keys: kms_keyring().await,
        store: store.clone(),
        events: Arc::new(events_queue),
        ordered: deliveries_queue.clone(),
        deliveries: deliveries_queue,
        transport: Arc::new(HttpTransport::new(true, Duration::from_secs(5), false)),
        ..memory
    };
    let direct = per_request == DIRECT;
    if direct {
        let ingest = SqsQueue::ensure(
            sqs_for_producer.clone(),
            &format!("{name}-ingest"),
            Duration::from_secs(180),
            5,
        )
        .await
        .unwrap();
        hub.ingest.direct = Some(Arc::new(ingest));
    }
    let caller = Caller::of_account("acme", "acme", None);

    // publish λ: its handler, request by request, as API Gateway invokes it.
    let (c0, l0) = (counter.snapshot(), logs.bytes());
    let started = Instant::now();
    // 600 characters of hex digits that differ from event to event: they compress about 2:1,
    // worse than most real payloads, so the history's compressed items are not flattered.
    let pad = |n: usize| {
        (0..10)
            .map(|i| hub::signing::sha256_hex(format!("{n}.{i}").as_bytes()))
            .collect::<String>()[..600]
            .to_string()
    };
    let event = |n: usize| json!({"topic": "door.request.allowed", "data": {"door": "4711", "n": n, "pad": pad(n)}});
    let mut requests = 0;
    if direct {
        // A producer inside AWS: SendMessageBatch of publish bodies, ten at a time, to the
        // ingest queue (no API Gateway, no publish function).
        let ingest = hub.ingest.direct.clone().expect("set above");
        for first in (0..events).step_by(10) {
            let messages = (first..(first + 10).min(events))
                .map(|n| hub::ports::OutgoingMessage {
                    body: event(n).to_string(),
                    delay: Duration::ZERO,
                    group: None,
                })
                .collect();
            ingest.send(messages).await.unwrap();
        }
    }
    for first in (0..events).step_by(per_request.max(1)) {
        if direct {
            break;
        }
        let last = (first + per_request).min(events);
        let body = if per_request == 1 {
            event(first)
        } else {
            json!({"events": (first..last).map(event).collect::<Vec<_>>()})
        };
        let request = ApiRequest {
            method: http::Method::POST,
            path: "/v1/events".into(),
            query: None,
            body: Bytes::from(body.to_string()),
            request_id: format!("req-{first}"),
            bearer: None,
            traceparent: None,
        };
        let response = handle(&hub, &[Operation::Publish], request, Some(caller.clone())).await;
        hub::runtime::lambda::flush_metrics_to(logs.clone());
        assert!(
            [200, 202].contains(&response.status().as_u16()),
            "published: {:?}",
            response.body()
        );
        requests += 1;
    }
    let publish = Phase {
        invocations: requests as f64,
        messages: events as f64,
        mean_ms: started.elapsed().as_secs_f64() * 1000.0 / requests.max(1) as f64,
        calls: since(&c0, &counter.snapshot()),
        log_bytes: logs.bytes() - l0,
    };
    let [_, fanout_fn, sender_fn, fold_fn] = &deployed().functions;
    let fanout = run_batches(
        &hub,
        if direct {
            QueueRole::Ingest(hub::service::ingest::IngestSource::Direct)
        } else {
            QueueRole::Events
        },
        events,
        fanout_fn.batch,
        counter,
        logs,
    )
    .await;
    let sender = if max_per_second.is_some() {
        run_paced_batches(&hub, events * fan_out, sender_fn.batch, counter, logs).await
    } else {
        run_batches(
            &hub,
            QueueRole::Deliveries,
            events * fan_out,
            sender_fn.batch,
            counter,
            logs,
        )
        .await
    };
    assert_eq!(
        receiver.received().len(),
        events * fan_out,
        "every delivery made"
    );
    let fold = run_fold(&hub, &name, fold_fn, counter, logs).await;
    let (log_items, log_wru) = delivery_log_units(&name, now, fan_out).await;
    let (history_items, history_wru) = history_units(&name, now).await;
    for n in 0..fan_out {
        let sub = hub
            .store
            .get(&format!("sub_{now:012x}{n:016x}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            sub.odometer, events as u64,
            "every odometer exact after the fold"
        );
    }
    Run {
        deliveries: (events * fan_out) as f64,
        publish,
        fanout,
        sender,
        fold,
        sub_item_bytes,
        log_items,
        log_wru,
        history_items,
        history_wru,
        events: events as f64,
    }
}

/// What DynamoDB bills a put of `item` in write units: its size (attribute names and values)
/// in 1 KB units, rounded up.
fn item_wru(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
) -> f64 {
    use aws_sdk_dynamodb::types::AttributeValue;
    let size = |value: &AttributeValue| match value {
        AttributeValue::S(text) => text.len(),
        AttributeValue::N(number) => number.len().div_ceil(2) + 1,
        AttributeValue::B(bytes) => bytes.as_ref().len(),
        _ => 1,
    };
    let bytes: usize = item
        .iter()
        .map(|(name, value)| name.len() + size(value))
        .sum();
    bytes.div_ceil(1024) as f64
}

/// The event-history items of the run's account (`acme`, today's and tomorrow's partitions) and
/// the write units their puts consumed. Read with an uncounted client.
async fn history_units(table: &str, now: i64) -> (f64, f64) {
    use aws_sdk_dynamodb::types::AttributeValue;
    let (dynamo, _) = aws_clients(None).await;
    let (mut items, mut units) = (0.0, 0.0);
    let day = now.div_euclid(hub::adapters::dynamodb::HISTORY_PARTITION_MS);
    for d in [day, day + 1] {
        let mut pages = dynamo
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(format!("EVT#acme#{d}")))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for item in page.expect("the history").items.unwrap_or_default() {
                items += 1.0;
                units += item_wru(&item);
            }
        }
    }
    (items, units)
}

/// The delivery-log items of the run's subscriptions and the write units their puts consumed:
/// DynamoDB bills a put by the item's size (attribute names and values) in 1 KB units, so an
/// item holding a batch's attempts costs more than one unit. Read with an uncounted client.
async fn delivery_log_units(table: &str, now: i64, fan_out: usize) -> (f64, f64) {
    use aws_sdk_dynamodb::types::AttributeValue;
    let (dynamo, _) = aws_clients(None).await;
    let (mut items, mut units) = (0.0, 0.0);
    for n in 0..fan_out {
        let mut pages = dynamo
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :att)")
            .expression_attribute_values(
                ":pk",
                AttributeValue::S(format!("SUB#sub_{now:012x}{n:016x}")),
            )
            .expression_attribute_values(":att", AttributeValue::S("ATT#".into()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for item in page.expect("the delivery log").items.unwrap_or_default() {
                items += 1.0;
                units += item_wru(&item);
            }
        }
    }
    (items, units)
}

/// The fold function over the table's stream on moto: the records its event source's filter
/// passes (the template's pattern, applied as Lambda applies it: filtered records are neither
/// handed over nor billed), in batches of the template's size, through its handler. Lambda's
/// reads of the stream are free, so the tap's own calls are not counted.
async fn run_fold(
    hub: &Hub,
    table: &str,
    fold_fn: &Deployed,
    counter: &CallCounter,
    logs: &LogMeter,
) -> Phase {
    let mut tap = hub_tests::StreamTap::open(table).await;
    let filter = fold_fn.filter.clone().unwrap_or(serde_json::Value::Null);
    let records: Vec<serde_json::Value> = tap
        .records()
        .await
        .into_iter()
        .filter(|r| filter.is_null() || matches(&filter, r))
        .collect();
    let mut phase = Phase::default();
    let mut total_ms = 0.0;
    for batch in records.chunks(fold_fn.batch.max(1)) {
        let (before, bytes) = (counter.snapshot(), logs.bytes());
        let started = Instant::now();
        hub::runtime::lambda::fold_handler(hub, json!({"Records": batch}))
            .await
            .expect("the fold's batch");
        hub::runtime::lambda::flush_metrics_to(logs.clone());
        total_ms += started.elapsed().as_secs_f64() * 1000.0;
        for (op, n) in since(&before, &counter.snapshot()) {
            *phase.calls.entry(op).or_default() += n;
        }
        phase.log_bytes += logs.bytes() - bytes;
        phase.invocations += 1.0;
        phase.messages += batch.len() as f64;
    }
    phase.mean_ms = total_ms / phase.invocations.max(1.0);
    phase
}

/// Consumes `count` messages of one queue in batches of `batch` through the function's own batch
/// handler path ([`consume_batch`]); the event source's part (receiving, deleting) is left out
/// of the counts and modelled.
async fn run_batches(
    hub: &Hub,
    role: QueueRole,
    count: usize,
    batch: usize,
    counter: &CallCounter,
    logs: &LogMeter,
) -> Phase {
    let queue = queue_of(hub, role);
    let mut phase = Phase::default();
    let (mut total_ms, mut done) = (0.0, 0);
    while done < count {
        // As the event source fills a batch: receives of up to 10 until it holds `batch`.
        let mut msgs = Vec::new();
        while msgs.len() < batch.min(count - done) {
            let got = queue
                .receive((batch - msgs.len()).min(10), Duration::from_secs(1))
                .await
                .unwrap();
            msgs.extend(got);
        }
        let (before, bytes) = (counter.snapshot(), logs.bytes());
        let started = Instant::now();
        let results = consume_batch(hub, role, &msgs).await;
        // The function writes its EMF lines before it answers: they are part of its log bytes.
        hub::runtime::lambda::flush_metrics_to(logs.clone());
        total_ms += started.elapsed().as_secs_f64() * 1000.0;
        for (op, n) in since(&before, &counter.snapshot()) {
            *phase.calls.entry(op).or_default() += n;
        }
        phase.log_bytes += logs.bytes() - bytes;
        for (m, ok) in msgs.iter().zip(results) {
            assert!(ok, "{role:?} message processed");
            queue.ack(&m.receipt).await.unwrap();
        }
        phase.invocations += 1.0;
        phase.messages += msgs.len() as f64;
        done += msgs.len();
    }
    phase.mean_ms = total_ms / phase.invocations.max(1.0);
    phase
}

/// Consumes the deliveries queue of a paced subscription as the sender's event source does: a
/// batch is what arrived within the template's batching window (1 s), up to `batch`. Messages
/// that could not book a slot are hidden until theirs and come back in a later batch: each of
/// their receives is counted as a message handed over (the event source's calls), each batch
/// as an invocation, and each batch's time includes its waits for booked slots.
async fn run_paced_batches(
    hub: &Hub,
    count: usize,
    batch: usize,
    counter: &CallCounter,
    logs: &LogMeter,
) -> Phase {
    let queue = queue_of(hub, QueueRole::Deliveries);
    let mut phase = Phase::default();
    let (mut total_ms, mut removed) = (0.0, 0);
    let deadline = Instant::now() + Duration::from_secs(600);
    while removed < count {
        assert!(
            Instant::now() < deadline,
            "paced deliveries all made in time"
        );
        let mut msgs = Vec::new();
        while msgs.len() < batch {
            let got = queue
                .receive((batch - msgs.len()).min(10), Duration::from_secs(1))
                .await
                .unwrap();
            if got.is_empty() && !msgs.is_empty() {
                break;
            }
            msgs.extend(got);
        }
        let (before, bytes) = (counter.snapshot(), logs.bytes());
        let started = Instant::now();
        let results = consume_batch(hub, QueueRole::Deliveries, &msgs).await;
        hub::runtime::lambda::flush_metrics_to(logs.clone());
        total_ms += started.elapsed().as_secs_f64() * 1000.0;
        for (op, n) in since(&before, &counter.snapshot()) {
            *phase.calls.entry(op).or_default() += n;
        }
        phase.log_bytes += logs.bytes() - bytes;
        for (m, ok) in msgs.iter().zip(results) {
            // Not removed: hidden until its slot (reported as a batch item failure).
            if ok {
                queue.ack(&m.receipt).await.unwrap();
                removed += 1;
            }
        }
        phase.invocations += 1.0;
        phase.messages += msgs.len() as f64;
    }
    phase.mean_ms = total_ms / phase.invocations.max(1.0);
    phase
}

/// The bill of one run, per million deliveries, line by line.
struct Bill {
    lines: Vec<(&'static str, f64, String)>,
}

impl Bill {
    fn total(&self) -> f64 {
        self.lines.iter().map(|l| l.1).sum()
    }
}

fn bill(run: &Run) -> Bill {
    let d = run.deliveries;
    let (p, f, s, o) = (&run.publish, &run.fanout, &run.sender, &run.fold);
    let template = deployed();
    let [publish_fn, fanout_fn, sender_fn, fold_fn] = &template.functions;
    let platform_lines = &template.platform_lines;
    let platform_bytes = if *platform_lines {
        PLATFORM_LOG_BYTES
    } else {
        0.0
    };
    let invocations = p.invocations + f.invocations + s.invocations + o.invocations;
    let gb_s = publish_fn.memory_gb * p.mean_ms / 1000.0 * p.invocations
        + fanout_fn.memory_gb * f.mean_ms / 1000.0 * f.invocations
        + sender_fn.memory_gb * s.mean_ms / 1000.0 * s.invocations
        + fold_fn.memory_gb * o.mean_ms / 1000.0 * o.invocations;
    let sqs_hub = p.calls("SendMessageBatch")
        + f.calls("SendMessageBatch")
        + s.calls("SendMessageBatch")
        + s.calls("ChangeMessageVisibility")
        + s.calls("ChangeMessageVisibilityBatch")
        + s.calls("SendMessage");
    // The event source: a ReceiveMessage and a DeleteMessageBatch per 10 messages it hands over.
    let sqs_esm = 2.0 * (f.messages / 10.0).ceil().max(f.invocations)
        + 2.0 * (s.messages / 10.0).ceil().max(s.invocations);
    let queries = f.calls("Query");
    let gets = s.calls("GetItem");
    let puts = p.calls("PutItem") + s.calls("PutItem");
    let updates = s.calls("UpdateItem") + f.calls("UpdateItem") + o.calls("UpdateItem");
    let item_rru = run.sub_item_bytes.div_ceil(4096) as f64;
    // Topic-entry pages are small (one 4 KB unit) and eventually consistent; the sender's read
    // of the subscription is eventually consistent too (a strong read only to confirm a drop).
    let rru = queries * 0.5 + gets * 0.5 * item_rru;
    // Puts other than the delivery log's (publish's idempotency claims) are small: one unit.
    let wru = (puts - run.log_items).max(0.0)
        + run.log_wru
        + updates * run.sub_item_bytes.div_ceil(1024) as f64;
    let history = run.history_wru * DDB_WRITE / d;
    let log_bytes =
        p.log_bytes + f.log_bytes + s.log_bytes + o.log_bytes + platform_bytes * invocations;
    let kms = [p, f, s, o]
        .iter()
        .map(|phase| phase.calls("Decrypt") + phase.calls("Encrypt"))
        .sum::<f64>();
    Bill {
        lines: vec![
            (
                "API Gateway HTTP API",
                p.invocations * API_GATEWAY / d,
                format!("{:.2} requests per delivery at $1.00/M", p.invocations / d),
            ),
            (
                "Lambda requests",
                invocations * LAMBDA_REQUEST / d,
                format!(
                    "publish {:.2} + fanout {:.2} + sender {:.2} + fold {:.3} invocations per delivery at $0.20/M",
                    p.invocations / d,
                    f.invocations / d,
                    s.invocations / d,
                    o.invocations / d
                ),
            ),
            (
                "Lambda compute",
                gb_s * LAMBDA_GB_S / d,
                format!(
                    "{:.5} GB-s per delivery (publish {:.1} ms × {:.0} MB, fanout {:.1} ms × {:.0} MB per batch of {}, sender {:.1} ms × {:.0} MB per batch of {}, fold {:.1} ms × {:.0} MB per batch of {:.0} records) at $0.0000133334/GB-s arm64",
                    gb_s / d,
                    p.mean_ms,
                    publish_fn.memory_gb * 1000.0,
                    f.mean_ms,
                    fanout_fn.memory_gb * 1000.0,
                    fanout_fn.batch,
                    s.mean_ms,
                    sender_fn.memory_gb * 1000.0,
                    sender_fn.batch,
                    o.mean_ms,
                    fold_fn.memory_gb * 1000.0,
                    o.messages / o.invocations.max(1.0)
                ),
            ),
            (
                "SQS",
                (sqs_hub + sqs_esm) * SQS_REQUEST / d,
                format!(
                    "{:.2} hub calls + {:.2} event-source calls per delivery at $0.40/M",
                    sqs_hub / d,
                    sqs_esm / d
                ),
            ),
            (
                "DynamoDB, event history",
                history,
                format!(
                    "{:.3} BatchWriteItem calls, {:.2} items of {:.2} KB-units each per delivery ({:.2} WRU per event: ${:.3} per million events) at $0.625/M WRU",
                    f.calls("BatchWriteItem") / d,
                    run.history_items / d,
                    if run.history_items > 0.0 {
                        run.history_wru / run.history_items
                    } else {
                        0.0
                    },
                    run.history_wru / run.events,
                    run.history_wru / run.events * DDB_WRITE * 1e6
                ),
            ),
            (
                "DynamoDB",
                (rru * DDB_READ + wru * DDB_WRITE) / d,
                format!(
                    "{:.2} Query + {:.2} GetItem ({:.2} RRU) and {:.2} PutItem ({:.3} delivery-log items of {:.1} attempts, {:.2} KB-units each) + {:.3} UpdateItem ({:.3} of them the fold's) = {:.2} WRU per delivery",
                    queries / d,
                    gets / d,
                    rru / d,
                    puts / d,
                    run.log_items / d,
                    if run.log_items > 0.0 {
                        d / run.log_items
                    } else {
                        0.0
                    },
                    if run.log_items > 0.0 {
                        run.log_wru / run.log_items
                    } else {
                        0.0
                    },
                    updates / d,
                    o.calls("UpdateItem") / d,
                    wru / d
                ),
            ),
            (
                "KMS",
                kms * KMS_REQUEST / d,
                format!(
                    "{kms:.0} Decrypt in this run (the sender's data key, unwrapped once per process and cached: one per cold start, none per delivery) at $0.03/10k; the key itself is $1 a month, not per delivery"
                ),
            ),
            (
                "CloudWatch Logs",
                log_bytes * LOG_INGEST / d,
                format!(
                    "{:.0} bytes per delivery ({:.0} from the hub's lines and EMF metrics, {:.0} from the platform's START/END/REPORT: {}) at $0.50/GB",
                    log_bytes / d,
                    (p.log_bytes + f.log_bytes + s.log_bytes + o.log_bytes) / d,
                    platform_bytes * invocations / d,
                    if *platform_lines {
                        "~350 B per invocation"
                    } else {
                        "none, the template's SystemLogLevel is WARN"
                    }
                ),
            ),
        ],
    }
}

pub async fn cost_per_million(options: &Options) -> Section {
    let mut section = Section::new(
        "6. AWS cost per million deliveries (receiver answering in 100 ms), scenario by scenario",
    );
    let logs = LogMeter::default();
    // The functions' level as deployed: the template's LogLevel default (AWS_LAMBDA_LOG_LEVEL
    // in Lambda), unless RUST_LOG says otherwise.
    hub::runtime::init_logging_to(logs.clone(), &deployed().log_level);
    // The functions' EMF recorder, process-wide from here on: this section runs last.
    hub::runtime::lambda::init_emf().expect("the EMF recorder installs");
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| deployed().log_level.clone());
    let events = if options.smoke { 20 } else { 200 };
    let counter = CallCounter::default();
    section.line(format!(
        "method: each scenario is run on moto through the functions' own handlers (publish through the API handler, \
         fan-out and sender through the SQS batch path); calls are counted by an SDK interceptor, log bytes by the \
         hub's own JSON logger at RUST_LOG={level} (the template's LogLevel default unless RUST_LOG is set) plus the EMF metric lines each function writes before it \
         answers; the bill is computed from those counts and durations at \
         us-east-1 list prices (constants at the top of bench/src/cost.rs). Memory sizes and event-source batch sizes are read \
         from template.yaml. Assumptions: an SQS event source makes one ReceiveMessage and one DeleteMessageBatch \
         per 10 messages it hands over (its empty polls while idle, a few cents a month, are left out); Lambda's \
         own START/END/REPORT records ~350 B per invocation when the system log level lets them through; arm64 \
         prices; {events} events per scenario. The fold function reads the table's stream (moto's), filtered by \
         the template's pattern, in batches of the template's size; its batches are full only above \
         ~200 deliveries/s (1,000 records per 5 s window), below that one invocation per window with records \
         (at most 17,280 a day, $0.0035)"
    ));
    use hub::context::DeliveryLog::{Full, Lean};
    let scenarios = [
        (
            "fan-out 1, one event per HTTP request",
            1,
            1,
            Full,
            None,
            None,
        ),
        (
            "fan-out 1, published straight to the ingest queue (SendMessageBatch of 10)",
            DIRECT,
            1,
            Full,
            Some(0.90),
            None,
        ),
        (
            "fan-out 1, 10 events per HTTP request",
            10,
            1,
            Full,
            Some(1.00),
            None,
        ),
        (
            "fan-out 1, 10 events per HTTP request, rate limit 1000/s (the events within it)",
            10,
            1,
            Full,
            None,
            Some(1000),
        ),
        (
            "fan-out 1, 10 events per HTTP request, rate limit 20/s (a burst ten times over it)",
            10,
            1,
            Full,
            None,
            Some(20),
        ),
        (
            "fan-out 10, 10 events per HTTP request",
            10,
            10,
            Full,
            Some(0.75),
            None,
        ),
        (
            "fan-out 10, 10 events per HTTP request, lean delivery log",
            10,
            10,
            Lean,
            Some(0.35),
            None,
        ),
    ];
    let mut samples_shown = false;
    let mut unlimited: Option<Bill> = None;
    for (what, per_request, fan_out, delivery_log, goal, limit) in scenarios {
        let events = if fan_out > 1 { events / 2 } else { events };
        let run = measure(
            events,
            per_request,
            fan_out,
            delivery_log,
            limit,
            &counter,
            &logs,
        )
        .await;
        let bill = bill(&run);
        section.line(format!(
            "### {what} (measured: {} deliveries)",
            run.deliveries
        ));
        for (line, cost, detail) in &bill.lines {
            section.line(format!(
                "computed, {line:<22} ${:>6.3} per million  {detail}",
                cost * 1e6
            ));
        }
        let total = bill.total() * 1e6;
        let history = bill
            .lines
            .iter()
            .find(|l| l.0 == "DynamoDB, event history")
            .map_or(0.0, |l| l.1 * 1e6);
        let without = total - history;
        let verdict = match (goal, limit, &unlimited) {
            (_, Some(_), Some(unlimited)) => {
                // What the limit adds over the same scenario unlimited, line by line.
                let added: Vec<String> = bill
                    .lines
                    .iter()
                    .zip(&unlimited.lines)
                    .filter(|(paced, free)| ((paced.1 - free.1) * 1e6).abs() >= 0.0005)
                    .map(|(paced, free)| format!("{} {:+.3}", paced.0, (paced.1 - free.1) * 1e6))
                    .collect();
                format!(
                    "(the rate limit's cost: ${:+.3} per million over the same scenario unlimited: {})",
                    total - unlimited.total() * 1e6,
                    added.join(", ")
                )
            }
            (Some(goal), _, _) if total <= goal => format!("(goal ≤ ${goal:.2}: met)"),
            (Some(goal), _, _) => format!(
                "(goal ≤ ${goal:.2}: **missed**; without the event history ${without:.3}: {})",
                if without <= goal { "met" } else { "missed" }
            ),
            (None, _, _) => "(printed for comparison; API Gateway's $1.00/M is its floor)".into(),
        };
        section.line(format!(
            "computed, total                  ${total:>6.3} per million {verdict}"
        ));
        if !samples_shown {
            for sample in logs.samples.lock().unwrap().iter() {
                section.line(format!("measured, a log line as written: `{sample}`"));
            }
            samples_shown = true;
        }
        // The unlimited scenario the paced ones are compared with: the same shape.
        if per_request == 10 && fan_out == 1 && limit.is_none() {
            unlimited = Some(bill);
        }
    }
    section.line(
        "the producer's SendMessageBatch calls of the direct scenario are on its SQS line; every odometer \
         was checked exact after each scenario's fold. A delivery-log item holds one subscription's attempts \
         of one sender batch: here a batch of 100 goes to 1 or 10 subscribers (50 or 10 attempts per item); \
         with many subscribers each receiving rarely, an item holds one attempt (1 write unit: at most \
         $0.625/M more with the full log; the lean log stores no successes and is not affected)",
    );
    section
}
