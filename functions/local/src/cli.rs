//! The command line of `webhook-hub`. Every flag can also come from `HUB_<FLAG>`
//! (`--retry-schedule` from `HUB_RETRY_SCHEDULE`); the command line wins.

use std::net::SocketAddr;
use std::time::Duration;

use hub::auth::Caller;
use hub::retry::{RetrySchedule, parse_duration};
use hub::runtime::truthy;
use sha2::{Digest, Sha256};

/// Usage text.
pub const USAGE: &str = "\
usage: webhook-hub serve [options]

options (each also read from HUB_<OPTION>, e.g. HUB_LISTEN):
  --listen ADDR                 address to serve the API on (default 127.0.0.1:3000)
  --public-url URL              base of confirmation links (default http://<listen>)
  --api-key KEY=ACCOUNT[:SCOPE,SCOPE...]
                                an API key and its account (repeatable; no scopes = all);
                                with none, one is generated and printed
  --backend memory|aws          embedded store and queues, or DynamoDB + SQS (default memory)
  --create-resources            with --backend aws: create the table and queues if missing
  --allow-private-targets       allow http and loopback/private callbacks (development only)
  --retry-schedule LIST         delays between attempts (default 5s,5m,30m,2h,5h,10h)
  --sweep-interval DURATION     how often lapsed subscriptions are swept (default 60s)
  --disable-after DURATION      failing this long disables a subscription (default 24h)
  --attempt-timeout DURATION    budget of one delivery attempt (default 5s)
  --max-subscriptions-per-account N
                                most subscriptions one account may hold (default 1000)
  --test-control                test hooks under /_test/ (an API key needed; loopback --listen
                                only; never in production)";

/// Which adapters back the embedded mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// In process memory.
    Memory,
    /// DynamoDB and SQS from the standard AWS environment.
    Aws,
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub api_keys: Vec<(String, Caller)>,
    pub backend: Backend,
    pub create_resources: bool,
    pub allow_private_targets: bool,
    pub retry_schedule: RetrySchedule,
    pub sweep_interval: Duration,
    pub disable_after: Duration,
    pub attempt_timeout: Duration,
    pub max_subscriptions_per_account: usize,
    /// Test hooks (`POST /_test/clock/advance?ms=N`, `POST /_test/sweep`): never in production.
    pub test_control: bool,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Serve(Box<ServeOptions>),
    Help,
    Version,
}

const VALUE_FLAGS: &[&str] = &[
    "listen",
    "public-url",
    "api-key",
    "backend",
    "retry-schedule",
    "sweep-interval",
    "disable-after",
    "attempt-timeout",
    "max-subscriptions-per-account",
];
const BOOL_FLAGS: &[&str] = &["allow-private-targets", "create-resources", "test-control"];

/// Parses `KEY=ACCOUNT[:SCOPE,SCOPE…]`. The owner is the account plus a short hash of the key, so
/// two keys of one account are two owners.
pub fn parse_api_key(spec: &str) -> Result<(String, Caller), String> {
    let (key, rest) = spec
        .split_once('=')
        .ok_or_else(|| format!("--api-key `{spec}`: expected KEY=ACCOUNT[:SCOPES]"))?;
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
        return Err(format!(
            "--api-key `{spec}`: key and account must not be empty"
        ));
    }
    let digest = hub::signing::hex(&Sha256::digest(key.as_bytes())[..4]);
    let caller = Caller {
        account: account.to_string(),
        owner: format!("{account}:{digest}"),
        scopes,
    };
    Ok((key.to_string(), caller))
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    match args.first().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => return Ok(Command::Help),
        Some("-V" | "--version" | "version") => return Ok(Command::Version),
        Some("serve") => {}
        Some(other) => return Err(format!("unknown command `{other}`")),
    }
    let mut values: Vec<(String, String)> = Vec::new();
    let mut flags: Vec<String> = Vec::new();
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let Some(name) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument `{arg}`"));
        };
        let (name, inline) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (name, None),
        };
        if VALUE_FLAGS.contains(&name) {
            let value = match inline {
                Some(v) => v,
                None => rest
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("--{name} needs a value"))?,
            };
            values.push((name.to_string(), value));
        } else if BOOL_FLAGS.contains(&name) {
            if inline.as_deref().is_none_or(truthy) {
                flags.push(name.to_string());
            }
        } else {
            return Err(format!("unknown option --{name}"));
        }
    }
    let env_name = |flag: &str| format!("HUB_{}", flag.to_ascii_uppercase().replace('-', "_"));
    let value = |flag: &str| -> Option<String> {
        values
            .iter()
            .rev()
            .find(|(n, _)| n == flag)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(env_name(flag)).ok().filter(|v| !v.is_empty()))
    };
    let flag = |name: &str| {
        flags.iter().any(|f| f == name) || std::env::var(env_name(name)).is_ok_and(|v| truthy(&v))
    };

    let listen: SocketAddr = value("listen")
        .unwrap_or_else(|| "127.0.0.1:3000".into())
        .parse()
        .map_err(|e| format!("--listen: {e}"))?;
    let mut key_specs: Vec<String> = values
        .iter()
        .filter(|(n, _)| n == "api-key")
        .map(|(_, v)| v.clone())
        .collect();
    if key_specs.is_empty()
        && let Ok(env) = std::env::var("HUB_API_KEY")
    {
        key_specs = env
            .split([' ', ';', '\n'])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
    }
    let api_keys = key_specs
        .iter()
        .map(|s| parse_api_key(s))
        .collect::<Result<Vec<_>, _>>()?;
    let backend = match value("backend").as_deref().unwrap_or("memory") {
        "memory" => Backend::Memory,
        "aws" => Backend::Aws,
        other => return Err(format!("--backend `{other}`: expected memory or aws")),
    };
    let duration = |name: &str, default: &str| -> Result<Duration, String> {
        parse_duration(&value(name).unwrap_or_else(|| default.into()))
            .map_err(|e| format!("--{name}: {e}"))
    };
    let retry_schedule = match value("retry-schedule") {
        Some(list) => RetrySchedule::parse(&list).map_err(|e| format!("--retry-schedule: {e}"))?,
        None => RetrySchedule::default(),
    };
    let sweep_interval = duration("sweep-interval", "60s")?;
    if sweep_interval.is_zero() {
        return Err("--sweep-interval must be positive".into());
    }
    let test_control = flag("test-control");
    if test_control && !listen.ip().is_loopback() {
        return Err(format!(
            "--test-control moves the clock and reads dead letters: it only runs on a loopback \
             --listen address, not {listen}"
        ));
    }
    let max_subscriptions_per_account =
        match value("max-subscriptions-per-account") {
            Some(n) => n.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("--max-subscriptions-per-account `{n}`: a positive integer")
            })?,
            None => 1000,
        };
    Ok(Command::Serve(Box::new(ServeOptions {
        listen,
        public_url: value("public-url").map(|u| u.trim_end_matches('/').to_string()),
        api_keys,
        backend,
        create_resources: flag("create-resources"),
        allow_private_targets: flag("allow-private-targets"),
        retry_schedule,
        sweep_interval,
        disable_after: duration("disable-after", "24h")?,
        attempt_timeout: duration("attempt-timeout", "5s")?,
        max_subscriptions_per_account,
        test_control,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
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
        let Command::Serve(o) = parse(&args(&[
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
        ]))
        .unwrap() else {
            panic!("expected serve")
        };
        assert_eq!(o.api_keys.len(), 2);
        assert!(o.allow_private_targets);
        assert_eq!(o.retry_schedule.max_attempts(), 3);
        assert_eq!(o.sweep_interval, Duration::from_secs(2));
        assert!(parse(&args(&["serve", "--bogus"])).is_err());
        assert!(
            parse(&args(&[
                "serve",
                "--listen",
                "0.0.0.0:3000",
                "--test-control"
            ]))
            .unwrap_err()
            .contains("loopback")
        );
        assert!(
            parse(&args(&[
                "serve",
                "--retry-schedule",
                "99999999999999999999h"
            ]))
            .is_err()
        );
        assert!(
            parse(&args(&[
                "serve",
                "--disable-after",
                "18446744073709551615d"
            ]))
            .is_err()
        );
        assert!(parse(&args(&["serve", "--backend", "redis"])).is_err());
    }
}
