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
}
