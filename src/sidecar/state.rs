//! What every request handler shares, built once at startup: the mounted accounts, the broker
//! (broker mode), the tool catalog (reloaded on change), where each provider's API lives, and the
//! HTTP client.
//!
//! Building it checks everything that can be checked before the first request (account
//! directories, catalog files, the HTTP client), so that a misconfigured pod fails at start with
//! a [`StartError`] instead of on its first call.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use url::Url;

use super::accounts::{Accounts, MountError, Offered};
use super::args::Config;
use super::broker::Broker;
use super::routing::Routes;
use super::target::BrokerAccounts;
use super::tool_catalog::{LoadError, Source};
use super::upstream::Upstream;

/// Why the sidecar cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Accounts(#[from] MountError),
    #[error(
        "{0} is not a loopback address: the sidecar's API is for the pod only (--allow-non-loopback overrides)"
    )]
    NonLoopback(SocketAddr),
    #[error("tool catalog: {0}")]
    Catalog(#[from] LoadError),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What every request handler shares.
pub struct Sidecar {
    pub accounts: Accounts,
    pub broker: Option<BrokerAccounts>,
    pub catalog: Source,
    pub routes: Routes,
    pub upstream: Upstream,
    pub allow_non_loopback: bool,
}

impl Sidecar {
    pub fn new(config: &Config) -> Result<Sidecar, StartError> {
        let overrides: BTreeMap<String, Url> = config
            .api_bases
            .iter()
            .map(|b| (b.provider.clone(), b.url.clone()))
            .collect();
        Ok(Sidecar {
            accounts: Accounts::mount(config)?,
            broker: match &config.broker {
                Some(b) => Some(BrokerAccounts::new(Broker::new(b)?)),
                None => None,
            },
            catalog: Source::new(config.tools_dirs.clone())?,
            routes: Routes::new(overrides),
            upstream: Upstream::new()?,
            allow_non_loopback: config.allow_non_loopback,
        })
    }

    /// The tools some mounted account can run (every tool in broker mode), with the catalog as it
    /// is now, by name.
    pub fn offered(&self) -> Vec<Offered> {
        self.accounts.offered(&self.catalog.get(), self.broker.is_some())
    }
}
