//! Which accounts the sidecar serves: the credential directories named by `--account` and found in
//! `--accounts-dir`, and which of them runs a given tool.
//!
//! Guarantees: the set of accounts is fixed at startup (every directory readable, no name twice;
//! none is fine in broker mode, whose accounts are [`super::target`]'s);
//! an account's credential and provider are read from its files on every use, so a rotation is seen
//! at once; a tool runs as the account named for it only if that account is of the tool's provider,
//! and without a name only when exactly one mounted account is.

use std::path::PathBuf;
use std::sync::Arc;

use super::args::{AccountArg, Config, valid_name};
use super::credentials::Credential;
use super::error::ApiError;
use super::tool_catalog::Catalog;
use super::tools::Tool;

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

/// Why the configured accounts cannot be mounted.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("no accounts: give --account NAME=DIR (or --accounts-dir, or --broker-url)")]
    NoAccounts,
    #[error("account {0} is given twice")]
    DuplicateAccount(String),
    #[error("account {name}: cannot read {dir}: {source}")]
    AccountDir {
        name: String,
        dir: String,
        source: std::io::Error,
    },
}

/// A tool the mounted accounts can run, and which of them can.
pub struct Offered {
    pub tool: Arc<Tool>,
    pub accounts: Vec<String>,
}

/// The mounted accounts, in the order given (`--account` first, then `--accounts-dir` by name).
#[derive(Debug)]
pub struct Accounts(Vec<Account>);

impl Accounts {
    /// The accounts `config` names; every directory must be readable now.
    pub fn mount(config: &Config) -> Result<Accounts, MountError> {
        let mut args = config.accounts.clone();
        if let Some(root) = &config.accounts_dir {
            let entries = std::fs::read_dir(root).map_err(|source| MountError::AccountDir {
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
        // In broker mode, accounts are named at call time: none need be mounted.
        if args.is_empty() && config.broker.is_none() {
            return Err(MountError::NoAccounts);
        }
        let mut accounts: Vec<Account> = Vec::new();
        for a in args {
            if accounts.iter().any(|b| b.name == a.name) {
                return Err(MountError::DuplicateAccount(a.name));
            }
            std::fs::read_dir(&a.dir).map_err(|source| MountError::AccountDir {
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
        Ok(Accounts(accounts))
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Account> {
        self.0.iter()
    }

    pub fn get(&self, name: &str) -> Option<&Account> {
        self.0.iter().find(|a| a.name == name)
    }

    /// Every account with its provider (read now).
    pub fn providers(&self) -> Vec<(&Account, Option<String>)> {
        self.0.iter().map(|a| (a, a.provider())).collect()
    }

    /// The tools of `catalog` some mounted account can run (`all`: every tool, as in broker mode),
    /// by name.
    pub fn offered(&self, catalog: &Catalog, all: bool) -> Vec<Offered> {
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
                (all || !accounts.is_empty()).then(|| Offered {
                    tool: t.clone(),
                    accounts,
                })
            })
            .collect()
    }

    /// The account to run `tool` as: the one named (it must be for the tool's provider), or the
    /// only mounted account for that provider.
    pub fn pick(&self, tool: &Tool, requested: Option<&str>) -> Result<&Account, ApiError> {
        if let Some(name) = requested {
            let account = self
                .get(name)
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
