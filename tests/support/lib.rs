//! Test support for the end-to-end suites: a `webhook-hub serve` process on either backend, a
//! capturing receiver with scripted faults, and a Standard Webhooks verifier written
//! independently of the hub's signer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use sha2::Sha256;

mod inprocess;
pub use inprocess::*;

/// Which backend the hub process runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `--backend memory`.
    Memory,
    /// `--backend aws` against the emulator at `AWS_ENDPOINT_URL`.
    Aws,
}

/// The API keys every hub process in the tests accepts.
pub const KEY_A: &str = "key-acme";
/// A second key of the first account (another owner).
pub const KEY_A2: &str = "key-acme-2";
/// A key of another account.
pub const KEY_B: &str = "key-beta";

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of a built binary of the workspace (`HUB_TARGET_DIR` or `target/debug`).
pub fn binary(name: &str) -> PathBuf {
    let dir = std::env::var("HUB_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target/debug"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace` first (the README's test command does)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `webhook-hub serve`; killed on drop.
pub struct HubProcess {
    child: Child,
    /// Base URL of its API.
    pub url: String,
    /// Its log file.
    pub log_path: PathBuf,
    /// A client for the API.
    pub http: reqwest::Client,
}

/// A JSON answer of the API.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Parsed body (`Null` when empty).
    pub body: Value,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    let n: u32 = rand_u32();
    format!("{prefix}-{}-{n:08x}", std::process::id())
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    nanos.wrapping_mul(2654435761)
        ^ COUNTER
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .wrapping_mul(40503)
}

impl HubProcess {
    /// Starts the hub on `backend` with the test keys, private targets allowed, test hooks on,
    /// and `extra` arguments; waits until it answers.
    pub async fn start(backend: Backend, extra: &[&str]) -> HubProcess {
        Self::start_on(backend, &unique("wh"), extra, &[]).await
    }

    /// The same on the AWS resources named `name` (table `name`, queues `name-events`,
    /// `name-deliveries`), with extra environment variables.
    pub async fn start_on(
        backend: Backend,
        name: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> HubProcess {
        Self::launch(backend, name, true, extra, env).await
    }

    /// A hub as production runs it: `https` callbacks only, no private targets.
    pub async fn start_strict(backend: Backend) -> HubProcess {
        Self::launch(backend, &unique("strict"), false, &[], &[]).await
    }

    async fn launch(
        backend: Backend,
        name: &str,
        allow_private: bool,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> HubProcess {
        let port = free_port();
        let log_path = std::env::temp_dir().join(format!("{}.log", unique("webhook-hub")));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(binary("webhook-hub"));
        cmd.arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--api-key", &format!("{KEY_A}=acme")])
            .args(["--api-key", &format!("{KEY_A2}=acme")])
            .args(["--api-key", &format!("{KEY_B}=beta")])
            .args(["--test-control", "--sweep-interval", "1h"])
            .args(extra)
            .env_remove("HUB_API_KEY")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if backend == Backend::Aws {
            let endpoint = std::env::var("AWS_ENDPOINT_URL")
                .expect("AWS_ENDPOINT_URL must point at moto_server for the aws suite (the README's test command starts one)");
            cmd.args(["--backend", "aws", "--create-resources"])
                .env("AWS_ENDPOINT_URL", endpoint)
                .env("HUB_TABLE", name)
                .env("HUB_EVENTS_QUEUE", format!("{name}-events"))
                .env("HUB_DELIVERIES_QUEUE", format!("{name}-deliveries"));
            for (var, default) in [
                ("AWS_ACCESS_KEY_ID", "test"),
                ("AWS_SECRET_ACCESS_KEY", "test"),
                ("AWS_REGION", "us-east-1"),
            ] {
                if std::env::var(var).is_err() {
                    cmd.env(var, default);
                }
            }
        }
        if allow_private {
            cmd.arg("--allow-private-targets");
        }
        cmd.envs(env.iter().copied())
            .env_remove("HUB_ALLOW_PRIVATE_TARGETS");
        let child = cmd.spawn().expect("webhook-hub starts");
        let hub = HubProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log_path,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "webhook-hub did not listen in 30 s; log:\n{}",
                hub.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        hub
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends a request; `key` is the bearer token, `body` a JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.url)
        };
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("the hub answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Answer {
            status,
            body,
            headers,
        }
    }

    /// Sends a raw body.
    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: &'static str,
    ) -> Answer {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .body(body);
        if let Some(key) = key {
            req = req
                .bearer_auth(key)
                .header("content-type", "application/json");
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers,
        }
    }

    /// Moves the hub's clock forward.
    pub async fn advance_clock(&self, by: Duration) {
        let a = self
            .call(
                "POST",
                &format!("/_test/clock/advance?ms={}", by.as_millis()),
                Some(KEY_A),
                None,
            )
            .await;
        assert_eq!(a.status, 200);
    }

    /// Runs a sweep now.
    pub async fn sweep(&self) -> Value {
        self.call("POST", "/_test/sweep", Some(KEY_A), None)
            .await
            .body
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process with SIGINT and waits for it.
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "webhook-hub did not stop on SIGINT"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.received();
            if let Some(found) = check(&seen) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "expected {what} within {timeout:?}, got {}: {seen:#?}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Verifies a delivery the way a Standard Webhooks receiver does: recomputes
/// `v1,base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))` and looks for it among the
/// space-separated signatures. Returns whether one matched.
pub fn verify_standard(secret: &str, received: &Received) -> bool {
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => B64.decode(b64).expect("whsec_ secrets are base64"),
        None => secret.as_bytes().to_vec(),
    };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(received.header("webhook-id").as_bytes());
    mac.update(b".");
    mac.update(received.header("webhook-timestamp").as_bytes());
    mac.update(b".");
    mac.update(&received.body);
    let expected = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
    received
        .header("webhook-signature")
        .split(' ')
        .any(|sig| sig == expected)
}

/// Asserts that nothing more than `count` requests arrive within `quiet`.
pub async fn assert_quiet(receiver: &TestReceiver, count: usize, quiet: Duration) {
    tokio::time::sleep(quiet).await;
    let seen = receiver.received();
    assert_eq!(
        seen.len(),
        count,
        "unexpected deliveries: {:#?}",
        &seen[count.min(seen.len())..]
    );
}

/// A raw TCP receiver for faults HTTP servers will not produce: each connection's request is
/// read, then `behave` gets the socket. Returns its address.
pub async fn raw_receiver<F, Fut>(behave: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let behave = Arc::new(behave);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let behave = behave.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut read = 0;
                // Read headers and (roughly) the body, so the sender is not stopped mid-write.
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf[read..]))
                        .await
                {
                    if n == 0 {
                        break;
                    }
                    read += n;
                    let text = String::from_utf8_lossy(&buf[..read]);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if read >= end + 4 + len {
                            break;
                        }
                    }
                }
                behave(stream).await;
            });
        }
    });
    addr
}

/// A receiver that resets every connection after reading the request (`SO_LINGER` 0).
pub async fn resetting_receiver() -> SocketAddr {
    raw_receiver(|stream| async move {
        let _ = stream.set_zero_linger();
        drop(stream);
    })
    .await
}

/// A receiver that answers 200 with a 100-byte body sent one byte every 100 ms (10 s in all).
pub async fn dripping_receiver() -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    raw_receiver(|mut stream| async move {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
            .await;
        for _ in 0..100 {
            if stream.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// An HTTPS server with a self-signed certificate (`openssl s_server`); killed on drop.
pub struct SelfSignedTls {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: PathBuf,
}

impl SelfSignedTls {
    /// Generates a certificate and starts the server.
    pub async fn start() -> SelfSignedTls {
        let dir = std::env::temp_dir().join(unique("tls"));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl is installed");
        assert!(status.success());
        let port = free_port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
            .arg("-cert")
            .arg(dir.join("cert.pem"))
            .arg("-key")
            .arg(dir.join("key.pem"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "openssl s_server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        SelfSignedTls {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for SelfSignedTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long the suites wait for a delivery.
pub const WAIT: Duration = Duration::from_secs(15);
/// How long the suites watch for deliveries that must not come.
pub const QUIET: Duration = Duration::from_millis(1500);

/// Subscribes `path` on `receiver`, waits for the confirmation, follows its link. Returns the
/// create response (with `secret`).
pub async fn subscribe_confirmed(
    hub: &HubProcess,
    receiver: &TestReceiver,
    key: &str,
    path: &str,
    extra: Value,
) -> Value {
    let created = subscribe_pending(hub, receiver, key, path, extra).await;
    let confirmation = receiver
        .wait_for_match(WAIT, |r| {
            r.path == path && r.json()["type"] == "Confirmation"
        })
        .await;
    let url = confirmation.json()["confirmation_url"]
        .as_str()
        .unwrap()
        .to_string();
    let confirmed = hub.call("GET", &url, None, None).await;
    assert_eq!(confirmed.status, 200, "{:?}", confirmed.body);
    assert_eq!(confirmed.body["status"], "active");
    created
}

/// Subscribes `path` on `receiver` (topic `door.request.allowed` unless `extra` says otherwise); expects 201.
pub async fn subscribe_pending(
    hub: &HubProcess,
    receiver: &TestReceiver,
    key: &str,
    path: &str,
    extra: Value,
) -> Value {
    let mut body = json!({"callback_url": receiver.url(path), "topics": ["door.request.allowed"]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    let created = hub
        .call("POST", "/v1/subscriptions", Some(key), Some(body))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    created.body
}

/// Publishes an event; expects 202.
pub async fn publish(hub: &HubProcess, key: &str, body: Value) -> Value {
    let answer = hub.call("POST", "/v1/events", Some(key), Some(body)).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    answer.body
}

/// The non-confirmation requests a path received.
pub fn events_at<'a>(received: &'a [Received], path: &str) -> Vec<&'a Received> {
    received
        .iter()
        .filter(|r| r.path == path && r.json()["type"] != "Confirmation")
        .collect()
}

/// What a Lambda binary answered the runtime emulator.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// `response` or `error` (or `init/error`).
    pub kind: String,
    /// The posted body.
    pub body: Value,
    /// From spawning the binary to its first `next` request.
    pub first_next: Duration,
    /// From spawning the binary to its answer.
    pub answered: Duration,
    /// Peak resident memory of the process when it answered (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
}

/// Peak resident set size of a process (`VmHWM` in `/proc/<pid>/status`), KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A function binary's command line as Lambda starts it: the Runtime API address and the
/// variables `lambda_runtime` reads, plus `env`.
fn lambda_command(path: &std::path::Path, api: &SocketAddr, env: &[(&str, String)]) -> Command {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let mut cmd = Command::new(path);
    cmd.env("AWS_LAMBDA_RUNTIME_API", api.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", &name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/23/[$LATEST]emulator")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

#[derive(Default)]
struct EmulatorState {
    first_next: Option<Instant>,
    answer: Option<(String, Value, Instant)>,
    served: bool,
}

/// A loopback Lambda Runtime API (`/2018-06-01/runtime/invocation/next`, `/response`,
/// `/error`, `/init/error`) that serves one event, so a built function binary runs its real
/// `lambda_runtime` loop as in Lambda.
pub struct RuntimeEmulator {
    addr: SocketAddr,
    state: Arc<Mutex<EmulatorState>>,
}

impl RuntimeEmulator {
    /// Starts the emulator with the one event it will serve.
    pub async fn start(event: String) -> RuntimeEmulator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<Mutex<EmulatorState>> = Arc::default();
        let shared = state.clone();
        let event = Bytes::from(event);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (state, event) = (shared.clone(), event.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (state, event) = (state.clone(), event.clone());
                            async move {
                                let path = req.uri().path().to_string();
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let now = Instant::now();
                                if path.ends_with("/invocation/next") {
                                    let first = {
                                        let mut s = state.lock().unwrap();
                                        s.first_next.get_or_insert(now);
                                        !std::mem::replace(&mut s.served, true)
                                    };
                                    if !first {
                                        // One event per boot: later polls wait until the process is stopped.
                                        std::future::pending::<()>().await;
                                    }
                                    let deadline = std::time::SystemTime::now()
                                        .duration_since(std::time::UNIX_EPOCH)
                                        .unwrap()
                                        .as_millis()
                                        + 30_000;
                                    let resp = hyper::Response::builder()
                                    .header("lambda-runtime-aws-request-id", "8476a536-e9f4-11e8-9739-2dfe598c3fcd")
                                    .header("lambda-runtime-deadline-ms", deadline.to_string())
                                    .header("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:123456789012:function:webhook-hub")
                                    .header("lambda-runtime-trace-id", "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1")
                                    .header("content-type", "application/json")
                                    .body(Full::new(event))
                                    .unwrap();
                                    return Ok::<_, std::convert::Infallible>(resp);
                                }
                                let kind = if path.ends_with("/response") {
                                    "response"
                                } else if path.ends_with("/init/error") {
                                    "init/error"
                                } else {
                                    "error"
                                };
                                let value = serde_json::from_slice(&body).unwrap_or(Value::String(
                                    String::from_utf8_lossy(&body).into(),
                                ));
                                state.lock().unwrap().answer = Some((kind.to_string(), value, now));
                                Ok(hyper::Response::builder()
                                    .status(202)
                                    .body(Full::new(Bytes::from_static(b"{}")))
                                    .unwrap())
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        RuntimeEmulator { addr, state }
    }

    /// Boots `binary` against this emulator with `env`, waits for its answer to the event, then
    /// stops it.
    pub async fn invoke(&self, binary_name: &str, env: &[(&str, String)]) -> Invocation {
        self.invoke_path(&binary(binary_name), env).await
    }

    /// Boots `binary_path` and measures the time from exec to its first `next` request, then
    /// stops it.
    pub async fn boot(&self, binary_path: &std::path::Path, env: &[(&str, String)]) -> Duration {
        let started = Instant::now();
        let mut child = lambda_command(binary_path, &self.addr, env)
            .spawn()
            .expect("the function binary starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        let first = loop {
            if let Some(at) = self.state.lock().unwrap().first_next {
                break at;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "{} exited during init",
                binary_path.display()
            );
            assert!(
                Instant::now() < deadline,
                "{} did not poll within 30 s",
                binary_path.display()
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        let _ = child.kill();
        let _ = child.wait();
        first - started
    }

    /// [`RuntimeEmulator::invoke`] for a binary at `path`.
    pub async fn invoke_path(&self, path: &std::path::Path, env: &[(&str, String)]) -> Invocation {
        let binary_name = path.file_name().unwrap().to_string_lossy().to_string();
        let started = Instant::now();
        let mut child = lambda_command(path, &self.addr, env)
            .spawn()
            .expect("the function binary starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        let answer = loop {
            if let Some(answer) = self.state.lock().unwrap().answer.clone() {
                break answer;
            }
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                use std::io::Read;
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr)
                    .ok();
                panic!("{binary_name} exited ({status}) without answering: {stderr}");
            }
            assert!(
                Instant::now() < deadline,
                "{binary_name} did not answer within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let peak_rss_kib = peak_rss_kib(child.id());
        let _ = child.kill();
        let _ = child.wait();
        let first_next = self
            .state
            .lock()
            .unwrap()
            .first_next
            .expect("a next request came first");
        Invocation {
            kind: answer.0,
            body: answer.1,
            first_next: first_next - started,
            answered: answer.2 - started,
            peak_rss_kib,
        }
    }
}

/// The subscription id the samples in `events/` name.
pub const SAMPLE_SUB: &str = "sub_019ab0c0f0000123456789abcdef";
/// The confirmation token of `events/confirm.json`.
pub const SAMPLE_TOKEN: &str = "5f2b7c9e1d4a8b3c6e0f9a2d7b4c1e8f3a6d9b2c5e8f1a4d";

/// A sample event from `events/`.
pub fn event_sample(name: &str) -> String {
    let path = workspace_root().join("events").join(format!("{name}.json"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The subscription the samples expect: account `acme`, topic `door.request.allowed`, a one-hour
/// lease, confirmable with [`SAMPLE_TOKEN`].
pub fn sample_subscription(
    now_ms: i64,
    status: hub::model::SubscriptionStatus,
    callback_url: &str,
) -> hub::model::Subscription {
    let mut sub = hub::model::Subscription::new_pending(
        SAMPLE_SUB.into(),
        "acme".into(),
        "acme".into(),
        callback_url.into(),
        now_ms,
    );
    sub.topics = vec![hub::topic::Pattern::parse("door.request.allowed").unwrap()];
    sub.status = status;
    sub.expires_at_ms = now_ms + 3_600_000;
    sub.lease_ms = 3_600_000;
    sub.pending_until_ms = Some(now_ms + 3_600_000);
    sub.secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into();
    // The token's hash as the hub stores it, computed here without the hub's helpers.
    sub.confirm_token_sha256 = Some(
        <sha2::Sha256 as sha2::Digest>::digest(SAMPLE_TOKEN.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    );
    sub.version = 1;
    sub
}

/// Runs each named scenario of the calling file's `scenarios` module as two tests, `memory::…`
/// and `aws::…`: the same suite against each backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { scenarios::$name($crate::Backend::Memory).await } )*
        }
        mod aws {
            use super::*;
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { scenarios::$name($crate::Backend::Aws).await } )*
        }
    };
}

/// The environment a function binary reads in Lambda (as the template passes it), pointed at
/// the emulator in `AWS_ENDPOINT_URL` and the resources named `name` (queue URLs: no lookup at
/// init).
pub fn lambda_env(name: &str) -> Vec<(&'static str, String)> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    vec![
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("HUB_TABLE", name.into()),
        (
            "HUB_EVENTS_QUEUE",
            format!("{endpoint}/123456789012/{name}-events"),
        ),
        (
            "HUB_DELIVERIES_QUEUE",
            format!("{endpoint}/123456789012/{name}-deliveries"),
        ),
        ("HUB_ALLOW_PRIVATE_TARGETS", "1".into()),
        ("AWS_LAMBDA_LOG_LEVEL", "WARN".into()),
    ]
}
