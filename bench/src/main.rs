//! `bench`: the figures a user choosing between webhook-hub, Svix or a home-made sender asks
//! for, each printed beside its reference measured in the same run, written to `BENCHMARKS.md`.
//!
//! `cargo run --release -p bench` (or `scripts/bench`, which builds, starts moto and installs
//! wrk) measures the release binaries; `--smoke` runs every figure briefly on whatever binaries
//! are built, so the test command keeps the benchmarks from rotting.

mod cold;
mod cost;
mod fanout;
mod latency;
mod signing;
mod throughput;

use std::path::PathBuf;

/// How the run is set up.
pub struct Options {
    /// Short runs, no goals checked, nothing written.
    pub smoke: bool,
    /// Where the built binaries are.
    pub bin_dir: PathBuf,
    /// `--modes Memory,Sqlite`: the throughput section runs only these `serve` modes, once each,
    /// and prints their lines without the computed ones (a profiling aid; never written).
    pub modes: Option<Vec<String>>,
}

impl Options {
    /// A built binary.
    pub fn binary(&self, name: &str) -> PathBuf {
        let path = self.bin_dir.join(name);
        assert!(path.exists(), "{} is not built", path.display());
        path
    }
}

/// One figure: a title and its lines.
pub struct Section {
    title: &'static str,
    lines: Vec<String>,
}

impl Section {
    fn new(title: &'static str) -> Self {
        println!("\n## {title}");
        Section {
            title,
            lines: vec![],
        }
    }

    /// Adds a line and prints it as it comes.
    fn line(&mut self, text: impl Into<String>) {
        let text = text.into();
        println!("{text}");
        self.lines.push(text);
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!(
        "{cores} cores ({cpu}), {:.0} GiB",
        mem_kb as f64 / 1024.0 / 1024.0
    )
}

/// The allocator `webhook-hub serve` runs on, so the in-process figures (the sender alone, the
/// bare loop it is compared with) time what production runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// BENCHMARKS.md keeps everything from this line on when the bench rewrites its sections.
const KEPT_MARKER: &str = "<!-- Kept when scripts/bench rewrites the sections above";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let profile = if smoke { "debug" } else { "release" };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin_dir = std::env::var("HUB_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target").join(profile));
    let modes = args
        .iter()
        .position(|a| a == "--modes")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_string).collect());
    let options = Options {
        smoke,
        bin_dir,
        modes,
    };
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL must point at moto_server (scripts/bench starts one)"
    );
    println!(
        "# webhook-hub benchmarks{}\n\nmachine: {}",
        if smoke { " (smoke)" } else { "" },
        machine()
    );

    // `--only throughput` (or cold, signing, fanout, memory, cost, latency) runs one figure and writes
    // nothing unless `--write` is given too; `--only sender` runs the sender alone beside the
    // bare loop (for profiling; never written).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let mut sections = Vec::new();
    if wanted("cold") {
        sections.push(cold::cold_init(&options).await);
    }
    if wanted("throughput") {
        sections.push(throughput::delivery_throughput(&options).await);
    }
    if only.as_deref() == Some("sender") {
        sections.push(throughput::sender_against_bare(&options).await);
    }
    if wanted("signing") {
        sections.push(signing::signing(&options));
    }
    if wanted("fanout") {
        sections.push(fanout::fan_out(&options).await);
    }
    if wanted("memory") {
        sections.push(cold::memory_and_size(&options).await);
    }
    if wanted("cost") {
        sections.push(cost::cost_per_million(&options).await);
    }
    if wanted("latency") {
        sections.push(latency::latency(&options).await);
    }
    if only.is_some() {
        // `--only NAME --write` replaces that one section of BENCHMARKS.md in place, stamped
        // with its own date and commit (the file's header keeps the full run's).
        if args.iter().any(|a| a == "--write")
            && !smoke
            && options.modes.is_none()
            && only.as_deref() != Some("sender")
        {
            write_sections(&root, &sections);
        }
        return;
    }
    if smoke {
        println!("\nbench smoke: {} figures ran", sections.len());
        return;
    }
    let (commit, dirty, date) = tree_state(&root);
    let mut doc = format!(
        "# Benchmarks\n\nMeasured by `scripts/bench` (`cargo run --release -p bench` against moto and wrk) on {}, \
         at commit `{commit}`{}; regenerate it when the code it measures changes. Every line says \
         what it is: **measured** in this run, **computed** from figures or counts measured in this run (with the \
         assumptions named), or **quoted** from elsewhere (not measured here).\n\nMachine: {}\n",
        date,
        if dirty {
            " plus uncommitted changes"
        } else {
            ""
        },
        machine()
    );
    for section in &sections {
        doc.push_str(&format!(
            "\n## {}\n\n```\n{}\n```\n",
            section.title,
            section.lines.join("\n")
        ));
    }
    // What is recorded by hand (the deploy path, profiles) follows the marker and is kept.
    let previous = std::fs::read_to_string(root.join("BENCHMARKS.md")).unwrap_or_default();
    if let Some(at) = previous.find(KEPT_MARKER) {
        doc.push('\n');
        doc.push_str(&previous[at..]);
    }
    std::fs::write(root.join("BENCHMARKS.md"), doc).expect("BENCHMARKS.md is writable");
    println!("\nwrote BENCHMARKS.md");
}

/// The commit, whether the work tree differs from it (BENCHMARKS.md itself, an earlier
/// section's `--write`, changes nothing measured) and today's date, as a run's stamp says them.
fn tree_state(root: &std::path::Path) -> (String, bool, String) {
    let run = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .current_dir(root)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let commit = run("git", &["rev-parse", "--short=12", "HEAD"]);
    let status = [
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":!BENCHMARKS.md",
    ];
    let dirty = !run("git", &status).is_empty();
    (commit, dirty, run("date", &["-u", "+%Y-%m-%d"]))
}

/// The stamp of a section rerun alone.
fn stamp(root: &std::path::Path) -> String {
    let (commit, dirty, date) = tree_state(root);
    format!(
        "this section alone rerun by `bench --only … --write` on {date} at commit `{commit}`{}",
        if dirty {
            " plus uncommitted changes"
        } else {
            ""
        }
    )
}

/// Replaces each section's block (found by its number) in BENCHMARKS.md, stamped.
fn write_sections(root: &std::path::Path, sections: &[Section]) {
    let path = root.join("BENCHMARKS.md");
    let mut doc = std::fs::read_to_string(&path).expect("BENCHMARKS.md");
    for section in sections {
        let number = section.title.split(' ').next().unwrap_or_default();
        let start = doc
            .find(&format!("\n## {number} "))
            .expect("the section is in BENCHMARKS.md")
            + 1;
        // Up to the next section or the hand-recorded part's marker, whichever comes first.
        let rest = &doc[start + 3..];
        let end = [rest.find("\n## "), rest.find("\n<!--")]
            .into_iter()
            .flatten()
            .min()
            .map_or(doc.len(), |i| start + 3 + i + 1);
        let block = format!(
            "## {}\n\n{}\n\n```\n{}\n```\n\n",
            section.title,
            stamp(root),
            section.lines.join("\n")
        );
        doc.replace_range(start..end, &block);
    }
    std::fs::write(&path, doc).expect("BENCHMARKS.md is writable");
}
