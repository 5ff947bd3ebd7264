//! The Lambda side: a Runtime API emulator that boots a built function binary, the `events/`
//! samples and what they expect in the store, and the environment the template gives a function.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::*;

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
    /// What it wrote to stdout (its log lines, as CloudWatch Logs would get them).
    pub stdout: String,
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

/// A Lambda function's binary: the workspace build, or with `HUB_LAMBDA_ARTIFACTS=DIR` the
/// deployable artifact `DIR/<function>/bootstrap` that `cargo lambda build` writes (the
/// packaging script boots the arm64 ones this way, under `qemu-aarch64`).
pub fn function_binary(function: &str) -> std::path::PathBuf {
    match std::env::var("HUB_LAMBDA_ARTIFACTS") {
        Ok(dir) => {
            let path = std::path::Path::new(&dir).join(function).join("bootstrap");
            assert!(path.exists(), "{} is not built", path.display());
            path
        }
        Err(_) => binary(function),
    }
}

/// A function binary's command line as Lambda starts it: the Runtime API address and the
/// variables `lambda_runtime` reads, plus `env`; the binary runs directly, or through
/// `HUB_LAMBDA_RUNNER` (an emulator and its arguments, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`).
fn lambda_command(path: &std::path::Path, api: &SocketAddr, env: &[(&str, String)]) -> Command {
    let name = match path.file_name().unwrap().to_string_lossy() {
        n if n == "bootstrap" => path
            .parent()
            .and_then(|p| p.file_name())
            .unwrap()
            .to_string_lossy()
            .to_string(),
        n => n.to_string(),
    };
    let mut cmd = match std::env::var("HUB_LAMBDA_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut words = runner.split_whitespace();
            let mut cmd = Command::new(words.next().unwrap());
            cmd.args(words).arg(path);
            cmd
        }
        _ => Command::new(path),
    };
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

/// A file for a function's stdout.
fn stdout_file() -> (std::path::PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!("{}.out", crate::unique("lambda")));
    let file = std::fs::File::create(&path).unwrap();
    (path, file)
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
        self.invoke_path(&function_binary(binary_name), env).await
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
        let (stdout_path, stdout) = stdout_file();
        let started = Instant::now();
        let mut child = lambda_command(path, &self.addr, env)
            .stdout(stdout)
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
            stdout: {
                let text = std::fs::read_to_string(&stdout_path).unwrap_or_default();
                let _ = std::fs::remove_file(&stdout_path);
                text
            },
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
        hub::keyring::Sealed::plain("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    );
    sub.topics = vec![hub::topic::Pattern::parse("door.request.allowed").unwrap()];
    sub.status = status;
    sub.expires_at_ms = now_ms + 3_600_000;
    sub.lease_ms = 3_600_000;
    sub.pending_until_ms = Some(now_ms + 3_600_000);
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
        ("HUB_KMS_KEY_ID", crate::TEST_KMS_KEY.into()),
        ("AWS_LAMBDA_LOG_LEVEL", "WARN".into()),
    ]
}
