//! The command line of `webhook-hub`, declared with clap: every `serve` option can also come
//! from `HUB_<OPTION>` (`--retry-schedule` from `HUB_RETRY_SCHEDULE`); the command line wins.
//! The settings the Lambda functions share are declared once, in the core's
//! `runtime::config::HubArgs`, and flattened in here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hub::auth::Caller;
use hub::runtime::config::{HubArgs, parse_duration_arg};
use sha2::{Digest, Sha256};

/// `webhook-hub`: every function of the hub in one process, for one machine.
#[derive(Debug, Parser)]
#[command(name = "webhook-hub", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API, the fan-out, the sender and the sweeper in this process
    Serve(Box<ServeOptions>),
    /// Copy the SQLite database to a new file with SQLite's online backup (safe while `serve`
    /// runs on it)
    Backup(BackupOptions),
    /// Receive a hub's deliveries here: subscribe a local callback, confirm it, verify and
    /// print every delivery (optionally forwarding it), unsubscribe on exit
    Listen(crate::listen::ListenOptions),
    /// The dead-letter queues (SQLite or AWS): list what waits there, or redrive it to its
    /// queue
    DeadLetters(crate::dead_letters::DeadLettersOptions),
    /// The keys that seal stored secrets: rotate them, or seal what an older version stored
    /// in plain
    Keys(crate::keys::KeysOptions),
    /// The event-type catalog: export an account's as an OpenAPI 3.1 document for receivers
    Catalog(crate::catalog::CatalogOptions),
}

/// What `backup` copies where.
#[derive(Debug, Clone, Args)]
pub struct BackupOptions {
    /// The database `serve --data` uses
    #[arg(long, env = "HUB_DATA", default_value = "webhook-hub.db")]
    pub data: PathBuf,
    /// The new file to write (must not exist)
    #[arg(long)]
    pub to: PathBuf,
}

/// Which adapters back the embedded mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// One SQLite file (--data): everything answered 201/202 survives a restart or a crash
    Sqlite,
    /// In process memory (tests and throw-away runs: a restart forgets everything)
    Memory,
    /// DynamoDB and SQS from the standard AWS environment
    Aws,
}

/// What a SQLite commit waits for (see docs/sqlite.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// Committed writes survive a crash of the process
    Normal,
    /// Committed writes survive a power loss too (fsync per group commit)
    Full,
}

impl From<DurabilityArg> for hub::adapters::sqlite::Durability {
    fn from(arg: DurabilityArg) -> Self {
        match arg {
            DurabilityArg::Normal => Self::Normal,
            DurabilityArg::Full => Self::Full,
        }
    }
}

/// Everything `serve` needs.
#[derive(Debug, Clone, Args)]
pub struct ServeOptions {
    /// Address to serve the API on
    #[arg(long, env = "HUB_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Export traces over OTLP/HTTP to this collector (base URL, e.g. http://127.0.0.1:4318;
    /// spans go to its /v1/traces). Without it, the standard OTEL_EXPORTER_OTLP_ENDPOINT; with
    /// neither, nothing is traced
    #[arg(long, env = "HUB_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// An API key and its account, KEY=ACCOUNT[:SCOPE,SCOPE...] (repeatable; no scopes = all;
    /// HUB_API_KEY takes several, space-separated); with none, one is generated and printed
    #[arg(long = "api-key", env = "HUB_API_KEY", hide_env_values = true, value_delimiter = ' ', value_parser = parse_api_key)]
    pub api_keys: Vec<(String, Caller)>,
    /// Where subscriptions, queues and delivery logs live
    #[arg(long, env = "HUB_BACKEND", value_enum, default_value = "sqlite")]
    pub backend: Backend,
    /// With --backend sqlite: the database file (created if missing)
    #[arg(long, env = "HUB_DATA", default_value = "webhook-hub.db")]
    pub data: PathBuf,
    #[command(flatten)]
    pub master: crate::keys::MasterKeyOptions,
    /// With --backend sqlite: `normal` survives a crash of the process, `full` also a power loss
    /// (an fsync per group commit)
    #[arg(long, env = "HUB_DURABILITY", value_enum, default_value = "normal")]
    pub durability: DurabilityArg,
    /// With --backend sqlite: the largest the database file may grow (`512MiB`, `20GB`, bytes);
    /// past it, publish and subscribe answer `503 storage_full` while deliveries go on and free
    /// space (see docs/sqlite.md). Unset: as far as the disk allows
    #[arg(long, env = "HUB_DB_SIZE_LIMIT", value_parser = parse_size)]
    pub db_size_limit: Option<u64>,
    /// With --backend aws: create the table and queues if missing (emulators, first runs)
    #[arg(long, env = "HUB_CREATE_RESOURCES")]
    pub create_resources: bool,
    /// Allow http and loopback/private callbacks (development only)
    #[arg(long, env = "HUB_ALLOW_PRIVATE_TARGETS")]
    pub allow_private_targets: bool,
    /// How often lapsed subscriptions are swept
    #[arg(long, env = "HUB_SWEEP_INTERVAL", default_value = "60s", value_parser = positive_duration)]
    pub sweep_interval: Duration,
    /// Test hooks under /_test/ (an API key needed; loopback --listen only; never in production)
    #[arg(long, env = "HUB_TEST_CONTROL")]
    pub test_control: bool,
    #[command(flatten)]
    pub hub: HubArgs,
}

impl ServeOptions {
    /// Checks what one option alone cannot: the test hooks listen on loopback only.
    pub fn check(&self) -> Result<(), String> {
        if self.test_control && !self.listen.ip().is_loopback() {
            return Err(format!(
                "--test-control moves the clock and reads dead letters: it only runs on a \
                 loopback --listen address, not {}",
                self.listen
            ));
        }
        Ok(())
    }
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration_arg(text)?;
    if duration.is_zero() {
        return Err("must be positive".into());
    }
    Ok(duration)
}

/// Parses a size in bytes: a number with an optional unit, `KB`/`MB`/`GB`/`TB` (powers of
/// 1000) or `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024); at least 1 MiB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a size such as 512MiB or 20GB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            ));
        }
    };
    let bytes = number
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}`: too large"))?;
    if bytes < 1 << 20 {
        return Err(format!("`{text}`: at least 1MiB"));
    }
    Ok(bytes)
}

/// Parses `KEY=ACCOUNT[:SCOPE,SCOPE…]`. The owner is the account plus a short hash of the key, so
/// two keys of one account are two owners.
pub fn parse_api_key(spec: &str) -> Result<(String, Caller), String> {
    let (key, rest) = spec
        .split_once('=')
        .ok_or_else(|| format!("`{spec}`: expected KEY=ACCOUNT[:SCOPES]"))?;
    let (account, scopes) = match rest.split_once(':') {
        Some((account, scopes)) => {
            let list: Vec<String> = scopes
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            (account, (!list.is_empty()).then_some(list))
        }
        None => (rest, None),
    };
    if key.is_empty() || account.is_empty() {
        return Err(format!("`{spec}`: key and account must not be empty"));
    }
    let digest = hub::signing::hex(&Sha256::digest(key.as_bytes())[..4]);
    let caller = Caller::of_account(account.to_string(), format!("{account}:{digest}"), scopes);
    Ok((key.to_string(), caller))
}

/// Parses a command line (program name first), checked.
pub fn parse<I: IntoIterator<Item = T>, T: Into<std::ffi::OsString> + Clone>(
    args: I,
) -> Result<Cli, clap::Error> {
    let cli = Cli::try_parse_from(args)?;
    if let Command::Serve(options) = &cli.command {
        options
            .check()
            .map_err(|msg| clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, msg))?;
    }
    Ok(cli)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(list: &[&str]) -> Result<Box<ServeOptions>, String> {
        let args = std::iter::once("webhook-hub").chain(list.iter().copied());
        parse(args)
            .map(|cli| match cli.command {
                Command::Serve(options) => options,
                other => panic!("not serve: {other:?}"),
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("20GB"), Ok(20_000_000_000));
        assert_eq!(parse_size("2 gib"), Ok(2 << 30));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        for bad in ["", "MiB", "10", "1.5GB", "5XB", "-1GB", "99999999999TiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_keys_with_and_without_scopes() {
        let (key, caller) = parse_api_key("k1=acme:webhooks:read,topic:door.*").unwrap();
        assert_eq!(key, "k1");
        assert_eq!(caller.account, "acme");
        assert_eq!(
            caller.scopes,
            Some(vec!["webhooks:read".into(), "topic:door.*".into()])
        );
        assert!(caller.owner.starts_with("acme:"));
        assert_eq!(parse_api_key("k2=acme").unwrap().1.scopes, None);
        assert!(parse_api_key("nokey").is_err());
    }

    #[test]
    fn parses_serve_flags() {
        let o = serve(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--api-key=a=acme",
            "--api-key",
            "b=beta",
            "--allow-private-targets",
            "--retry-schedule",
            "1s,2s",
            "--sweep-interval",
            "2s",
        ])
        .unwrap();
        assert_eq!(o.api_keys.len(), 2);
        assert!(o.allow_private_targets);
        assert_eq!(o.hub.retry_schedule.max_attempts(), 3);
        assert_eq!(o.sweep_interval, Duration::from_secs(2));
        assert_eq!(o.backend, Backend::Sqlite, "SQLite is the default");
        assert_eq!(o.data, PathBuf::from("webhook-hub.db"));
        assert!(serve(&["serve", "--bogus"]).is_err());
        assert!(serve(&["serve", "--backend", "redis"]).is_err());
        assert!(
            serve(&["serve", "--listen", "0.0.0.0:3000", "--test-control"])
                .unwrap_err()
                .contains("loopback")
        );
        assert!(serve(&["serve", "--retry-schedule", "99999999999999999999h"]).is_err());
        assert!(serve(&["serve", "--disable-after", "18446744073709551615d"]).is_err());
        assert!(serve(&["serve", "--sweep-interval", "0s"]).is_err());
        assert!(serve(&["serve", "--max-subscriptions-per-account", "0"]).is_err());
    }
}
