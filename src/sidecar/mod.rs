//! `agent-auth-operator sidecar`: authorized tool calls for agent pods.
//!
//! Runs next to the agent in its pod and reads the mounted credential Secrets (one directory per
//! account), so that agent code never handles a token and never notices a rotation. It serves, on
//! loopback only:
//!
//! - `GET /v1/tools`: the catalog tools the mounted accounts can run, with their input schemas;
//! - `POST /v1/tools/{tool}`: runs one (input checked against its schema; compact JSON result);
//! - `/v1/proxy/{account}/{path}`: any API call, forwarded to the account's API base with the
//!   credential's header added;
//! - `/mcp`: the same tools over MCP (streamable HTTP);
//! - `/healthz`.
//!
//! Guarantees: the credential files are read on every provider call (so a refresh is used at once);
//! a call the provider rejects with 401 is retried once if the files changed meanwhile; no log line,
//! error or response built by the sidecar carries a credential. The tool catalog is data
//! (`tools.yaml`, plus user files), see `docs/sidecar.md`.

mod call;
pub mod credentials;
pub mod docs;
mod error;
mod expr;
pub mod loader;
mod mcp;
mod mime;
mod proxy;
mod scrub;
mod server;
mod template;
pub mod tools;
mod trust;
mod upstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use url::Url;

pub use error::ApiError;

use credentials::Credential;
use tools::Tool;

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

/// A tool name fit for a log line (names come from URLs and MCP requests).
pub(crate) fn loggable(tool: &str) -> &str {
    if !tool.is_empty() && tool.len() <= 64 && tool.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        tool
    } else {
        "(invalid name)"
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Why the sidecar cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no accounts: give --account NAME=DIR (or --accounts-dir)")]
    NoAccounts,
    #[error("account {0} is given twice")]
    DuplicateAccount(String),
    #[error("account {name}: cannot read {dir}: {source}")]
    AccountDir {
        name: String,
        dir: String,
        source: std::io::Error,
    },
    #[error(
        "{0} is not a loopback address: the sidecar's API is for the pod only (--allow-non-loopback overrides)"
    )]
    NonLoopback(SocketAddr),
    #[error("tool catalog: {0}")]
    Catalog(#[from] loader::LoadError),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// One mounted credential.
#[derive(Debug)]
pub struct Account {
    pub name: String,
    pub dir: PathBuf,
    provider: Option<String>,
}

impl Account {
    /// The current credential (read from the files now).
    pub fn credential(&self) -> Result<Credential, ApiError> {
        Credential::read(&self.dir).map_err(|source| ApiError::Credential {
            account: self.name.clone(),
            source,
        })
    }

    /// `:PROVIDER` of `--account`, else the Secret's `provider` key.
    pub fn provider(&self) -> Option<String> {
        self.provider
            .clone()
            .or_else(|| Credential::read(&self.dir).ok()?.provider)
    }
}

/// What every request handler shares.
pub struct Sidecar {
    pub accounts: Vec<Account>,
    pub catalog: loader::Source,
    upstream: upstream::Upstream,
    pub allow_non_loopback: bool,
}

/// A tool the mounted accounts can run, and which of them can.
pub struct Offered {
    pub tool: Arc<Tool>,
    pub accounts: Vec<String>,
}

impl Sidecar {
    pub fn new(config: &Config) -> Result<Sidecar, StartError> {
        let mut args = config.accounts.clone();
        if let Some(root) = &config.accounts_dir {
            let entries = std::fs::read_dir(root).map_err(|source| StartError::AccountDir {
                name: "(--accounts-dir)".into(),
                dir: root.display().to_string(),
                source,
            })?;
            let mut found: Vec<AccountArg> = entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_owned();
                    (!name.starts_with('.') && valid_name(&name)).then(|| AccountArg {
                        name,
                        dir: e.path(),
                        provider: None,
                    })
                })
                .collect();
            found.sort_by(|a, b| a.name.cmp(&b.name));
            args.extend(found);
        }
        if args.is_empty() {
            return Err(StartError::NoAccounts);
        }
        let mut accounts: Vec<Account> = Vec::new();
        for a in args {
            if accounts.iter().any(|b| b.name == a.name) {
                return Err(StartError::DuplicateAccount(a.name));
            }
            std::fs::read_dir(&a.dir).map_err(|source| StartError::AccountDir {
                name: a.name.clone(),
                dir: a.dir.display().to_string(),
                source,
            })?;
            accounts.push(Account {
                name: a.name,
                dir: a.dir,
                provider: a.provider,
            });
        }
        let overrides: BTreeMap<String, Url> = config
            .api_bases
            .iter()
            .map(|b| (b.provider.clone(), b.url.clone()))
            .collect();
        Ok(Sidecar {
            accounts,
            catalog: loader::Source::new(config.tools_dirs.clone())?,
            upstream: upstream::Upstream::new(overrides)?,
            allow_non_loopback: config.allow_non_loopback,
        })
    }

    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }

    /// Every account with its provider (read now).
    pub fn providers(&self) -> Vec<(&Account, Option<String>)> {
        self.accounts.iter().map(|a| (a, a.provider())).collect()
    }

    /// The tools some mounted account can run, by name.
    pub fn offered(&self) -> Vec<Offered> {
        let catalog = self.catalog.get();
        let providers = self.providers();
        catalog
            .tools
            .values()
            .filter_map(|t| {
                let accounts: Vec<String> = providers
                    .iter()
                    .filter(|(_, p)| p.as_deref() == Some(t.provider.as_str()))
                    .map(|(a, _)| a.name.clone())
                    .collect();
                (!accounts.is_empty()).then(|| Offered {
                    tool: t.clone(),
                    accounts,
                })
            })
            .collect()
    }

    /// The account to run `tool` as: the one named (it must be for the tool's provider), or the
    /// only mounted account for that provider.
    pub fn pick_account(&self, tool: &Tool, requested: Option<&str>) -> Result<&Account, ApiError> {
        if let Some(name) = requested {
            let account = self
                .account(name)
                .ok_or_else(|| ApiError::UnknownAccount(name.to_owned()))?;
            let actual = account.provider().unwrap_or_else(|| "unknown".into());
            if actual != tool.provider {
                return Err(ApiError::WrongProvider {
                    account: name.to_owned(),
                    actual,
                    tool: tool.name.clone(),
                    provider: tool.provider.clone(),
                });
            }
            return Ok(account);
        }
        let matching: Vec<&Account> = self
            .providers()
            .into_iter()
            .filter(|(_, p)| p.as_deref() == Some(tool.provider.as_str()))
            .map(|(a, _)| a)
            .collect();
        match matching.as_slice() {
            [one] => Ok(one),
            [] => Err(ApiError::NoAccount {
                tool: tool.name.clone(),
                provider: tool.provider.clone(),
            }),
            many => Err(ApiError::AmbiguousAccount {
                tool: tool.name.clone(),
                accounts: many
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

/// Runs the sidecar until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> Result<(), StartError> {
    if !config.listen.ip().is_loopback() && !config.allow_non_loopback {
        return Err(StartError::NonLoopback(config.listen));
    }
    let sidecar = Arc::new(Sidecar::new(&config)?);
    for (a, p) in sidecar.providers() {
        tracing::info!(account = %a.name, provider = p.as_deref().unwrap_or("unknown"), "account mounted");
    }
    let tools = sidecar.offered().len();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(config.listen);
    tracing::info!(%addr, tools, "sidecar listening");
    server::serve(sidecar, listener)
        .await
        .map_err(|source| StartError::Bind { addr, source })
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
