//! A capturing receiver: records every request and answers as a script says.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::within;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request path.
    pub path: String,
    /// Headers, lower-case names.
    pub headers: HashMap<String, String>,
    /// Raw body.
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("deliveries are JSON")
    }

    /// A header value.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

/// How the receiver answers: status, extra headers, body, and a delay before answering.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Bytes,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    /// A plain answer with this status.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: Bytes::new(),
            delay: Duration::ZERO,
        }
    }
}

type Script = Arc<dyn Fn(&Received, usize) -> Reply + Send + Sync>;

/// A loopback HTTP server that records every request and answers as scripted.
#[derive(Clone)]
pub struct TestReceiver {
    /// Its address.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
}

impl TestReceiver {
    /// A receiver that answers `200` to everything.
    pub async fn start() -> TestReceiver {
        Self::scripted(|_, _| Reply::status(200)).await
    }

    /// A receiver that confirms (`200` to the confirmation) and then fails every event with
    /// `500`.
    pub async fn failing_events() -> TestReceiver {
        Self::scripted(|req, _| {
            if req.json()["type"] == "Confirmation" {
                Reply::status(200)
            } else {
                Reply::status(500)
            }
        })
        .await
    }

    /// A receiver answering with `script(request, index)`; `index` counts requests from 0.
    pub async fn scripted(
        script: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static,
    ) -> TestReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = TestReceiver {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            script: Arc::new(Mutex::new(Arc::new(script))),
        };
        let me = receiver.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let me = me.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let received = Received {
                                    path: parts.uri.to_string(),
                                    headers: parts
                                        .headers
                                        .iter()
                                        .map(|(k, v)| {
                                            (
                                                k.as_str().to_string(),
                                                v.to_str().unwrap_or("").to_string(),
                                            )
                                        })
                                        .collect(),
                                    body,
                                    at: Instant::now(),
                                };
                                let index = {
                                    let mut seen = me.seen.lock().unwrap();
                                    seen.push(received.clone());
                                    seen.len() - 1
                                };
                                let script = me.script.lock().unwrap().clone();
                                let reply = script(&received, index);
                                if !reply.delay.is_zero() {
                                    tokio::time::sleep(reply.delay).await;
                                }
                                let mut resp = hyper::Response::builder().status(reply.status);
                                for (k, v) in &reply.headers {
                                    resp = resp.header(k, v);
                                }
                                Ok::<_, std::convert::Infallible>(
                                    resp.body(Full::new(reply.body)).unwrap(),
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
        receiver
    }

    /// Replaces the script.
    pub fn set_script(&self, script: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) {
        *self.script.lock().unwrap() = Arc::new(script);
    }

    /// Its URL with a path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived (panics after `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until(timeout, &format!("{n} requests"), |seen| {
            (seen.len() >= n).then(|| seen.to_vec())
        })
        .await
    }

    /// Waits until everything received satisfies `done`.
    pub async fn wait_until_events(&self, timeout: Duration, done: impl Fn(&[Received]) -> bool) {
        self.wait_until(timeout, "the expected deliveries", |seen| {
            done(seen).then_some(())
        })
        .await
    }

    /// Waits for the first request matching `pred`.
    pub async fn wait_for_match(
        &self,
        timeout: Duration,
        pred: impl Fn(&Received) -> bool,
    ) -> Received {
        self.wait_until(timeout, "a matching request", |seen| {
            seen.iter().find(|r| pred(r)).cloned()
        })
        .await
    }

    /// Polls what arrived until `check` finds what it wants; panics with `what` after `timeout`.
    async fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        check: impl Fn(&[Received]) -> Option<T>,
    ) -> T {
        let found = within(timeout, || {
            let found = check(&self.received());
            async move { found }
        })
        .await;
        found.unwrap_or_else(|| {
            let seen = self.received();
            panic!(
                "expected {what} within {timeout:?}, got {}: {:#?}",
                seen.len(),
                seen.iter()
                    .map(|r| format!(
                        "{} {} {}",
                        r.path,
                        r.header("webhook-id"),
                        String::from_utf8_lossy(&r.body)
                    ))
                    .collect::<Vec<_>>()
            )
        })
    }
}
