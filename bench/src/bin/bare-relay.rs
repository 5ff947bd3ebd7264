//! The reference for the end-to-end throughput figure (BENCHMARKS.md §2): the two exchanges the
//! hub makes for each event and nothing else. A minimal hyper server answers each publish `202`
//! with an id at once, then wraps the event in the delivery envelope, signs it (Standard
//! Webhooks, the hub's signer) and POSTs it with reqwest to the one receiver. No storage, no
//! queue, no fan-out, no retry, no log: the ceiling the hub's own work is measured against.
//!
//! `bare-relay LISTEN_ADDR HOOK_URL SECRET`

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What each connection's requests share.
struct Relay {
    hook: String,
    secret: String,
    client: reqwest::Client,
    next_id: AtomicU64,
}

impl Relay {
    /// Answers a publish `202` and forwards the event, signed, after the answer.
    async fn publish(self: Arc<Self>, body: Bytes) -> hyper::Response<Full<Bytes>> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("evt_relay_{n:016}");
        let answer = format!(r#"{{"id":"{id}","topic":"door.request.allowed","duplicate":false}}"#);
        tokio::spawn(async move { self.forward(id, body).await });
        hyper::Response::builder()
            .status(202)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(answer)))
            .expect("a valid response")
    }

    async fn forward(&self, id: String, event: Bytes) {
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(&event) else {
            return;
        };
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let envelope = serde_json::json!({
            "id": id, "type": event["topic"], "timestamp": timestamp,
            "account": "acme", "subscription_id": "sub_relay", "data": event["data"],
        })
        .to_string();
        let signature = hub::signing::signature_header(
            [self.secret.as_str()],
            &id,
            timestamp,
            envelope.as_bytes(),
        );
        let _ = self
            .client
            .post(&self.hook)
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header("content-type", "application/json")
            .body(envelope)
            .send()
            .await;
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, hook, secret] = args.as_slice() else {
        eprintln!("usage: bare-relay LISTEN_ADDR HOOK_URL SECRET");
        std::process::exit(2);
    };
    let relay = Arc::new(Relay {
        hook: hook.clone(),
        secret: secret.clone(),
        client: reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client"),
        next_id: AtomicU64::new(0),
    });
    let listener = tokio::net::TcpListener::bind(listen.as_str())
        .await
        .expect("the address is free");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let relay = relay.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let relay = relay.clone();
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        Ok::<_, Infallible>(relay.publish(body).await)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
