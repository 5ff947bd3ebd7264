//! Figure 7: publish-to-receipt latency of `serve` at a steady offered load, on the memory
//! backend and on SQLite (`--durability normal` and `full`), for 1 to 64 publishing
//! connections: p50, p99 and max of the time from the moment a publish is sent to the moment
//! the receiver has the delivery, both read from the wall clock of this one machine (the
//! event's `data.sent_us` carries the first; the receiver subtracts it on arrival).

use std::collections::HashMap;
use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::{Options, Section};

/// The backends and durabilities measured.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Memory,
    SqliteNormal,
    SqliteFull,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Memory => "memory",
            Mode::SqliteNormal => "SQLite normal",
            Mode::SqliteFull => "SQLite full",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Mode::Memory => &["--backend", "memory"],
            Mode::SqliteNormal => &["--backend", "sqlite", "--durability", "normal"],
            Mode::SqliteFull => &["--backend", "sqlite", "--durability", "full"],
        }
    }
}

/// Offered load: events per second over this many publishing connections.
const POINTS: [(u32, usize); 5] = [(200, 1), (200, 4), (200, 16), (200, 64), (1000, 16)];

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What the receiver saw: each event's latency (µs) by its publish sequence number, and the
/// confirmation link.
#[derive(Default)]
struct Seen {
    latency_us: HashMap<u64, u64>,
    confirmation_url: Option<String>,
}

async fn timing_receiver() -> (String, Arc<Mutex<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let shared = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let seen = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let arrived = wall_us();
                            let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                            let mut seen = seen.lock().unwrap();
                            if let Some(url) = v["confirmation_url"].as_str() {
                                seen.confirmation_url = Some(url.to_string());
                            } else if let (Some(seq), Some(sent)) =
                                (v["data"]["seq"].as_u64(), v["data"]["sent_us"].as_u64())
                            {
                                seen.latency_us
                                    .entry(seq)
                                    .or_insert(arrived.saturating_sub(sent));
                            }
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, seen)
}

/// The `q` quantile (0–1) of sorted values.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// One load point's outcome.
struct Point {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    published: usize,
    delivered: usize,
}

/// Publishes `rate` events/s for `seconds` over `connections` keep-alive connections (event
/// `i` is due at `i / rate` s and goes out on connection `i % connections`), then waits for
/// every accepted one to arrive.
async fn offer(
    base: &str,
    seen: &Arc<Mutex<Seen>>,
    first_seq: u64,
    rate: u32,
    connections: usize,
    seconds: f64,
) -> Point {
    let total = (f64::from(rate) * seconds) as u64;
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let pad = "x".repeat(600);
    let mut tasks = Vec::new();
    for lane in 0..connections {
        let (base, pad) = (base.to_string(), pad.clone());
        tasks.push(tokio::spawn(async move {
            // One connection per publisher, kept alive, as a producer's HTTP client would.
            let client = reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(1)
                .tcp_nodelay(true)
                .build()
                .unwrap();
            // The connection is opened (and the path warmed) before the measured window, with an
            // event no subscription matches.
            let warm = json!({"topic": "bench.warmup", "data": {}});
            let _ = client
                .post(format!("{base}/v1/events"))
                .bearer_auth("bench")
                .json(&warm)
                .send()
                .await;
            let mut accepted = Vec::new();
            let mut i = lane as u64;
            while i < total {
                let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
                tokio::time::sleep_until(due).await;
                let seq = first_seq + i;
                let body = json!({"topic": "door.request.allowed",
                                  "data": {"seq": seq, "sent_us": wall_us(), "pad": pad}});
                let answer = client
                    .post(format!("{base}/v1/events"))
                    .bearer_auth("bench")
                    .json(&body)
                    .send()
                    .await;
                if answer.is_ok_and(|a| a.status() == 202) {
                    accepted.push(seq);
                }
                i += connections as u64;
            }
            accepted
        }));
    }
    let mut accepted = Vec::new();
    for task in tasks {
        accepted.extend(task.await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all_in = {
            let seen = seen.lock().unwrap();
            accepted.iter().all(|s| seen.latency_us.contains_key(s))
        };
        if all_in || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut latencies: Vec<u64> = {
        let seen = seen.lock().unwrap();
        accepted
            .iter()
            .filter_map(|s| seen.latency_us.get(s).copied())
            .collect()
    };
    latencies.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    Point {
        p50_ms: ms(quantile(&latencies, 0.5)),
        p99_ms: ms(quantile(&latencies, 0.99)),
        max_ms: ms(latencies.last().copied().unwrap_or(0)),
        published: accepted.len(),
        delivered: latencies.len(),
    }
}

/// Starts `serve` in `mode` with a timing receiver subscribed and confirmed; runs every load
/// point against it, in order.
async fn run_mode(options: &Options, mode: Mode, seconds: f64) -> Vec<Point> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let scratch = std::env::temp_dir().join(format!("bench-latency-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let mut hub = Command::new(options.binary("webhook-hub"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--api-key",
            "bench=acme",
            "--allow-private-targets",
            "--test-control",
            "--data",
        ])
        .arg(scratch.join("hub.db"))
        .args(mode.args())
        .env_remove("RUST_LOG")
        .stdout(std::fs::File::create(scratch.join("hub.log")).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("webhook-hub starts");
    let base = format!("http://127.0.0.1:{port}");
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (hook, seen) = timing_receiver().await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let created = client
        .post(format!("{base}/v1/subscriptions"))
        .bearer_auth("bench")
        .json(&json!({"callback_url": hook, "topics": ["door.*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let confirm = loop {
        if let Some(url) = seen.lock().unwrap().confirmation_url.clone() {
            break url;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(client.get(confirm).send().await.unwrap().status(), 200);
    // Three seconds at 200/s first, not counted: the file's first pages, the first WAL cycles,
    // the receiver's connections.
    offer(
        &base,
        &seen,
        u64::MAX / 2,
        200,
        4,
        if options.smoke { 0.2 } else { 3.0 },
    )
    .await;
    let mut points = Vec::new();
    let mut next_seq = 0;
    for (rate, connections) in POINTS {
        points.push(offer(&base, &seen, next_seq, rate, connections, seconds).await);
        next_seq += 1_000_000;
    }
    let _ = hub.kill();
    let _ = hub.wait();
    let _ = std::fs::remove_dir_all(&scratch);
    points
}

pub async fn latency(options: &Options) -> Section {
    let mut section = Section::new(
        "7. Latency: publish to receipt at a steady load, memory vs SQLite (normal, full)",
    );
    let seconds = if options.smoke { 0.5 } else { 10.0 };
    section.line(format!(
        "method: `serve` (release, default log level) with one active subscription at a loopback receiver answering 200 at once; events of ~750 bytes published at the offered rate, each due at a fixed time and sent on its connection (keep-alive, one request at a time, opened before the point starts), {seconds} s per point after 3 s of load not counted; latency = receipt time − send time, both from this machine's wall clock"
    ));
    let mut by_mode = Vec::new();
    for mode in [Mode::Memory, Mode::SqliteNormal, Mode::SqliteFull] {
        let points = run_mode(options, mode, seconds).await;
        for ((rate, connections), point) in POINTS.iter().zip(&points) {
            section.line(format!(
                "measured, {:<13} {rate:>5}/s over {connections:>2} connections: p50 {:>6.2} ms, p99 {:>6.2} ms, max {:>6.2} ms ({} of {} delivered)",
                mode.label(),
                point.p50_ms,
                point.p99_ms,
                point.max_ms,
                point.delivered,
                point.published
            ));
        }
        by_mode.push((mode, points));
    }
    let points_of = |mode: Mode| &by_mode.iter().find(|(m, _)| *m == mode).unwrap().1;
    let (memory, normal) = (points_of(Mode::Memory), points_of(Mode::SqliteNormal));
    let at_200 = |points: &Vec<Point>| {
        points
            .iter()
            .zip(POINTS)
            .filter(|(_, (rate, _))| *rate == 200)
            .map(|(p, _)| (p.p99_ms, p.max_ms))
            .collect::<Vec<_>>()
    };
    let worst_p99 = at_200(normal)
        .iter()
        .map(|(p99, _)| *p99)
        .fold(0.0, f64::max);
    let worst_max = at_200(normal)
        .iter()
        .map(|(_, max)| *max)
        .fold(0.0, f64::max);
    let worst_ratio = normal
        .iter()
        .zip(memory)
        .map(|(s, m)| s.p99_ms / m.p99_ms.max(0.001))
        .fold(0.0, f64::max);
    let verdict = |ok: bool| if ok { "met" } else { "✗ missed" };
    section.line(format!(
        "computed, SQLite normal at 200/s, 1–64 connections: worst p99 {worst_p99:.2} ms (goal ≤ 3 ms: {}), worst max {worst_max:.2} ms (goal ≤ 20 ms: {})",
        verdict(worst_p99 <= 3.0),
        verdict(worst_max <= 20.0)
    ));
    section.line(format!(
        "computed, SQLite normal p99 / memory p99, worst point: {worst_ratio:.2}× (goal ≤ 2×: {}); at 1,000/s over 16: p99 {:.2} ms (goal ≤ 10 ms: {})",
        verdict(worst_ratio <= 2.0),
        normal[4].p99_ms,
        verdict(normal[4].p99_ms <= 10.0)
    ));
    section
}
