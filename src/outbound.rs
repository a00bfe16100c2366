//! The one outbound HTTP client (webhooks, OAuth, workflows), guarded against SSRF.
//!
//! Every address a request may reach is checked: names are resolved by a guarded resolver
//! that drops loopback, private, link-local, multicast and unspecified addresses (so the
//! check happens at connect time, on the addresses actually dialled), IP-literal URLs are
//! checked before sending, and every redirect is checked again (same scheme only, never a
//! downgrade, at most `outbound.max_redirects`). `outbound.allow_private_networks` lets
//! chosen networks through (tests allow loopback this way). Proxies are disabled: a proxy
//! would dial on our behalf and bypass the guard. Bodies are read up to a size cap.
//!
//! Must not: be bypassed by building a `reqwest::Client` elsewhere.

use crate::config::OutboundConfig;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Why an outbound call did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundError {
    /// The URL is not an absolute http(s) URL.
    InvalidUrl(String),
    /// The destination resolves only to refused addresses.
    Blocked(String),
    /// A redirect was refused (scheme change, limit, refused address).
    Redirect(String),
    /// The call took longer than allowed.
    Timeout,
    /// The response body is larger than `outbound.max_response_bytes`.
    TooLarge(u64),
    /// Connection or protocol failure.
    Http(String),
}

impl fmt::Display for OutboundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutboundError::InvalidUrl(m) => write!(f, "invalid URL: {m}"),
            OutboundError::Blocked(m) => write!(f, "destination not allowed: {m}"),
            OutboundError::Redirect(m) => write!(f, "redirect refused: {m}"),
            OutboundError::Timeout => f.write_str("timed out"),
            OutboundError::TooLarge(n) => write!(f, "response body larger than {n} bytes"),
            OutboundError::Http(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for OutboundError {}

/// Decides which addresses may be dialled.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Vec<IpNet>,
}

impl Guard {
    /// A guard with these allowed networks (CIDR or single addresses; invalid entries are
    /// rejected by config validation before this point).
    pub fn new(allow: &[String]) -> Self {
        let allow = allow
            .iter()
            .filter_map(|n| {
                n.parse::<IpNet>()
                    .ok()
                    .or_else(|| n.parse::<IpAddr>().ok().map(IpNet::from))
            })
            .collect();
        Guard { allow }
    }

    /// Whether `ip` may be dialled.
    pub fn permits(&self, ip: IpAddr) -> bool {
        !is_internal(ip) || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// Loopback, private, link-local, multicast, unspecified, shared (CGNAT) and broadcast
/// addresses, including IPv4 addresses mapped into IPv6.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let seg0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg0 & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg0 & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || v6 == Ipv6Addr::from([0, 0, 0, 0, 0, 0, 0, 1])
        }
    }
}

fn is_internal_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_multicast()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || o[0] == 0 // "this network" 0.0.0.0/8
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space 100.64.0.0/10
        || o[0] >= 240 // reserved 240.0.0.0/4
}

/// Name resolution, injectable so tests can make a name resolve to a private address
/// without any DNS server.
pub trait Lookup: Send + Sync {
    /// Addresses of `host`.
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>>;
}

/// The system resolver.
#[derive(Debug, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

struct GuardedResolver {
    guard: Arc<Guard>,
    lookup: Arc<dyn Lookup>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let lookup = self.lookup.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let ips = lookup.lookup(host.clone()).await?;
            let allowed: Vec<SocketAddr> = ips
                .iter()
                .filter(|ip| guard.permits(**ip))
                .map(|ip| SocketAddr::new(*ip, 0))
                .collect();
            if allowed.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = Box::new(
                    OutboundError::Blocked(format!("{host} resolves only to internal addresses")),
                );
                return Err(err);
            }
            let it: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(it)
        })
    }
}

/// A response read within the limits.
#[derive(Debug, Clone)]
pub struct OutboundResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body (at most `max_response_bytes`).
    pub body: Bytes,
}

/// The shared guarded client. Cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    guard: Arc<Guard>,
    max_bytes: u64,
}

impl fmt::Debug for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbound")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

fn check_url(url: &reqwest::Url, guard: &Guard) -> Result<(), OutboundError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(OutboundError::InvalidUrl(format!(
            "scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    match url.host() {
        None => Err(OutboundError::InvalidUrl("no host".into())),
        Some(url::Host::Ipv4(ip)) if !guard.permits(IpAddr::V4(ip)) => Err(OutboundError::Blocked(
            format!("{ip} is an internal address"),
        )),
        Some(url::Host::Ipv6(ip)) if !guard.permits(IpAddr::V6(ip)) => Err(OutboundError::Blocked(
            format!("{ip} is an internal address"),
        )),
        Some(_) => Ok(()),
    }
}

impl Outbound {
    /// Builds the client with the system resolver.
    pub fn new(cfg: &OutboundConfig) -> Result<Self, String> {
        Self::with_lookup(cfg, Arc::new(SystemLookup))
    }

    /// Builds the client with a given resolver (tests).
    pub fn with_lookup(cfg: &OutboundConfig, lookup: Arc<dyn Lookup>) -> Result<Self, String> {
        let guard = Arc::new(Guard::new(&cfg.allow_private_networks));
        let redirect_guard = guard.clone();
        let max_redirects = cfg.max_redirects as usize;
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max_redirects {
                return attempt.error(OutboundError::Redirect(format!(
                    "more than {max_redirects} redirects"
                )));
            }
            let from = attempt
                .previous()
                .first()
                .map(|u| u.scheme().to_string())
                .unwrap_or_default();
            if attempt.url().scheme() != from {
                let msg = format!("redirect from {from} to {}", attempt.url().scheme());
                return attempt.error(OutboundError::Redirect(msg));
            }
            match check_url(attempt.url(), &redirect_guard) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(OutboundError::Redirect(e.to_string())),
            }
        });
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                guard: guard.clone(),
                lookup,
            }))
            .redirect(policy)
            .no_proxy()
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .user_agent(concat!("Fluxbase/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the outbound HTTP client: {e}"))?;
        Ok(Outbound {
            client,
            guard,
            max_bytes: cfg.max_response_bytes,
        })
    }

    /// Starts a request; the URL is checked when it is sent.
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends a request and reads the body within the size cap.
    pub async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<OutboundResponse, OutboundError> {
        let req = req
            .build()
            .map_err(|e| OutboundError::InvalidUrl(e.to_string()))?;
        check_url(req.url(), &self.guard)?;
        let mut resp = self.client.execute(req).await.map_err(classify)?;
        if resp.content_length().is_some_and(|n| n > self.max_bytes) {
            return Err(OutboundError::TooLarge(self.max_bytes));
        }
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            if (body.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(OutboundError::TooLarge(self.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(OutboundResponse {
            status,
            headers,
            body: body.freeze(),
        })
    }
}

/// Finds our own error in reqwest's source chain, else describes the failure.
fn classify(e: reqwest::Error) -> OutboundError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = src {
        if let Some(o) = s.downcast_ref::<OutboundError>() {
            return o.clone();
        }
        src = s.source();
    }
    if e.is_timeout() {
        OutboundError::Timeout
    } else {
        OutboundError::Http(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "172.32.0.1",
            "100.128.0.1",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn allow_list_opens_chosen_networks() {
        let g = Guard::new(&["127.0.0.2/32".into(), "10.0.0.0/8".into(), "::1".into()]);
        assert!(g.permits("127.0.0.2".parse().unwrap()));
        assert!(!g.permits("127.0.0.1".parse().unwrap()));
        assert!(g.permits("10.9.9.9".parse().unwrap()));
        assert!(g.permits("::1".parse().unwrap()));
        assert!(g.permits("8.8.8.8".parse().unwrap()));
    }
}
