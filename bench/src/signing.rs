//! Figure 3: the hub's signer against `openssl speed -hmac sha256` on the same machine.

use std::time::{Duration, Instant};

use crate::{Options, Section};

/// MB/s of `openssl speed -hmac sha256` at one buffer size.
fn openssl_mb_s(size: usize, seconds: u64) -> Option<f64> {
    let out = std::process::Command::new("openssl")
        .args([
            "speed",
            "-hmac",
            "sha256",
            "-bytes",
            &size.to_string(),
            "-seconds",
            &seconds.to_string(),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.to_ascii_lowercase().starts_with("hmac"))?;
    let kilo: f64 = line
        .split_whitespace()
        .last()?
        .trim_end_matches('k')
        .parse()
        .ok()?;
    Some(kilo * 1000.0 / 1e6)
}

/// MB/s of the hub's Standard Webhooks signing over `size`-byte bodies, through the function
/// the sender calls for every delivery (`signature_header`: the key is set up per delivery).
fn hub_mb_s(size: usize, run_for: Duration) -> f64 {
    let body = vec![b'x'; size];
    let secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"];
    let started = Instant::now();
    let mut bytes = 0usize;
    let mut sink = 0usize;
    while started.elapsed() < run_for {
        for _ in 0..64 {
            sink += hub::signing::signature_header(
                secrets,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                &body,
            )
            .len();
            bytes += size;
        }
    }
    std::hint::black_box(sink);
    bytes as f64 / 1e6 / started.elapsed().as_secs_f64()
}

pub fn signing(options: &Options) -> Section {
    let mut section = Section::new("3. Signing: the hub's signer vs openssl speed -hmac sha256");
    let seconds = if options.smoke { 1 } else { 3 };
    for size in [1024, 64 * 1024] {
        let hub = hub_mb_s(size, Duration::from_secs(seconds));
        let line = match openssl_mb_s(size, seconds) {
            Some(reference) => format!(
                "measured, {:>6} B: hub {hub:>8.1} MB/s, openssl {reference:>8.1} MB/s, ratio {:.2} (goal ≥ 0.90)",
                size,
                hub / reference
            ),
            None => {
                format!("measured, {size:>6} B: hub {hub:>8.1} MB/s (openssl speed unavailable)")
            }
        };
        section.line(line);
    }
    section
}
