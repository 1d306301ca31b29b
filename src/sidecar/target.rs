//! The account a call runs as: a mounted one, or one the broker serves (broker mode), resolved from
//! the call's [`Selection`].
//!
//! Guarantees: a bare name is a mounted account when one has that name (mounted accounts win), else
//! the broker's account of that name in the sidecar's namespace; `namespace/name` and `connection` +
//! `identifier` are the broker's only; a tool runs only as an account of its provider. Broker answers
//! are cached ([`super::cache`]); a credential the provider rejected is fetched anew once.

use std::sync::Arc;

use super::accounts::{Account, Accounts};
use super::broker::{Broker, Fetched, Key};
use super::cache::{Cache, lifetime};
use super::credentials::Credential;
use super::error::ApiError;
use super::selection::Selection;
use super::tools::Tool;

/// Most accounts whose broker answers are kept at once.
const CACHE_CAPACITY: usize = 10_000;

/// The broker with its cache of answers.
pub struct BrokerAccounts {
    pub broker: Broker,
    cache: Cache<Key, Fetched>,
}

impl BrokerAccounts {
    pub fn new(broker: Broker) -> BrokerAccounts {
        BrokerAccounts {
            broker,
            cache: Cache::new(CACHE_CAPACITY),
        }
    }

    async fn fetch(&self, key: &Key) -> Result<(Fetched, std::time::Duration), ApiError> {
        let f = self.broker.fetch(key).await?;
        tracing::debug!(account = %f.name, expires_in = f.expires_in, "credential fetched from the broker");
        let keep = lifetime(f.expires_in);
        Ok((f, keep))
    }

    async fn get(&self, key: &Key) -> Result<Arc<Fetched>, ApiError> {
        self.cache.get(key, || self.fetch(key)).await
    }

    /// The key of `selection` (`None`: it names no broker account).
    fn key(&self, selection: &Selection) -> Result<Option<Key>, ApiError> {
        Ok(Some(match selection {
            Selection::Any => return Ok(None),
            Selection::Name(name) => Key::Resource {
                namespace: self.broker.namespace()?,
                name: name.clone(),
            },
            Selection::Qualified { namespace, name } => Key::Resource {
                namespace: namespace.clone(),
                name: name.clone(),
            },
            Selection::User {
                connection,
                identifier,
            } => Key::User {
                namespace: self.broker.namespace()?,
                connection: connection.clone(),
                identifier: identifier.clone(),
            },
        }))
    }
}

/// The account a call runs as.
pub enum Target<'a> {
    Mounted(&'a Account),
    Broker {
        accounts: &'a BrokerAccounts,
        key: Key,
        fetched: Arc<Fetched>,
    },
}

impl Target<'_> {
    /// The account's name: the mounted name, or `namespace/name` of the broker's account.
    pub fn name(&self) -> &str {
        match self {
            Target::Mounted(a) => &a.name,
            Target::Broker { fetched, .. } => &fetched.name,
        }
    }

    pub fn provider(&self) -> Option<String> {
        match self {
            Target::Mounted(a) => a.provider(),
            Target::Broker { fetched, .. } => fetched.provider.clone(),
        }
    }

    /// The credential to use now.
    pub fn credential(&self) -> Result<Credential, ApiError> {
        match self {
            Target::Mounted(a) => a.credential(),
            Target::Broker { fetched, .. } => Ok(fetched.credential.clone()),
        }
    }

    /// After the provider rejected `used`: another credential to retry with, if there is one now
    /// (the mounted files changed; the broker, asked again, has a new token).
    pub async fn after_rejection(&self, used: &Credential) -> Result<Option<Credential>, ApiError> {
        let fresh = match self {
            Target::Mounted(a) => a.credential()?,
            Target::Broker {
                accounts,
                key,
                fetched,
            } => {
                let renewed = accounts
                    .cache
                    .replace(key, fetched, || accounts.fetch(key))
                    .await?;
                renewed.credential.clone()
            }
        };
        Ok((!fresh.same_as(used)).then_some(fresh))
    }
}

/// The account `selection` names, with no provider check (the proxy). `None` for
/// [`Selection::Any`].
pub async fn resolve<'a>(
    mounted: &'a Accounts,
    broker: Option<&'a BrokerAccounts>,
    selection: &Selection,
) -> Result<Option<Target<'a>>, ApiError> {
    if let Selection::Name(name) = selection
        && let Some(a) = mounted.get(name)
    {
        return Ok(Some(Target::Mounted(a)));
    }
    let Some(broker) = broker else {
        return match selection {
            Selection::Any => Ok(None),
            Selection::Name(name) => Err(ApiError::UnknownAccount(name.clone())),
            Selection::Qualified { .. } => Err(ApiError::NoBroker("`namespace/name`".into())),
            Selection::User { .. } => Err(ApiError::NoBroker("`connection` + `identifier`".into())),
        };
    };
    let Some(key) = broker.key(selection)? else {
        return Ok(None);
    };
    let fetched = broker.get(&key).await?;
    Ok(Some(Target::Broker {
        accounts: broker,
        key,
        fetched,
    }))
}

/// The account to run `tool` as: the one `selection` names (of the tool's provider), or the only
/// mounted account of that provider.
pub async fn for_tool<'a>(
    mounted: &'a Accounts,
    broker: Option<&'a BrokerAccounts>,
    tool: &Tool,
    selection: &Selection,
) -> Result<Target<'a>, ApiError> {
    let Some(target) = resolve(mounted, broker, selection).await? else {
        return mounted.pick(tool, None).map(Target::Mounted).map_err(|e| match e {
            ApiError::NoAccount { tool, provider } if broker.is_some() => ApiError::BadSelection(format!(
                "no mounted `{provider}` account can run {tool}: name one with `connected_account` or `connection` + `identifier`"
            )),
            e => e,
        });
    };
    let actual = target.provider().unwrap_or_else(|| "unknown".into());
    if actual != tool.provider {
        return Err(ApiError::WrongProvider {
            account: target.name().to_owned(),
            actual,
            tool: tool.name.clone(),
            provider: tool.provider.clone(),
        });
    }
    Ok(target)
}
