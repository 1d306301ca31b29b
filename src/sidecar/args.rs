//! What `agent-auth-operator sidecar` is told on its command line, and how each argument parses.
//!
//! Parsing is strict and happens before anything starts: a malformed `--account` or `--api-base`
//! is a usage error naming the argument, never a sidecar that runs with a guessed meaning.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use url::Url;

/// What `agent-auth-operator sidecar` was told.
#[derive(Debug, Clone)]
pub struct Config {
    pub accounts: Vec<AccountArg>,
    /// Every subdirectory (not hidden) is an account named after it.
    pub accounts_dir: Option<PathBuf>,
    pub tools_dirs: Vec<PathBuf>,
    pub listen: SocketAddr,
    pub api_bases: Vec<ApiBaseArg>,
    /// Listen on a non-loopback address and accept any `Host` (nothing else protects the API then).
    pub allow_non_loopback: bool,
    /// Fetch credentials from the operator's token broker at call time (`--broker-url`).
    pub broker: Option<BrokerArgs>,
}

/// Where the broker is and how this pod proves who it is.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerArgs {
    /// The broker's token endpoint (`--broker-url` with `/token` appended).
    pub endpoint: Url,
    /// The projected ServiceAccount token (audience `agentauth.dev`), re-read on every broker call.
    pub token_file: PathBuf,
    /// Namespace of bare account names; `None`: the token's `kubernetes.io.namespace` claim.
    pub namespace: Option<String>,
}

/// Where the kubelet mounts the projected token of `examples/agent-broker.yaml`.
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/agentauth.dev/token";

impl BrokerArgs {
    /// `--broker-url`, `--token-file`, `--namespace` as given; `None` without a broker URL (a token
    /// file alone is refused: it would silently do nothing).
    pub fn from_flags(
        url: Option<Url>,
        token_file: Option<PathBuf>,
        namespace: Option<String>,
    ) -> Result<Option<BrokerArgs>, String> {
        let Some(url) = url else {
            return match token_file {
                Some(_) => Err("--token-file needs --broker-url".into()),
                None => Ok(None),
            };
        };
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!("--broker-url {url}: not an http(s) URL"));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(format!("--broker-url {url}: no query, fragment or credentials"));
        }
        let mut endpoint = url.clone();
        let path = url.path().trim_end_matches('/');
        if !path.ends_with("/token") {
            endpoint.set_path(&format!("{path}/token"));
        }
        let namespace = namespace.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
        if let Some(ns) = &namespace
            && !valid_namespace(ns)
        {
            return Err(format!("--namespace {ns}: not a Kubernetes namespace name"));
        }
        Ok(Some(BrokerArgs {
            endpoint,
            token_file: token_file.unwrap_or_else(|| PathBuf::from(DEFAULT_TOKEN_FILE)),
            namespace,
        }))
    }
}

/// A DNS-1123 label: what a namespace name can be.
pub fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 63
        && ns.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && !ns.ends_with('-')
        && ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `NAME=DIR` or `NAME=DIR:PROVIDER`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountArg {
    pub name: String,
    pub dir: PathBuf,
    pub provider: Option<String>,
}

impl FromStr for AccountArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected NAME=DIR or NAME=DIR:PROVIDER"))?;
        if !valid_name(name) {
            return Err(format!(
                "`{name}`: account names are letters, digits, `.`, `_` and `-`"
            ));
        }
        let (dir, provider) = match rest.rsplit_once(':') {
            Some((dir, p))
                if !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
            {
                (dir, Some(p.to_owned()))
            }
            _ => (rest, None),
        };
        if dir.is_empty() {
            return Err(format!("`{s}`: the directory is empty"));
        }
        Ok(AccountArg {
            name: name.to_owned(),
            dir: PathBuf::from(dir),
            provider,
        })
    }
}

/// `PROVIDER=URL`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiBaseArg {
    pub provider: String,
    pub url: Url,
}

impl FromStr for ApiBaseArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (provider, url) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected PROVIDER=URL"))?;
        let url = Url::parse(url).map_err(|e| format!("`{url}`: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("`{url}`: not an http(s) URL"));
        }
        Ok(ApiBaseArg {
            provider: provider.to_owned(),
            url,
        })
    }
}

/// Whether `name` can name an account (in `--account`, or as a directory of `--accounts-dir`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_and_api_base_arguments() {
        assert_eq!(
            "alice-gmail=/var/run/agentauth/alice-gmail"
                .parse::<AccountArg>()
                .unwrap(),
            AccountArg {
                name: "alice-gmail".into(),
                dir: "/var/run/agentauth/alice-gmail".into(),
                provider: None
            }
        );
        let a: AccountArg = "crm=/mnt/crm:salesforce".parse().unwrap();
        assert_eq!(
            (a.dir.to_str(), a.provider.as_deref()),
            (Some("/mnt/crm"), Some("salesforce"))
        );
        for bad in ["nodir", "=/x", "a b=/x", "a="] {
            assert!(bad.parse::<AccountArg>().is_err(), "{bad}");
        }
        let b: ApiBaseArg = "github=https://ghe.example.com/api/v3".parse().unwrap();
        assert_eq!(b.url.as_str(), "https://ghe.example.com/api/v3");
        assert!("github=ftp://x".parse::<ApiBaseArg>().is_err());
    }

    #[test]
    fn broker_flags() {
        let url = |s: &str| Some(Url::parse(s).unwrap());
        assert_eq!(BrokerArgs::from_flags(None, None, Some("ns".into())), Ok(None));
        assert!(BrokerArgs::from_flags(None, Some("/t".into()), None).is_err());
        let b = BrokerArgs::from_flags(url("http://broker.svc:8082"), None, Some(" team-a ".into()))
            .unwrap()
            .unwrap();
        assert_eq!(b.endpoint.as_str(), "http://broker.svc:8082/token");
        assert_eq!(b.token_file, PathBuf::from(DEFAULT_TOKEN_FILE));
        assert_eq!(b.namespace.as_deref(), Some("team-a"));
        let b = BrokerArgs::from_flags(
            url("https://b.example/api/token/"),
            Some("/t".into()),
            Some("".into()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (b.endpoint.as_str(), b.token_file.to_str(), b.namespace),
            ("https://b.example/api/token/", Some("/t"), None)
        );
        let b = BrokerArgs::from_flags(url("http://127.0.0.1:1/x/"), None, None)
            .unwrap()
            .unwrap();
        assert_eq!(b.endpoint.as_str(), "http://127.0.0.1:1/x/token");
        for bad in ["ftp://b", "http://u:p@b", "http://b/?q=1"] {
            assert!(BrokerArgs::from_flags(url(bad), None, None).is_err(), "{bad}");
        }
        assert!(BrokerArgs::from_flags(url("http://b"), None, Some("Team_A".into())).is_err());
        assert!(valid_namespace("a-1") && !valid_namespace("-a") && !valid_namespace("a-"));
    }
}
