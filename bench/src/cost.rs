//! Figure 6: AWS cost per million deliveries, computed from the calls the hub's code was counted
//! making on moto (per published event with one subscriber, a receiver answering in 100 ms), the
//! measured handler durations at the template's memory sizes, and list prices.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hub::Hub;
use hub::adapters::CallCounter;
use hub::adapters::dynamodb::DynamoStore;
use hub::adapters::http::HttpTransport;
use hub::adapters::sqs::SqsQueue;
use hub::auth::Caller;
use hub::model::SubscriptionStatus;
use hub::ports::Store;
use hub::runtime::consume::QueueRole;
use hub::runtime::consume::{consume, queue_of};
use hub::runtime::{aws_clients, memory_hub};
use hub::service::events::PublishRequest;
use hub_tests::{Reply, TestReceiver, sample_subscription, unique};

use crate::{Options, Section};

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

fn diff(before: &Calls, after: &Calls, op: &str) -> f64 {
    (after.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0)) as f64
}

pub async fn cost_per_million(options: &Options) -> Section {
    let mut section = Section::new(
        "6. AWS cost per million deliveries (one subscriber per event, receiver answering in 100 ms)",
    );
    let events = if options.smoke { 10 } else { 100 };
    let counter = CallCounter::default();
    let (dynamo, sqs) = aws_clients(Some(&counter)).await;
    let name = unique("bench-cost");
    let store = DynamoStore::new(dynamo, &name);
    store.ensure_table().await.expect("table");
    let events_queue = SqsQueue::ensure(
        sqs.clone(),
        &format!("{name}-events"),
        Duration::from_secs(180),
        5,
    )
    .await
    .unwrap();
    let deliveries_queue = SqsQueue::ensure(
        sqs,
        &format!("{name}-deliveries"),
        Duration::from_secs(180),
        7,
    )
    .await
    .unwrap();
    let receiver = TestReceiver::scripted(|_, _| Reply {
        delay: Duration::from_millis(100),
        ..Reply::status(200)
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let sub = sample_subscription(now, SubscriptionStatus::Active, &receiver.url("/cost"));
    let sub_item_bytes = serde_json::to_string(&sub).unwrap().len() + 200;
    store.save(&sub, None).await.unwrap();
    let (memory, _) = memory_hub(Default::default());
    let hub = Hub {
        store: Arc::new(store),
        events: Arc::new(events_queue),
        deliveries: Arc::new(deliveries_queue),
        transport: Arc::new(HttpTransport::new(true, Duration::from_secs(5), false)),
        ..memory
    };
    let caller = Caller {
        account: "acme".into(),
        owner: "acme".into(),
        scopes: None,
    };

    // publish λ: one call per event.
    let c0 = counter.snapshot();
    let started = Instant::now();
    for n in 0..events {
        let req = PublishRequest {
            topic: "door.request.allowed".into(),
            data: serde_json::json!({"door": "4711", "n": n, "pad": "x".repeat(600)}),
            id: None,
            labels: Default::default(),
            sensitive: Default::default(),
        };
        hub.publish(&caller, req).await.unwrap();
    }
    let publish_ms = started.elapsed().as_secs_f64() * 1000.0 / events as f64;
    let c1 = counter.snapshot();

    // fanout λ and sender λ: batches of 10, records processed concurrently, as the SQS event
    // source hands them. Receiving and deleting are the event source's calls, modelled below.
    let (fanout_batch_ms, c2) = run_batches(&hub, QueueRole::Events, events, &counter).await;
    let (sender_batch_ms, c4) = run_batches(&hub, QueueRole::Deliveries, events, &counter).await;
    assert_eq!(receiver.received().len(), events, "every event delivered");
    let per = |calls: &Calls, op: &str| calls.get(op).copied().unwrap_or(0) as f64 / events as f64;
    let n = events as f64;

    // Per delivery (= per event here).
    let api = API_GATEWAY;
    let lambda_requests = (1.0 + 0.1 + 0.1) * LAMBDA_REQUEST;
    let gb_s = 0.128 * publish_ms / 1000.0
        + 0.256 * fanout_batch_ms / 1000.0 / 10.0
        + 0.512 * sender_batch_ms / 1000.0 / 10.0;
    let lambda_compute = gb_s * LAMBDA_GB_S;
    // SQS: the hub's own calls, plus the event source's ReceiveMessage + DeleteMessageBatch per batch of 10 on each queue.
    let sqs_ours = diff(&c0, &c1, "SendMessageBatch") / n
        + per(&c2, "SendMessageBatch")
        + per(&c4, "ChangeMessageVisibility");
    let sqs_esm = 2.0 * (1.0 + 1.0) / 10.0;
    let sqs = (sqs_ours + sqs_esm) * SQS_REQUEST;
    // DynamoDB request units from the counted calls and item sizes.
    let write_units = |bytes: usize| bytes.div_ceil(1024) as f64;
    let queries = per(&c2, "Query");
    let gets = per(&c4, "GetItem");
    let puts = per(&c4, "PutItem") + diff(&c0, &c1, "PutItem") / n;
    let updates = per(&c4, "UpdateItem");
    let read_units = queries * 0.5 + gets * (sub_item_bytes.div_ceil(4096) as f64);
    let write_total = puts * write_units(400) + updates * write_units(sub_item_bytes);
    let dynamo = read_units * DDB_READ + write_total * DDB_WRITE;
    let total = api + lambda_requests + lambda_compute + sqs + dynamo;
    // The same counts at 10 subscribers per event: the per-event shares (API Gateway, publish,
    // the events queue, fan-out and its queries) divide by 10; one fan-out batch per event.
    let per_event = api
        + (1.0 + 0.1) * LAMBDA_REQUEST
        + (0.128 * publish_ms / 1000.0 + 0.256 * fanout_batch_ms / 1000.0 / 10.0) * LAMBDA_GB_S
        + (diff(&c0, &c1, "SendMessageBatch") / n + (1.0 + 1.0) / 10.0 + 1.0) * SQS_REQUEST
        + queries * 0.5 * DDB_READ;
    let per_delivery_only = 0.1 * LAMBDA_REQUEST
        + 0.512 * sender_batch_ms / 1000.0 / 10.0 * LAMBDA_GB_S
        + ((1.0 + 1.0) / 10.0 + per(&c4, "ChangeMessageVisibility")) * SQS_REQUEST
        + gets * (sub_item_bytes.div_ceil(4096) as f64) * DDB_READ
        + write_total * DDB_WRITE;
    let total_fanout_10 = per_event / 10.0 + per_delivery_only;
    let line = |what: &str, per_delivery: f64, detail: String| {
        format!(
            "computed, {what:<22} ${:>6.3} per million  {detail}",
            per_delivery * 1e6
        )
    };
    section.line(format!(
        "measured: publish {publish_ms:.1} ms per event, fanout {fanout_batch_ms:.1} ms per batch of 10, sender {sender_batch_ms:.1} ms per batch of 10 (receiver 100 ms); counted over {events} events"
    ));
    section.line(
        "computed from the counted calls and durations above, at us-east-1 list prices (the per-call factors \
         are the constants at the top of bench/src/cost.rs); \"at fan-out 10\" divides the per-event shares by 10 \
         (an extrapolation, not a run with 10 subscribers)",
    );
    section.line(line(
        "API Gateway HTTP API",
        api,
        "1 request per event at $1.00/M".into(),
    ));
    section.line(line(
        "Lambda requests",
        lambda_requests,
        "publish 1 + fanout 0.1 + sender 0.1 at $0.20/M".into(),
    ));
    section.line(line(
        "Lambda compute",
        lambda_compute,
        format!(
            "{:.5} GB-s (128/256/512 MB) at $0.0000133334/GB-s arm64",
            gb_s
        ),
    ));
    section.line(line(
        "SQS",
        sqs,
        format!(
            "{sqs_ours:.2} hub calls + {sqs_esm:.2} event-source calls per delivery at $0.40/M"
        ),
    ));
    section.line(line("DynamoDB", dynamo, format!(
        "{queries:.1} Query + {gets:.1} GetItem ({read_units:.2} RRU at $0.125/M), {puts:.1} PutItem + {updates:.1} UpdateItem ({write_total:.1} WRU at $0.625/M)"
    )));
    section.line(line("total", total, "(goal ≤ $0.50)".into()));
    section.line(line(
        "total at fan-out 10",
        total_fanout_10,
        format!(
            "per-event shares / 10; of which the attempt log + odometer writes ${:.3}/M",
            write_total * DDB_WRITE * 1e6
        ),
    ));
    let parts = [
        ("API Gateway", api),
        ("Lambda", lambda_requests + lambda_compute),
        ("SQS", sqs),
        ("DynamoDB", dynamo),
    ];
    let (top, top_cost) = parts
        .iter()
        .fold(("", 0.0), |a, b| if b.1 > a.1 { (b.0, b.1) } else { a });
    section.line(format!(
        "computed: dominant: {top} (${:.3}/M). With fan-out, the API Gateway, publish and fan-out shares divide by the subscribers per event; \
         the per-delivery DynamoDB writes (the attempt log and the odometer) remain and are what to batch or sample next.",
        top_cost * 1e6
    ));
    section
}

type Calls = std::collections::BTreeMap<String, u64>;

/// Consumes `count` messages of one queue in batches of 10 through the same consumer the
/// Lambda handler runs; returns the mean batch duration (ms) and the calls the handler made
/// (receiving and acknowledging, the event source's part, excluded).
async fn run_batches(
    hub: &Hub,
    role: QueueRole,
    count: usize,
    counter: &CallCounter,
) -> (f64, Calls) {
    let queue = queue_of(hub, role);
    let (mut total_ms, mut batches, mut done) = (0.0, 0, 0);
    let mut calls = Calls::new();
    while done < count {
        let msgs = queue.receive(10, Duration::from_secs(1)).await.unwrap();
        let before = counter.snapshot();
        let started = Instant::now();
        let results = futures::future::join_all(
            msgs.iter()
                .map(|m| async move { consume(hub, role, m).await }),
        )
        .await;
        total_ms += started.elapsed().as_secs_f64() * 1000.0;
        for (op, n) in counter.snapshot() {
            *calls.entry(op.clone()).or_default() += n - before.get(&op).copied().unwrap_or(0);
        }
        for (m, ok) in msgs.iter().zip(results) {
            assert!(ok, "{role:?} message processed");
            queue.ack(&m.receipt).await.unwrap();
        }
        batches += 1;
        done += msgs.len();
    }
    (total_ms / batches.max(1) as f64, calls)
}
