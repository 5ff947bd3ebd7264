//! `webhook-hub serve`: the API on hyper, the pollers and the sweep loop in one process, on the
//! embedded store or on DynamoDB and SQS. Ctrl-C (or SIGTERM) stops accepting, lets requests and
//! delivery attempts in flight finish, then exits.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;

use hub::api::{ApiRequest, MAX_BODY_BYTES, Operation, error_response, handle, respond};
use hub::auth::Caller;
use hub::clock::SystemClock;
use hub::ports::Queue;
use hub::runtime::embedded::start_workers;
use hub::runtime::{
    aws_deliveries_dead_letters, aws_hub, init_buffered_logging, memory_hub, provision_aws,
    sqlite_hub,
};
use hub::{ErrorCode, Hub, HubError, Settings};

use crate::cli::{Backend, ServeOptions, parse_api_key};

/// What each connection's requests need.
struct App {
    hub: Hub,
    keys: HashMap<String, Caller>,
    clock: Arc<SystemClock>,
    test_control: bool,
    dead_letters: Option<Arc<dyn Queue>>,
}

fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn request_id() -> String {
    let id: u64 = rand::random();
    format!("req_{id:016x}")
}

/// How long a request body may take to arrive once its headers are in.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 1024;

async fn answer(
    app: Arc<App>,
    req: hyper::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    if path == "/metrics" && parts.method == http::Method::GET {
        // Aggregates only (no account, subscription or event appears): open, like a
        // Prometheus exporter; see the README for keeping it off the public side.
        let text = app.hub.metrics.render(&app.hub).await;
        let mut response = respond(200, None).map(|_| Full::new(Bytes::from(text)));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(hub::metrics::CONTENT_TYPE),
        );
        return Ok(response);
    }
    let caller = bearer(&parts.headers)
        .and_then(|key| app.keys.get(key))
        .cloned();
    // Authenticate on the headers, before reading a byte of the body: only the confirmation
    // link (a GET whose token is the capability) needs no key.
    // The portal checks its own session tokens (they are no API keys).
    let open_route = (matches!(
        hub::api::route(&parts.method, &path),
        Ok((Operation::Confirm, _)) | Err(_)
    ) && !path.starts_with("/_test/"))
        || hub::api::portal::is_portal_path(&path);
    if caller.is_none() && !open_route {
        return Ok(error_response(&HubError::Unauthorized).map(Full::new));
    }
    let limited = Limited::new(body, MAX_BODY_BYTES).collect();
    let body = match tokio::time::timeout(BODY_READ_TIMEOUT, limited).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) => {
            let err = if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                HubError::PayloadTooLarge(MAX_BODY_BYTES)
            } else {
                HubError::invalid(ErrorCode::InvalidBody, "the request body could not be read")
            };
            return Ok(error_response(&err).map(Full::new));
        }
        Err(_) => {
            let err = HubError::RequestTimeout(BODY_READ_TIMEOUT.as_secs());
            let mut response = error_response(&err).map(Full::new);
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            return Ok(response);
        }
    };
    if app.test_control && path.starts_with("/_test/") {
        let caller = caller.expect("authenticated above");
        return Ok(test_control(&app, &caller, &path, parts.uri.query())
            .await
            .map(Full::new));
    }
    let request = ApiRequest {
        method: parts.method,
        path,
        query: parts.uri.query().map(str::to_string),
        body,
        request_id: request_id(),
        bearer: bearer(&parts.headers).map(str::to_string),
        traceparent: hub::trace::TraceParent::from_headers(&parts.headers),
    };
    Ok(handle(&app.hub, Operation::ALL, request, caller)
        .await
        .map(Full::new))
}

/// The longest jump of the test clock, either way (10 years).
const MAX_CLOCK_JUMP_MS: i64 = 10 * 365 * 86_400_000;

/// Test hooks, only with `--test-control` and an API key: move the clock, run a sweep now, read
/// the caller's own dead letters.
async fn test_control(
    app: &App,
    caller: &Caller,
    path: &str,
    query: Option<&str>,
) -> http::Response<Bytes> {
    match path {
        "/_test/clock/advance" => {
            let Some(ms) = url_param(query, "ms")
                .and_then(|v| v.parse::<i64>().ok())
                .filter(|ms| ms.unsigned_abs() <= MAX_CLOCK_JUMP_MS as u64)
            else {
                return error_response(&HubError::invalid(
                    ErrorCode::InvalidMs,
                    "`ms` is an integer of at most ten years in milliseconds",
                ));
            };
            app.clock.advance(ms);
            respond(
                200,
                Some(&serde_json::json!({"now_ms": hub::clock::Clock::now_ms(app.clock.as_ref())})),
            )
        }
        "/_test/dead-letters" => {
            let Some(queue) = &app.dead_letters else {
                return error_response(&HubError::NotFound("dead-letter queue"));
            };
            match queue.receive(10, Duration::from_secs(1)).await {
                Ok(messages) => {
                    let mut bodies = Vec::new();
                    for message in &messages {
                        if dead_letter_account(&app.hub, &message.body)
                            .await
                            .as_deref()
                            == Some(caller.account.as_str())
                        {
                            bodies.push(message.body.as_str());
                        }
                    }
                    respond(200, Some(&serde_json::json!({"messages": bodies})))
                }
                Err(err) => error_response(&err),
            }
        }
        "/_test/sweep" => match app.hub.sweep().await {
            Ok(report) => respond(
                200,
                Some(&serde_json::json!({"removed": report.removed, "notices": report.notices})),
            ),
            Err(err) => error_response(&err),
        },
        _ => error_response(&HubError::NotFound("route")),
    }
}

/// The account a dead-lettered delivery task belongs to: its event's, or its subscription's.
async fn dead_letter_account(hub: &Hub, body: &str) -> Option<String> {
    let task: hub::model::DeliveryTask = serde_json::from_str(body).ok()?;
    match task.payload {
        hub::model::TaskPayload::Event { event } | hub::model::TaskPayload::Notice { event } => {
            Some(event.account)
        }
        hub::model::TaskPayload::Confirmation { .. } | hub::model::TaskPayload::Resume => hub
            .store
            .get(&task.subscription_id)
            .await
            .ok()
            .flatten()
            .map(|sub| sub.account),
    }
}

fn url_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        pair.strip_prefix(name)?
            .strip_prefix('=')
            .map(str::to_string)
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs the embedded hub until Ctrl-C.
pub async fn serve(opts: Box<ServeOptions>) -> Result<(), String> {
    let _log_writer = init_buffered_logging(opts.otlp_endpoint.as_deref());
    if hub::runtime::telemetry::is_on() {
        tracing::info!("traces: spans exported over OTLP/HTTP");
    }
    let settings = Settings {
        public_url: match &opts.hub.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", opts.listen),
        },
        // Only here may the SSRF guard be lifted, and only by the command line or HUB_*.
        allow_private_targets: opts.allow_private_targets,
        resolve_names: !opts.test_control,
        ..opts.hub.settings()
    };
    if settings.odometer_fold == hub::context::OdometerFold::Stream && opts.backend != Backend::Aws
    {
        // Only DynamoDB has the stream the `fold` function reads: nothing would count.
        return Err(
            "--odometer-fold stream needs --backend aws and the fold function on the table's stream; \
             the embedded backends fold after each batch (--odometer-fold batch)"
                .into(),
        );
    }
    let mut database = None;
    let (mut hub, dead_letters): (Hub, Option<Arc<dyn Queue>>) = match opts.backend {
        Backend::Sqlite => {
            let resolved = opts.master.resolve(&opts.data)?;
            let key = resolved.key.clone();
            resolved.settle(&opts.data).await?;
            let (hub, queues) = sqlite_hub(
                settings,
                key,
                &opts.data,
                hub::adapters::sqlite::DbOptions {
                    durability: opts.durability.into(),
                    size_limit: opts.db_size_limit,
                },
                opts.hub.aws.queue_visibility,
            )?;
            database = Some(queues.db);
            (hub, Some(queues.deliveries_dead as Arc<dyn Queue>))
        }
        Backend::Memory => {
            tracing::warn!(
                "--backend memory keeps everything in this process: a restart or a crash \
                 forgets every subscription and every queued delivery (tests and throw-away runs \
                 only; the default --backend sqlite keeps them)"
            );
            let (hub, queues) = memory_hub(settings);
            (hub, Some(queues.deliveries_dead as Arc<dyn Queue>))
        }
        Backend::Aws => {
            let resources = &opts.hub.aws;
            if opts.create_resources {
                provision_aws(resources, resources.queue_visibility)
                    .await
                    .map_err(|e| format!("creating the AWS resources: {e}"))?;
            }
            let hub = aws_hub(settings, resources)
                .await
                .map_err(|e| format!("AWS backend: {e}"))?;
            hub.keys
                .check()
                .await
                .map_err(|e| format!("AWS backend: {e}"))?;
            let dead = aws_deliveries_dead_letters(resources).await.ok();
            (hub, dead.map(|q| Arc::new(q) as Arc<dyn Queue>))
        }
    };
    let clock = Arc::new(SystemClock::default());
    hub.clock = clock.clone();

    let mut keys: HashMap<String, Caller> = opts.api_keys.iter().cloned().collect();
    if keys.is_empty() {
        let random: [u8; 16] = rand::random();
        let key = format!("whk_{}", hub::signing::hex(&random));
        let (key, caller) = parse_api_key(&format!("{key}=default")).expect("generated key parses");
        println!("webhook-hub: no --api-key given; generated API key for account `default`: {key}");
        keys.insert(key, caller);
    }

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| format!("bind {}: {e}", opts.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers = start_workers(&hub, opts.sweep_interval, &stopped);
    let app = Arc::new(App {
        hub,
        keys,
        clock,
        test_control: opts.test_control,
        dead_letters,
    });
    match opts.backend {
        Backend::Sqlite => {
            tracing::info!(listen = %local, backend = "sqlite", data = %opts.data.display(), "webhook-hub listening")
        }
        other => tracing::info!(listen = %local, backend = ?other, "webhook-hub listening"),
    }

    let graceful = GracefulShutdown::new();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut accept_backoff = Duration::ZERO;
    loop {
        let slot = tokio::select! {
            slot = connections.clone().acquire_owned() => slot.expect("semaphore open"),
            _ = &mut signal => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => {
                        accept_backoff = Duration::ZERO;
                        stream
                    }
                    Err(err) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        accept_backoff = (accept_backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                        tracing::warn!(error = %err, backoff_ms = accept_backoff.as_millis() as u64, "accept failed");
                        tokio::time::sleep(accept_backoff).await;
                        continue;
                    }
                };
                let app = app.clone();
                let conn = http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(TokioIo::new(stream), service_fn(move |req| answer(app.clone(), req)));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(slot);
                });
            }
            _ = &mut signal => break,
        }
    }
    tracing::info!("shutting down: finishing requests and delivery attempts in flight");
    drop(listener);
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    let _ = tokio::time::timeout(Duration::from_secs(15), futures_join(workers)).await;
    if let Some(db) = database
        && let Err(err) = db.flush().await
    {
        tracing::warn!(error = %err, "the last writes could not be committed");
    }
    // The spans still in the exporter's batch go out before the process ends.
    let _ = tokio::task::spawn_blocking(hub::runtime::telemetry::shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for handle in handles {
        let _ = handle.await;
    }
}
