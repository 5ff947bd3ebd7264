//! `webhook-hub listen`: a receiver for development, like `stripe listen` or `svix listen`. It
//! serves a local callback, subscribes it to a hub, confirms it, verifies every delivery's
//! signature with the subscription's secret and prints it (topic, id, latency, ✓ or ✗, the
//! body), optionally forwards it to a local URL, and unsubscribes when it stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// The largest delivery body `listen` reads.
const MAX_DELIVERY_BYTES: usize = 1024 * 1024;

/// What `listen` subscribes where.
#[derive(Debug, Clone, Args)]
pub struct ListenOptions {
    /// The hub's base URL
    #[arg(long, env = "HUB_URL", default_value = "http://127.0.0.1:3000")]
    pub hub: String,
    /// An API key of the hub with the webhooks:subscribe scope
    #[arg(long, env = "HUB_LISTEN_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// Topic patterns to subscribe to, comma-separated (`*` for every topic, `hub.*` for the
    /// operational events)
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub topics: Vec<String>,
    /// Where to receive (port 0 picks a free one)
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The callback URL to subscribe, when the hub reaches this machine another way (an https
    /// tunnel); default http://<listen>/
    #[arg(long)]
    pub callback_url: Option<String>,
    /// Forward each delivery (body and webhook headers) to this URL and answer with its status
    #[arg(long)]
    pub forward_to: Option<String>,
}

/// The subscription `listen` holds, shared with the request handler.
struct Session {
    hub: String,
    api_key: String,
    id: String,
    secret: String,
    forward_to: Option<String>,
    http: reqwest::Client,
}

impl Session {
    /// Calls the hub's API.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
        call(&self.http, &self.hub, &self.api_key, method, path, body).await
    }
}

/// A hub answer: status and JSON body (`Null` when there is none or the call failed).
struct Answer {
    status: u16,
    body: Value,
}

async fn call(
    http: &reqwest::Client,
    hub: &str,
    api_key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Answer {
    let mut request = http
        .request(method, format!("{}{path}", hub.trim_end_matches('/')))
        .bearer_auth(api_key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    match request.send().await {
        Ok(response) => Answer {
            status: response.status().as_u16(),
            body: response.json().await.unwrap_or(Value::Null),
        },
        Err(err) => Answer {
            status: 0,
            body: json!({"code": "unreachable", "message": err.to_string()}),
        },
    }
}

/// Runs `listen` until Ctrl-C or SIGTERM, then unsubscribes.
pub async fn listen(options: ListenOptions) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", options.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let callback_url = options
        .callback_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}/"));
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let created = call(
        &http,
        &options.hub,
        &options.api_key,
        reqwest::Method::POST,
        "/v1/subscriptions",
        Some(json!({
            "callback_url": callback_url,
            "topics": options.topics,
            "name": "webhook-hub listen",
        })),
    )
    .await;
    if created.status != 201 {
        return Err(refusal(&created, &callback_url));
    }
    let session = Arc::new(Session {
        hub: options.hub.clone(),
        api_key: options.api_key.clone(),
        id: created.body["id"].as_str().unwrap_or_default().to_string(),
        secret: created.body["secret"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        forward_to: options.forward_to.clone(),
        http,
    });
    println!(
        "webhook-hub listen: receiving on {callback_url} for {} (subscription {}, pending \
         confirmation)",
        options.topics.join(", "),
        session.id
    );
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let session = session.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let session = session.clone();
                        async move { Ok::<_, std::convert::Infallible>(receive(&session, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
    let removed = session
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/subscriptions/{}", session.id),
            None,
        )
        .await;
    if removed.status == 204 {
        println!("webhook-hub listen: unsubscribed {}", session.id);
        Ok(())
    } else {
        Err(format!(
            "could not unsubscribe {} ({}): remove it with DELETE /v1/subscriptions/{}",
            session.id, removed.status, session.id
        ))
    }
}

/// Why the hub refused the subscription, with what to do about it.
fn refusal(answer: &Answer, callback_url: &str) -> String {
    let code = answer.body["code"].as_str().unwrap_or("");
    let message = answer.body["message"].as_str().unwrap_or("");
    let hint = match code {
        "forbidden_target" | "WebhookUnsupportedProtocol" => format!(
            "; the hub refuses {callback_url}: start the hub with --allow-private-targets \
             (development), or pass --callback-url with a public https tunnel to this machine"
        ),
        "unauthorized" => "; check --api-key".to_string(),
        _ => String::new(),
    };
    format!("the hub answered {} {code}: {message}{hint}", answer.status)
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// One request to the callback: a confirmation is followed, a delivery verified, printed and
/// forwarded.
async fn receive(session: &Session, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let Ok(body) = Limited::new(body, MAX_DELIVERY_BYTES).collect().await else {
        return answer(413);
    };
    let body = body.to_bytes();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let id = header("webhook-id");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let verified = hub::signing::verify(
        &session.secret,
        id,
        header("webhook-timestamp"),
        header("webhook-signature"),
        &body,
        now / 1000,
    );
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mark = match verified {
        Ok(()) => "✓ verified".to_string(),
        Err(why) => format!("✗ NOT verified: {why}"),
    };
    if json["type"] == "Confirmation" {
        println!("Confirmation {id} {mark}");
        if verified.is_err() {
            return answer(401);
        }
        return match json["confirmation_url"].as_str() {
            Some(url) => {
                let confirmed = session.http.get(url).send().await;
                match confirmed {
                    Ok(r) if r.status().is_success() => {
                        println!(
                            "webhook-hub listen: confirmed, subscription {} is active",
                            session.id
                        );
                        answer(200)
                    }
                    _ => {
                        println!("webhook-hub listen: the confirmation link failed");
                        answer(502)
                    }
                }
            }
            None => answer(400),
        };
    }
    let topic = json["type"].as_str().unwrap_or("?");
    let latency = json["timestamp"]
        .as_str()
        .and_then(hub::clock::parse_rfc3339)
        .map_or("?".to_string(), |at| format!("{} ms", now - at));
    println!("{topic} {id} {latency} {mark}");
    println!(
        "{}",
        serde_json::to_string_pretty(&json)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned())
    );
    if verified.is_err() {
        return answer(401);
    }
    match &session.forward_to {
        Some(url) => forward(session, url, &parts.headers, body).await,
        None => answer(200),
    }
}

/// Sends the delivery on to `url` with its content type and webhook headers; answers with its
/// status (`502` when it cannot be reached).
async fn forward(
    session: &Session,
    url: &str,
    headers: &http::HeaderMap,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut request = session.http.post(url).body(body);
    for name in [
        "content-type",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "user-agent",
    ] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value.as_bytes());
        }
    }
    match request.send().await {
        Ok(response) => {
            println!("  forwarded to {url}: {}", response.status().as_u16());
            answer(response.status().as_u16())
        }
        Err(err) => {
            println!("  forwarding to {url} failed: {err}");
            answer(502)
        }
    }
}

fn answer(status: u16) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    response
}
