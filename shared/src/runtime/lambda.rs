//! The Lambda entry points. Each function's `main.rs` calls one of them; the handlers are plain
//! async functions, so the tests replay `events/` through them without a runtime.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_http::{Body, Request};
use lambda_runtime::{Error, LambdaEvent, service_fn};

use super::config::{LambdaConfig, init_logging};
use super::consume::{QueueRole, consume_batch};
use super::wiring::aws_hub;
use crate::api::lambda::{api_request, jwt_caller};
use crate::api::{ApiFunction, Operation, handle};
use crate::context::Hub;
use crate::ports::ReceivedMessage;
use crate::service::ingest::IngestSource;

async fn hub_from_env() -> Result<(Hub, LambdaConfig), Error> {
    init_logging();
    let config = LambdaConfig::from_env()?;
    let hub = aws_hub(config.hub.settings(), &config.hub.aws).await?;
    init_emf()?;
    Ok((hub, config))
}

/// The process's Embedded Metric Format collector: the hub's counters as CloudWatch metrics,
/// written to stdout (CloudWatch Logs extracts them; no API call).
static EMF: std::sync::OnceLock<&'static metrics_cloudwatch_embedded::Collector> =
    std::sync::OnceLock::new();

/// Installs the EMF collector as the process's `metrics` recorder (once; the functions do it at
/// cold start, the cost benchmark to count the lines' bytes).
pub fn init_emf() -> Result<(), Error> {
    if EMF.get().is_none() {
        let collector = metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace(crate::metrics::CLOUDWATCH_NAMESPACE)
            .init()
            .map_err(|e| Error::from(e.to_string()))?;
        metrics::describe_histogram!(
            "delivery_attempt_seconds",
            metrics::Unit::Seconds,
            "Time of one delivery attempt, DNS to response"
        );
        let _ = EMF.set(collector);
    }
    Ok(())
}

/// Writes what this invocation counted as EMF lines, before the answer (Lambda may freeze the
/// process right after it).
fn flush_metrics() {
    flush_metrics_to(std::io::stdout().lock());
}

/// Writes what was counted since the last flush as EMF lines to `writer`, in one write.
pub fn flush_metrics_to(mut writer: impl std::io::Write) {
    let Some(collector) = EMF.get() else {
        return;
    };
    let mut lines = Vec::new();
    let written = collector
        .flush(&mut lines)
        .and_then(|()| writer.write_all(&lines));
    if let Err(err) = written {
        tracing::warn!(error = %err, "could not write the metrics");
    }
}

/// Answers one API Gateway request with the operations `ops`.
pub async fn api_handler(
    hub: &Hub,
    ops: &[Operation],
    claims: &super::config::JwtClaims,
    req: Request,
) -> http::Response<Body> {
    let caller = jwt_caller(&req, claims);
    let response = handle(hub, ops, api_request(&req), caller).await;
    response.map(|bytes| match String::from_utf8(bytes.to_vec()) {
        Ok(text) if text.is_empty() => Body::Empty,
        Ok(text) => Body::Text(text),
        Err(err) => Body::Binary(err.into_bytes()),
    })
}

/// Processes one SQS batch concurrently and reports exactly the messages to retry.
pub async fn sqs_handler(hub: &Hub, role: QueueRole, event: SqsEvent) -> SqsBatchResponse {
    sqs_handler_routed(hub, role, &[], event).await
}

/// The role of each queue a function reads besides its own, by queue name: the ingest queues
/// the fan-out function also reads, the ordered (FIFO) queue the sender also reads.
fn queue_routes(aws: &super::config::AwsResources) -> Vec<(String, QueueRole)> {
    let name_of = |queue: &str| queue.rsplit('/').next().map(str::to_string);
    let mut routes: Vec<(String, QueueRole)> = [
        (&aws.ingest_queue, IngestSource::Direct),
        (&aws.bus_ingest_queue, IngestSource::Bus),
    ]
    .into_iter()
    .filter_map(|(queue, source)| Some((name_of(queue.as_deref()?)?, QueueRole::Ingest(source))))
    .collect();
    routes.extend(name_of(&aws.ordered_queue()).map(|name| (name, QueueRole::Ordered)));
    routes
}

/// [`sqs_handler`] for a function fed by several queues: a record whose source queue (the last
/// part of its `eventSourceARN`) is named in `routes` is consumed in that role, any other in
/// `role`.
pub async fn sqs_handler_routed(
    hub: &Hub,
    role: QueueRole,
    routes: &[(String, QueueRole)],
    event: SqsEvent,
) -> SqsBatchResponse {
    let roles: Vec<QueueRole> = event
        .records
        .iter()
        .map(|record| {
            let queue = record
                .event_source_arn
                .as_deref()
                .and_then(|arn| arn.rsplit(':').next())
                .unwrap_or_default();
            routes
                .iter()
                .find(|(name, _)| name == queue)
                .map_or(role, |(_, routed)| *routed)
        })
        .collect();
    let msgs: Vec<ReceivedMessage> = event
        .records
        .into_iter()
        .map(|mut record| ReceivedMessage {
            id: record.message_id.take().unwrap_or_default(),
            receipt: record.receipt_handle.take().unwrap_or_default(),
            // Moved, not copied: a batch may hold 6 MB of bodies.
            body: record.body.take().unwrap_or_default(),
            receive_count: record
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|c| c.parse().ok())
                .unwrap_or(1),
            sender: record.attributes.get("SenderId").cloned(),
            sent_at_ms: record
                .attributes
                .get("SentTimestamp")
                .and_then(|t| t.parse().ok()),
            trace: crate::adapters::sqs::message_trace(
                record
                    .message_attributes
                    .get(crate::adapters::sqs::TRACEPARENT_ATTRIBUTE)
                    .and_then(|a| a.string_value.as_deref()),
                record.attributes.get("AWSTraceHeader").map(String::as_str),
            ),
        })
        .collect();
    // Each role's records together (one SQS batch comes from one queue; routing guards mixes).
    let mut done = vec![false; msgs.len()];
    let mut distinct: Vec<QueueRole> = Vec::new();
    for r in &roles {
        if !distinct.contains(r) {
            distinct.push(*r);
        }
    }
    if let [only] = distinct.as_slice() {
        done = consume_batch(hub, *only, &msgs).await;
    } else {
        for r in distinct {
            let indexes: Vec<usize> = (0..msgs.len()).filter(|i| roles[*i] == r).collect();
            let group: Vec<ReceivedMessage> = indexes.iter().map(|i| msgs[*i].clone()).collect();
            for (i, ok) in indexes.into_iter().zip(consume_batch(hub, r, &group).await) {
                done[i] = ok;
            }
        }
    }
    let failed = msgs
        .into_iter()
        .zip(done)
        .map(|(msg, done)| (!done).then_some(msg.id));
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .flatten()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}

/// Runs the API function `function`, with the claims named by `HUB_ACCOUNT_CLAIM` (default
/// `sub`), `HUB_OWNER_CLAIM` and `HUB_SECRECY_FLOOR_CLAIM`.
pub async fn serve_api(function: ApiFunction) -> Result<(), Error> {
    let ops = function.operations();
    let (hub, config) = hub_from_env().await?;
    let (hub, claims) = (&hub, &config.claims);
    lambda_http::run(service_fn(move |req: Request| async move {
        let response = api_handler(hub, ops, claims, req).await;
        flush_metrics();
        super::telemetry::flush().await;
        Ok::<_, Error>(response)
    }))
    .await
}

/// Runs an SQS-triggered function with partial batch failures.
pub async fn serve_queue(role: QueueRole) -> Result<(), Error> {
    let (hub, config) = hub_from_env().await?;
    let routes = queue_routes(&config.hub.aws);
    let (hub, routes) = (&hub, routes.as_slice());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let response = sqs_handler_routed(hub, role, routes, event.payload).await;
        flush_metrics();
        super::telemetry::flush().await;
        Ok::<_, Error>(response)
    }))
    .await
}

/// Folds one batch of the table's stream (the delivery log's inserts; the event source's
/// filter passes only those) into the odometers. An error fails the whole batch and Lambda
/// hands it over again: the folded spans make that safe.
pub async fn fold_handler(hub: &Hub, event: serde_json::Value) -> Result<serde_json::Value, Error> {
    let logged = crate::adapters::dynamodb::stream::logged_attempts(&event);
    let subscriptions = hub.fold_stream(&logged).await?;
    Ok(serde_json::json!({"attempts": logged.len(), "subscriptions": subscriptions}))
}

/// Runs the `fold` function on its DynamoDB stream batches.
pub async fn serve_fold() -> Result<(), Error> {
    let (hub, _) = hub_from_env().await?;
    let hub = &hub;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let answer = fold_handler(hub, event.payload).await;
            flush_metrics();
            super::telemetry::flush().await;
            answer
        },
    ))
    .await
}

/// Answers one scheduled sweep.
pub async fn sweep_handler(hub: &Hub) -> Result<serde_json::Value, Error> {
    let report = hub.sweep().await?;
    Ok(serde_json::json!({"removed": report.removed, "notices": report.notices}))
}

/// Runs the sweeper on its schedule's invocations.
pub async fn serve_sweeper() -> Result<(), Error> {
    let (hub, _) = hub_from_env().await?;
    let hub = &hub;
    lambda_runtime::run(service_fn(
        move |_event: LambdaEvent<serde_json::Value>| async move {
            let report = sweep_handler(hub).await;
            flush_metrics();
            super::telemetry::flush().await;
            report
        },
    ))
    .await
}
