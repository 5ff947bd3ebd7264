//! A fault proxy between the hub and moto: it forwards every AWS call and, once armed, answers
//! some of them as AWS does when it pushes back — DynamoDB throttling, SQS unavailable, and
//! `SendMessageBatch` calls that take only part of their entries — recording what it did, so a
//! test can check the hub retried and lost nothing.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

/// Which calls the proxy fails once armed: every `n`th of each kind (`0`: never).
#[derive(Debug, Clone, Copy, Default)]
pub struct PushBack {
    /// DynamoDB calls answered `400 ThrottlingException`.
    pub dynamodb_throttle_every: u32,
    /// SQS calls answered `503 ServiceUnavailable`.
    pub sqs_unavailable_every: u32,
    /// `SendMessageBatch` calls of two or more entries whose last entry is failed on SQS's
    /// side (`SenderFault: false`) while the others are sent.
    pub partial_batch_every: u32,
}

/// What the proxy did.
#[derive(Debug, Default, Clone)]
pub struct FaultLog {
    /// DynamoDB calls it throttled.
    pub throttled: usize,
    /// SQS calls it answered `503`.
    pub unavailable: usize,
    /// The entries it failed in partly taken batches: the batch's index in `batches`, and the
    /// entry's body.
    pub failed_entries: Vec<(usize, String)>,
    /// Every `SendMessageBatch` the hub made (failed or forwarded), in order: its entries' bodies.
    pub batches: Vec<Vec<String>>,
}

#[derive(Default)]
struct State {
    armed: Option<PushBack>,
    dynamodb_calls: u32,
    sqs_calls: u32,
    batch_calls: u32,
    log: FaultLog,
}

/// A running fault proxy in front of `AWS_ENDPOINT_URL`.
#[derive(Clone)]
pub struct AwsFaults {
    /// The endpoint to give the hub.
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl AwsFaults {
    /// Starts the proxy, forwarding everything until [`AwsFaults::arm`].
    pub async fn start() -> AwsFaults {
        let upstream = std::env::var("AWS_ENDPOINT_URL").expect(
            "AWS_ENDPOINT_URL points at moto_server (the README's test command starts one)",
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let faults = AwsFaults {
            url: format!("http://{}", listener.local_addr().unwrap()),
            state: Arc::default(),
        };
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let state = faults.state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (state, client, upstream) = (state.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (state, client, upstream) =
                                (state.clone(), client.clone(), upstream.clone());
                            async move {
                                Ok::<_, std::convert::Infallible>(
                                    handle(&state, &client, &upstream, req).await,
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        faults
    }

    /// Starts pushing back as `plan` says.
    pub fn arm(&self, plan: PushBack) {
        self.state.lock().unwrap().armed = Some(plan);
    }

    /// Forwards everything again.
    pub fn disarm(&self) {
        self.state.lock().unwrap().armed = None;
    }

    /// What it did so far.
    pub fn log(&self) -> FaultLog {
        self.state.lock().unwrap().log.clone()
    }
}

/// What to do with one call.
enum Fault {
    Throttle,
    Unavailable,
    /// Fail the entry with this id, forward the rest.
    FailEntry(String),
}

fn reply(status: u16, body: Value) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Counts the call and decides its fault, if any.
fn decide(state: &Mutex<State>, target: &str, body: &[u8]) -> Option<Fault> {
    let mut state = state.lock().unwrap();
    let plan = state.armed?;
    let every = |n: u32, count: &mut u32| {
        *count += 1;
        n > 0 && (*count).is_multiple_of(n)
    };
    if target.starts_with("DynamoDB_") {
        let hit = every(plan.dynamodb_throttle_every, &mut state.dynamodb_calls);
        return hit.then_some(Fault::Throttle);
    }
    if !target.starts_with("AmazonSQS.") {
        return None;
    }
    if target == "AmazonSQS.SendMessageBatch" {
        let entries = serde_json::from_slice::<Value>(body).ok()?["Entries"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if entries.len() >= 2 && every(plan.partial_batch_every, &mut state.batch_calls) {
            let last = entries.last().unwrap()["Id"].as_str()?.to_string();
            return Some(Fault::FailEntry(last));
        }
    }
    let hit = every(plan.sqs_unavailable_every, &mut state.sqs_calls);
    hit.then_some(Fault::Unavailable)
}

async fn handle(
    state: &Mutex<State>,
    client: &reqwest::Client,
    upstream: &str,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if target == "AmazonSQS.SendMessageBatch"
        && let Ok(request) = serde_json::from_slice::<Value>(&body)
    {
        let bodies = request["Entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["MessageBody"].as_str().unwrap_or_default().to_string())
            .collect();
        state.lock().unwrap().log.batches.push(bodies);
    }
    let fault = decide(state, &target, &body);
    let mut forwarded = body.clone();
    let mut failed_id = None;
    match fault {
        Some(Fault::Throttle) => {
            state.lock().unwrap().log.throttled += 1;
            return reply(
                400,
                json!({
                    "__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException",
                    "message": "Rate of requests exceeds the allowed throughput (injected)"
                }),
            );
        }
        Some(Fault::Unavailable) => {
            state.lock().unwrap().log.unavailable += 1;
            return reply(
                503,
                json!({
                    "__type": "com.amazonaws.sqs#ServiceUnavailable",
                    "message": "Service is unavailable (injected)"
                }),
            );
        }
        Some(Fault::FailEntry(id)) => {
            let mut request: Value = serde_json::from_slice(&body).unwrap();
            let entries = request["Entries"].as_array_mut().unwrap();
            let at = entries.iter().position(|e| e["Id"] == id.as_str()).unwrap();
            let dropped = entries.remove(at);
            let body = dropped["MessageBody"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let mut state = state.lock().unwrap();
            let batch = state.log.batches.len() - 1;
            state.log.failed_entries.push((batch, body));
            forwarded = Bytes::from(request.to_string());
            failed_id = Some(id);
        }
        None => {}
    }
    let url = format!("{upstream}{}", parts.uri);
    let mut call = client.request(parts.method.clone(), &url);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            call = call.header(name, value);
        }
    }
    let answer = match call.body(forwarded).send().await {
        Ok(answer) => answer,
        Err(err) => return reply(502, json!({"message": err.to_string()})),
    };
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    let mut bytes = answer.bytes().await.unwrap_or_default();
    if let Some(id) = failed_id {
        let mut out: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({}));
        let failed = json!({
            "Id": id,
            "SenderFault": false,
            "Code": "InternalError",
            "Message": "injected partial failure"
        });
        match out["Failed"].as_array_mut() {
            Some(list) => list.push(failed),
            None => out["Failed"] = json!([failed]),
        }
        bytes = Bytes::from(out.to_string());
    }
    let mut resp = hyper::Response::builder().status(status);
    for (name, value) in &headers {
        if name != "content-length" && name != "transfer-encoding" {
            resp = resp.header(name, value);
        }
    }
    resp.body(Full::new(bytes)).unwrap()
}
