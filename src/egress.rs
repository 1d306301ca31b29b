//! The one egress policy for every URL a tenant can set (token, revocation, JWT exchange and form
//! verification endpoints, and anything added later).
//!
//! Guarantees, for every request made through an [`EgressClient`]:
//! - the URL is `https`, unless its host is on the operator's allowlist (by name, or as an IP
//!   literal inside an allowed CIDR);
//! - the address actually connected to is public: loopback, unspecified, link-local (and so the
//!   cloud metadata address 169.254.169.254), RFC 1918 private, ULA, CGNAT, benchmarking,
//!   multicast and reserved ranges are refused, unless the allowlist names the host or a CIDR
//!   holding the address. The check runs on the resolved addresses (DNS answers cannot smuggle an
//!   internal address past it) and again for IP literals, which are never resolved;
//! - no redirect is followed and no environment proxy is used (either would bypass the check).
//!
//! What goes wrong is told in fixed phrases ([`EgressError`], [`describe`]): no remote text and
//! no socket error (a closed port reading "connection refused" would make a port-scan oracle).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

/// One allowlist entry: a host name (`idp.internal`, or `*.corp.example` for its subdomains) or a
/// CIDR (`10.20.0.0/16`, `127.0.0.1/32`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    Host(String),
    Suffix(String),
    Net(IpNet),
}

impl std::str::FromStr for Allow {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        if s.is_empty() {
            return Err("empty egress allowlist entry".into());
        }
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Allow::Net(net));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Allow::Net(IpNet::from(ip)));
        }
        let valid = |h: &str| {
            !h.is_empty()
                && h.split('.')
                    .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        };
        match s.strip_prefix("*.") {
            Some(rest) if valid(rest) => Ok(Allow::Suffix(format!(".{rest}"))),
            None if valid(&s) => Ok(Allow::Host(s)),
            _ => Err(format!("{s:?} is neither a host name, *.domain nor a CIDR")),
        }
    }
}

/// The operator-level egress policy (`--egress-allow`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow: Vec<Allow>,
}

/// Why a request was not sent. Safe for status, Events and pages.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EgressError {
    #[error("the URL is not valid")]
    InvalidUrl,
    #[error("the URL must use https (plain http only for hosts on the operator's egress allowlist)")]
    NotHttps,
    #[error(
        "the endpoint's address is not allowed by the operator's egress policy (internal, loopback or metadata address)"
    )]
    ForbiddenAddress,
    #[error("the endpoint's host name could not be resolved")]
    Unresolvable,
}

impl EgressPolicy {
    pub fn new(allow: Vec<Allow>) -> Self {
        Self { allow }
    }

    fn host_listed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allow.iter().any(|a| match a {
            Allow::Host(h) => *h == host,
            Allow::Suffix(s) => host.ends_with(s.as_str()),
            Allow::Net(_) => false,
        })
    }

    fn net_listed(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.allow
            .iter()
            .any(|a| matches!(a, Allow::Net(n) if n.contains(&ip)))
    }

    /// Whether connecting to `ip` for `host` is allowed.
    pub fn address_allowed(&self, host: &str, ip: IpAddr) -> bool {
        is_public(ip) || self.host_listed(host) || self.net_listed(ip)
    }

    /// Whether the allowlist names `url`'s host (by name, or an IP literal inside a listed CIDR).
    pub fn lists_host_of(&self, url: &url::Url) -> bool {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.net_listed(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.net_listed(IpAddr::V6(ip)),
            Some(url::Host::Domain(d)) => self.host_listed(d),
            None => false,
        }
    }

    /// Checks what can be checked without DNS: scheme, and IP-literal hosts.
    pub fn check_url(&self, url: &url::Url) -> Result<(), EgressError> {
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(EgressError::InvalidUrl),
        };
        let host = url.host_str().unwrap_or_default();
        let listed = match literal {
            Some(ip) => self.net_listed(ip),
            None => self.host_listed(host),
        };
        match url.scheme() {
            "https" => {}
            "http" if listed => {}
            "http" => return Err(EgressError::NotHttps),
            _ => return Err(EgressError::InvalidUrl),
        }
        match literal {
            Some(ip) if !self.address_allowed(host, ip) => Err(EgressError::ForbiddenAddress),
            _ => Ok(()),
        }
    }

    /// [`check_url`](Self::check_url) for a URL as text.
    pub fn check(&self, url: &str) -> Result<url::Url, EgressError> {
        let parsed = url::Url::parse(url).map_err(|_| EgressError::InvalidUrl)?;
        self.check_url(&parsed)?;
        Ok(parsed)
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Globally routable unicast. Anything internal or special-purpose is not.
pub fn is_public(ip: IpAddr) -> bool {
    const DENIED: &[&str] = &[
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/3",
        "::/96",
        "::ffff:0:0:0/96",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "2002::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    ];
    let ip = canonical(ip);
    !DENIED
        .iter()
        .filter_map(|n| n.parse::<IpNet>().ok())
        .any(|n| n.contains(&ip))
}

/// Resolves with the system resolver and drops every address the policy refuses; none left is an
/// error, so no connection is attempted.
struct GuardedResolver {
    policy: Arc<EgressPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| Box::new(EgressError::Unresolvable) as Box<dyn std::error::Error + Send + Sync>)?
                .collect();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| policy.address_allowed(&host, a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(
                    Box::new(EgressError::ForbiddenAddress) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An HTTP client that can only reach what the policy allows. It hands out request builders only
/// for checked URLs; its inner client resolves through the policy.
#[derive(Clone)]
pub struct EgressClient {
    http: reqwest::Client,
    policy: Arc<EgressPolicy>,
}

impl EgressClient {
    /// A client with the given total request `timeout`.
    pub fn new(policy: EgressPolicy, timeout: Duration) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        let http = crate::http::client_builder(
            concat!("agent-auth-operator/", env!("CARGO_PKG_VERSION")),
            Duration::from_secs(5),
            timeout,
        )
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver {
            policy: policy.clone(),
        }))
        .build()?;
        Ok(Self { http, policy })
    }

    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    /// A request to `url` after the policy check.
    pub fn request(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, EgressError> {
        let url = self.policy.check(url)?;
        Ok(self.http.request(method, url))
    }

    pub fn post(&self, url: &str) -> Result<reqwest::RequestBuilder, EgressError> {
        self.request(reqwest::Method::POST, url)
    }

    pub fn get(&self, url: &str) -> Result<reqwest::RequestBuilder, EgressError> {
        self.request(reqwest::Method::GET, url)
    }

    /// Sends a request built elsewhere (the `oauth2` crate's) after checking its URL.
    pub async fn execute(&self, request: reqwest::Request) -> Result<reqwest::Response, SendError> {
        self.policy.check_url(request.url()).map_err(SendError::Refused)?;
        self.http.execute(request).await.map_err(SendError::from)
    }
}

/// Why a request produced no response, in fixed phrases. `NotSent` failures provably never reached
/// the remote end (the refresh logic may retry them with the same token); `NoAnswer` may have.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Refused(EgressError),
    #[error("the endpoint could not be reached")]
    NotSent(#[source] reqwest::Error),
    #[error("the endpoint did not answer in time")]
    Timeout(#[source] reqwest::Error),
    #[error("the endpoint's answer could not be read")]
    NoAnswer(#[source] reqwest::Error),
}

impl From<reqwest::Error> for SendError {
    fn from(e: reqwest::Error) -> Self {
        if let Some(refused) = egress_refusal(&e) {
            SendError::Refused(refused)
        } else if e.is_connect() {
            SendError::NotSent(e)
        } else if e.is_timeout() {
            SendError::Timeout(e)
        } else {
            SendError::NoAnswer(e)
        }
    }
}

/// The policy refusal inside a reqwest error, if that is what it was.
pub fn egress_refusal(e: &(dyn std::error::Error + 'static)) -> Option<EgressError> {
    crate::http::error_chain(e).find_map(|err| err.downcast_ref::<EgressError>().cloned())
}

/// A fixed phrase for any request failure, for status, Events and pages: the policy refusal, or
/// the kind of failure, never the socket error or anything the remote end said.
pub fn phrase(e: &reqwest::Error) -> String {
    if let Some(refused) = egress_refusal(e) {
        return refused.to_string();
    }
    if e.is_connect() {
        "the endpoint could not be reached"
    } else if e.is_timeout() {
        "the endpoint did not answer in time"
    } else {
        "the endpoint's answer could not be read"
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> EgressPolicy {
        EgressPolicy::new(allow.iter().map(|a| a.parse().unwrap()).collect())
    }

    #[test]
    fn internal_addresses_are_refused_unless_allowlisted() {
        let p = policy(&[]);
        for url in [
            "https://127.0.0.1/token",
            "https://[::1]/token",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/",
            "https://172.16.5.4/",
            "https://192.168.1.1/",
            "https://100.64.0.1/",
            "https://[fd00:ec2::254]/",
            "https://[fe80::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://0.0.0.0/",
            "https://198.18.0.1/",
        ] {
            assert_eq!(p.check(url).unwrap_err(), EgressError::ForbiddenAddress, "{url}");
        }
        assert!(p.check("https://93.184.215.14/token").is_ok());
        assert!(p.check("https://oauth2.googleapis.com/token").is_ok());
        let allowed = policy(&["127.0.0.1/32"]);
        assert!(allowed.check("http://127.0.0.1:5556/token").is_ok());
        assert_eq!(
            allowed.check("http://127.0.0.2:5556/token").unwrap_err(),
            EgressError::NotHttps
        );
        assert_eq!(
            allowed.check("https://127.0.0.2:5556/token").unwrap_err(),
            EgressError::ForbiddenAddress
        );
    }

    #[test]
    fn https_is_required_except_for_allowlisted_hosts() {
        let p = policy(&["idp.internal", "*.corp.test"]);
        assert_eq!(p.check("http://example.com/").unwrap_err(), EgressError::NotHttps);
        assert!(p.check("http://idp.internal/token").is_ok());
        assert!(p.check("http://a.b.corp.test/token").is_ok());
        assert_eq!(
            p.check("ftp://idp.internal/").unwrap_err(),
            EgressError::InvalidUrl
        );
        assert_eq!(p.check("not a url").unwrap_err(), EgressError::InvalidUrl);
        assert!("*.".parse::<Allow>().is_err());
        assert!("a b".parse::<Allow>().is_err());
    }

    #[tokio::test]
    async fn names_resolving_to_internal_addresses_are_never_connected() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = tokio::spawn(async move { listener.accept().await.is_ok() });
        let client = EgressClient::new(policy(&[]), Duration::from_secs(5)).unwrap();
        // https to a name that resolves to loopback: refused at resolution, before any connect.
        let err = client
            .get(&format!("https://localhost:{port}/"))
            .unwrap()
            .send()
            .await
            .unwrap_err();
        assert_eq!(egress_refusal(&err), Some(EgressError::ForbiddenAddress));
        assert_eq!(phrase(&err), EgressError::ForbiddenAddress.to_string());
        assert!(
            !accepted.is_finished(),
            "nothing connected to the internal server"
        );
        accepted.abort();
    }
}
