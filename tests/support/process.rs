//! A `webhook-hub serve` process on any backend, and its API client.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Which backend the hub process runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `--backend memory`.
    Memory,
    /// `--backend sqlite` on a fresh file in the temporary directory.
    Sqlite,
    /// `--backend aws` against the emulator at `AWS_ENDPOINT_URL`.
    Aws,
}

impl Backend {
    /// Whether a load test runs its scenario scaled down here: on the AWS emulator, which
    /// serves tens of requests a second on the machine's two cores, unless
    /// `HUB_TESTS_FULL_LOAD=1` asks for the acceptance figures there too (minutes a test).
    pub fn scaled_down(self) -> bool {
        self == Backend::Aws && std::env::var("HUB_TESTS_FULL_LOAD").as_deref() != Ok("1")
    }
}

/// The API keys every hub process in the tests accepts.
pub const KEY_A: &str = "key-acme";
/// A second key of the first account (another owner).
pub const KEY_A2: &str = "key-acme-2";
/// A key of another account.
pub const KEY_B: &str = "key-beta";

/// The repository's root directory.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of a built binary of the workspace. Unless `HUB_TARGET_DIR` names a directory of
/// binaries to test (an older build, say), the first call builds the workspace's binaries
/// (`cargo build --workspace --bins`, a no-op when they are fresh), so a bare `cargo test` never
/// tests a stale `webhook-hub` or Lambda binary.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let dir = match std::env::var("HUB_TARGET_DIR") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => {
            BUILT.get_or_init(|| {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let status = Command::new(cargo)
                    .args(["build", "--quiet", "--workspace", "--bins"])
                    .current_dir(workspace_root())
                    .status()
                    .expect("cargo runs");
                assert!(status.success(), "building the workspace's binaries failed");
            });
            workspace_root().join("target/debug")
        }
    };
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built", path.display());
    path
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `webhook-hub serve`; killed on drop.
pub struct HubProcess {
    child: Child,
    /// How it was started, to start it again on the same port and data.
    launch: Launch,
    /// The SQLite database, on that backend.
    pub data: Option<PathBuf>,
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

    /// A hub as production runs it: `https` callbacks only, no private targets (the test hooks
    /// still on, so callback names are not looked up).
    pub async fn start_strict(backend: Backend) -> HubProcess {
        Self::launch(backend, &unique("strict"), false, &[], &[]).await
    }

    /// A hub exactly as production runs it: no private targets, no test hooks, callback names
    /// looked up in DNS when it connects (only for tests whose callbacks name this machine).
    pub async fn start_production(backend: Backend) -> HubProcess {
        let mut launch = Self::launch_of(backend, &unique("prod"), false, &[], &[]);
        launch.test_control = false;
        Self::spawn(launch).await
    }

    async fn launch(
        backend: Backend,
        name: &str,
        allow_private: bool,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> HubProcess {
        Self::spawn(Self::launch_of(backend, name, allow_private, extra, env)).await
    }

    fn launch_of(
        backend: Backend,
        name: &str,
        allow_private: bool,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Launch {
        Launch {
            backend,
            name: name.to_string(),
            test_control: true,
            allow_private,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            port: free_port(),
            data: (backend == Backend::Sqlite)
                .then(|| std::env::temp_dir().join(format!("{}.db", unique("webhook-hub")))),
        }
    }

    /// A hub on the SQLite database at `data` (an existing file, a backup say); the file is left
    /// in place when the hub is dropped.
    pub async fn start_on_data(data: &std::path::Path) -> HubProcess {
        let mut hub = Self::spawn(Launch {
            backend: Backend::Sqlite,
            name: unique("wh"),
            test_control: true,
            allow_private: true,
            extra: vec![],
            env: vec![],
            port: free_port(),
            data: Some(data.to_path_buf()),
        })
        .await;
        hub.data = None;
        hub
    }

    /// Starts it again after [`HubProcess::crash`], [`HubProcess::interrupt`] or
    /// [`HubProcess::terminate`]: same port, same data, same options, a new log.
    pub async fn restart(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_some(),
            "restart a stopped hub only"
        );
        let fresh = Self::spawn(self.launch.clone()).await;
        let mut old = std::mem::replace(self, fresh);
        old.data = None; // the new process keeps using it
    }

    async fn spawn(launch: Launch) -> HubProcess {
        let port = launch.port;
        let (backend, name, allow_private) =
            (launch.backend, launch.name.as_str(), launch.allow_private);
        let log_path = std::env::temp_dir().join(format!("{}.log", unique("webhook-hub")));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(binary("webhook-hub"));
        cmd.arg("serve");
        if launch.test_control {
            cmd.arg("--test-control");
        }
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--api-key", &format!("{KEY_A}=acme")])
            .args(["--api-key", &format!("{KEY_A2}=acme")])
            .args(["--api-key", &format!("{KEY_B}=beta")])
            .args(["--sweep-interval", "1h"])
            .args(&launch.extra)
            .env_remove("HUB_API_KEY")
            .env_remove("HUB_TEST_CONTROL")
            // The fan-out's per-event line (debug) is what `fanned_out` reads.
            .env("RUST_LOG", "info,hub::service::events=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        match (&launch.data, backend) {
            (Some(data), _) => {
                cmd.args(["--backend", "sqlite", "--data"]).arg(data);
            }
            (None, Backend::Memory) => {
                cmd.args(["--backend", "memory"]);
            }
            _ => {}
        }
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
        cmd.envs(launch.env.iter().map(|(k, v)| (k, v)))
            .env_remove("HUB_ALLOW_PRIVATE_TARGETS");
        let child = cmd.spawn().expect("webhook-hub starts");
        let mut hub = HubProcess {
            child,
            data: launch.data.clone(),
            launch,
            url: format!("http://127.0.0.1:{port}"),
            log_path,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        let listening = crate::within(Duration::from_secs(30), || {
            let exited = hub.child.try_wait().unwrap();
            async move {
                if let Some(status) = exited {
                    return Some(Err(status));
                }
                let open = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
                open.is_ok().then_some(Ok(()))
            }
        })
        .await;
        match listening {
            Some(Ok(())) => {}
            Some(Err(status)) => panic!(
                "webhook-hub exited ({status}) before it listened; log:\n{}",
                hub.log()
            ),
            None => panic!("webhook-hub did not listen in 30 s; log:\n{}", hub.log()),
        }
        hub
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log holds `line`: the hub's log writer is buffered on its own thread,
    /// so a line can reach the file after the effect it reports was seen.
    pub async fn wait_for_log(&self, line: &str) {
        crate::eventually(crate::WAIT, &format!("the log to say `{line}`"), || async {
            self.log().contains(line).then_some(())
        })
        .await
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
        self.signal("INT")
    }

    /// Stops the process with SIGTERM (as a service manager does) and waits for it.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM")
    }

    fn signal(&mut self, name: &str) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "webhook-hub did not stop on SIG{name}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs `webhook-hub` with `args` to its end (at most 60 s) and returns how it exited with its
/// output (stdout then stderr): for commands that finish, and for a `serve` expected to refuse.
pub fn run_to_end(args: &[&std::ffi::OsStr]) -> (std::process::ExitStatus, String) {
    let child = Command::new(binary("webhook-hub"))
        .args(args)
        .env_remove("HUB_API_KEY")
        .env_remove("HUB_DATA")
        .env_remove("HUB_BACKEND")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("webhook-hub starts");
    // Output is read while the command runs (waiting first would block a command that writes
    // more than a pipe holds); the command is killed after 60 s.
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = match finished.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("webhook-hub {args:?} did not end within 60 s");
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

/// How a hub process was started.
#[derive(Clone)]
struct Launch {
    backend: Backend,
    name: String,
    /// Whether the test hooks are on (and callback names are not looked up).
    test_control: bool,
    allow_private: bool,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    port: u16,
    data: Option<PathBuf>,
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(data) = &self.data {
            for suffix in ["", "-wal", "-shm", ".lock", ".key"] {
                let mut path = data.as_os_str().to_owned();
                path.push(suffix);
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
