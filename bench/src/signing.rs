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

/// µs per opening of a sealed signing secret as the sender does before each attempt
/// (`Keyring::open`: AES-256-GCM under the cached data key, bound to the subscription id).
fn open_sealed_us(run_for: Duration) -> f64 {
    use std::sync::Arc;
    futures::executor::block_on(async {
        let keys = hub::keyring::Keyring::new(
            Arc::new(hub::adapters::master_key::LocalMasterKey::generate()),
            Arc::new(hub::adapters::memory::MemoryStore::default()),
        );
        let sealed = keys
            .seal("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "sub_bench")
            .await
            .unwrap();
        let started = Instant::now();
        let mut opened = 0u64;
        while started.elapsed() < run_for {
            for _ in 0..256 {
                std::hint::black_box(keys.open(&sealed, "sub_bench").await.unwrap());
                opened += 1;
            }
        }
        started.elapsed().as_secs_f64() * 1e6 / opened as f64
    })
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
    // What sealing adds to each attempt: one open per signing secret, beside the signature.
    let open_us = open_sealed_us(Duration::from_secs(seconds));
    let sign_us = 1024.0 / hub_mb_s(1024, Duration::from_secs(seconds));
    section.line(format!(
        "measured, opening a sealed secret (AES-256-GCM, data key cached): {open_us:.2} µs; signing a 1 KiB delivery: {sign_us:.2} µs; sealing adds {:.0} % to signing, once per secret per attempt",
        open_us / sign_us * 100.0
    ));
    section
}
