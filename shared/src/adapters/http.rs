//! The delivery transport: `reqwest` with rustls, no redirects, no proxies, a whole-attempt
//! budget, a 64 KiB response read cap, and a DNS resolver that refuses non-public addresses at
//! connect time (so a name that resolves inward later is refused too).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::model::AttemptError;
use crate::ports::{Transport, TransportOutcome};
use crate::ssrf;

/// Only this much of a response body is read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Why the resolver gave no address: found again in reqwest's error chain by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveRefusal {
    /// Every address of the name is one deliveries may not reach.
    OnlyNonPublic,
    /// Names are not looked up in this mode (test control).
    NoDns,
}

impl std::fmt::Display for ResolveRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResolveRefusal::OnlyNonPublic => {
                "refused: the name resolves only to non-public addresses"
            }
            ResolveRefusal::NoDns => "refused: names are not resolved in this mode",
        })
    }
}

impl std::error::Error for ResolveRefusal {}

/// The transport's resolver: with `guard`, it drops every non-public address; without
/// `use_dns`, only `localhost` and `overrides` resolve (test mode: no lookups leave the
/// machine). `overrides` stand in for DNS in tests.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    overrides: Arc<HashMap<String, Vec<IpAddr>>>,
    guard: bool,
    use_dns: bool,
}

impl GuardedResolver {
    /// A resolver that refuses non-public answers when `guard`, and asks DNS when `use_dns`.
    pub fn new(guard: bool, use_dns: bool) -> Self {
        GuardedResolver {
            overrides: Arc::default(),
            guard,
            use_dns,
        }
    }

    /// A guarding resolver that answers `overrides` without asking DNS (for tests), and DNS
    /// otherwise.
    pub fn with_overrides(overrides: HashMap<String, Vec<IpAddr>>) -> Self {
        GuardedResolver {
            overrides: Arc::new(overrides),
            guard: true,
            use_dns: true,
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let fixed = self.overrides.get(&host).cloned().or_else(|| {
            (host == "localhost").then(|| {
                vec![
                    IpAddr::from([127, 0, 0, 1]),
                    IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
                ]
            })
        });
        let (guard, use_dns) = (self.guard, self.use_dns);
        Box::pin(async move {
            let candidates: Vec<IpAddr> = match fixed {
                Some(ips) => ips,
                None if use_dns => tokio::net::lookup_host((host.as_str(), 0))
                    .await?
                    .map(|a| a.ip())
                    .collect(),
                None => return Err(Box::new(ResolveRefusal::NoDns) as _),
            };
            let public: Vec<SocketAddr> = candidates
                .into_iter()
                .filter(|ip| !guard || !ssrf::is_forbidden(*ip))
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if public.is_empty() {
                return Err(Box::new(ResolveRefusal::OnlyNonPublic) as _);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// Sends webhook requests over HTTP(S). The client (and its TLS roots) is built on the first
/// delivery, so the functions that never deliver do not pay for it at cold start.
pub struct HttpTransport {
    client: std::sync::OnceLock<reqwest::Client>,
    resolver: GuardedResolver,
    allow_private_targets: bool,
    budget: Duration,
}

impl HttpTransport {
    /// A transport with the SSRF guard on unless `allow_private_targets`, resolving names through
    /// DNS when `use_dns`.
    pub fn new(allow_private_targets: bool, budget: Duration, use_dns: bool) -> Self {
        let resolver = GuardedResolver::new(!allow_private_targets, use_dns);
        Self::with_resolver(allow_private_targets, budget, resolver)
    }

    /// The same with a given resolver (tests inject one with fixed answers).
    pub fn with_resolver(
        allow_private_targets: bool,
        budget: Duration,
        resolver: GuardedResolver,
    ) -> Self {
        HttpTransport {
            client: std::sync::OnceLock::new(),
            resolver,
            allow_private_targets,
            budget,
        }
    }

    fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .connect_timeout(self.budget)
                .timeout(self.budget)
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(64)
                .tcp_nodelay(true)
                .dns_resolver(self.resolver.clone())
                .build()
                .expect("the HTTP client builds")
        })
    }

    async fn attempt(
        &self,
        url: Url,
        headers: Vec<(String, String)>,
        body: Bytes,
        budget: Duration,
    ) -> Result<(u16, Option<Duration>), AttemptError> {
        // The client's own timeout is the hub's budget; a subscription's may be longer.
        let mut request = self.client().post(url).body(body).timeout(budget);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let mut response = request.send().await.map_err(|e| classify(&e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut read = 0usize;
        while read < MAX_RESPONSE_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) => break,
                Err(e) => return Err(classify(&e)),
            }
        }
        Ok((status, retry_after))
    }
}

/// `Retry-After` in seconds or as an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value.trim()).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Why a request failed, from its error chain: a refusal of the resolver is found by type; TLS
/// failures by rustls's error type or, for the ones hyper-rustls wraps in `io::Error`, by name.
fn classify(err: &reqwest::Error) -> AttemptError {
    let mut tls = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        match e.downcast_ref::<ResolveRefusal>() {
            Some(ResolveRefusal::OnlyNonPublic) => return AttemptError::ForbiddenTarget,
            // A name this mode does not look up: no connection, not a judgement of the target.
            Some(ResolveRefusal::NoDns) => return AttemptError::Connect,
            None => {}
        }
        let text = e.to_string();
        tls |= text.contains("certificate") || text.contains("tls") || text.contains("TLS");
        source = e.source();
    }
    if err.is_timeout() {
        AttemptError::Timeout
    } else if tls {
        AttemptError::Tls
    } else if err.is_connect() {
        AttemptError::Connect
    } else if err.is_body() || err.is_decode() {
        AttemptError::Body
    } else {
        AttemptError::Transport
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn post(
        &self,
        url: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> TransportOutcome {
        self.post_within(url, headers, body, self.budget).await
    }

    async fn post_within(
        &self,
        url: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
        budget: Duration,
    ) -> TransportOutcome {
        let started = Instant::now();
        let fail = |error: AttemptError| TransportOutcome {
            status: None,
            retry_after: None,
            error: Some(error),
            latency: started.elapsed(),
        };
        let Ok(url) = Url::parse(url) else {
            return fail(AttemptError::InvalidUrl);
        };
        if !self.allow_private_targets {
            let literal = match url.host() {
                Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                _ => None,
            };
            if literal.is_some_and(ssrf::is_forbidden) || url.scheme() != "https" {
                return fail(AttemptError::ForbiddenTarget);
            }
        }
        match tokio::time::timeout(budget, self.attempt(url, headers, body, budget)).await {
            Ok(Ok((status, retry_after))) => TransportOutcome {
                status: Some(status),
                retry_after,
                error: None,
                latency: started.elapsed(),
            },
            Ok(Err(kind)) => fail(kind),
            Err(_) => fail(AttemptError::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_both_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    /// Every inward address form the SSRF guard knows, as a DNS answer and as an IP literal in
    /// any notation, is refused when the connection is made; a public answer passes the resolver.
    #[tokio::test]
    async fn refuses_inward_targets_at_connect_time() {
        let inward = [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd00::1",
            "ff02::1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ];
        let overrides = inward
            .iter()
            .enumerate()
            .map(|(i, ip)| (format!("inward{i}.test"), vec![ip.parse().unwrap()]))
            .chain([(
                "public.test".to_string(),
                vec!["93.184.216.34".parse().unwrap()],
            )])
            .collect();
        let resolver = GuardedResolver::with_overrides(overrides);
        let transport =
            HttpTransport::with_resolver(false, Duration::from_secs(2), resolver.clone());
        for (i, ip) in inward.iter().enumerate() {
            let outcome = transport
                .post(
                    &format!("https://inward{i}.test/hook"),
                    vec![],
                    Bytes::new(),
                )
                .await;
            assert_eq!(outcome.error, Some(AttemptError::ForbiddenTarget), "{ip}");
            assert_eq!(outcome.status, None);
        }
        for literal in [
            "https://127.0.0.1/",
            "https://127.1/",
            "https://2130706433/",
            "https://0x7f.1/",
            "https://0177.0.0.1/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::1]/",
            "https://169.254.169.254/latest/meta-data",
            "https://0/",
            "http://example.com/",
        ] {
            let outcome = transport.post(literal, vec![], Bytes::new()).await;
            assert_eq!(
                outcome.error,
                Some(AttemptError::ForbiddenTarget),
                "{literal}"
            );
        }
        let public: Vec<_> = resolver
            .resolve("public.test".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(public, vec!["93.184.216.34:0".parse().unwrap()]);
    }

    #[tokio::test]
    async fn resolver_drops_inward_answers() {
        let resolver = GuardedResolver::with_overrides(HashMap::from([
            (
                "inward.test".to_string(),
                vec!["127.0.0.1".parse().unwrap(), "10.0.0.1".parse().unwrap()],
            ),
            (
                "mixed.test".to_string(),
                vec![
                    "10.0.0.1".parse().unwrap(),
                    "93.184.216.34".parse().unwrap(),
                ],
            ),
        ]));
        assert!(
            resolver
                .resolve("inward.test".parse().unwrap())
                .await
                .is_err()
        );
        let addrs: Vec<_> = resolver
            .resolve("mixed.test".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(addrs, vec!["93.184.216.34:0".parse().unwrap()]);
    }
}
