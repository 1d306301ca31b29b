//! What the broker answers from, kept in memory by watches so that a cache hit makes no API call:
//! per account its UID, Connection, identifier, state and delivery; per Connection its delivery and
//! provider; per operator copy the current tokens **without the refresh token**.
//!
//! The refresh token is dropped as the copy is read, so the broker's memory never holds one. A
//! stale cache can only make the broker refuse or hand out a token that was current moments ago
//! (the previous access token stays valid until its own expiry); it can never serve an account
//! the cluster's RBAC does not grant, since authorization is not cached here.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::api::{
    AccountState, ConnectionKind, Delivery, GuardedAccount, GuardedClusterConnection, GuardedConnection,
    api_for,
};
use crate::projection::{Projected, Projection};
use crate::store::TokenSet;
use crate::store::operator_copy::CredentialStore;

/// What the broker keeps of one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountEntry {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub kind: ConnectionKind,
    pub connection: String,
    pub identifier: String,
    pub state: Option<AccountState>,
    pub delivery: Option<Delivery>,
}

/// Accounts by name, and by (namespace, Connection, identifier).
#[derive(Default)]
pub struct Accounts {
    by_name: HashMap<(String, String), Arc<AccountEntry>>,
    by_user: HashMap<(String, String, String), Vec<String>>,
}

impl Accounts {
    fn user_key(e: &AccountEntry) -> (String, String, String) {
        (e.namespace.clone(), e.connection.clone(), e.identifier.clone())
    }

    fn forget(&mut self, ns: &str, name: &str) {
        let Some(old) = self.by_name.remove(&(ns.to_owned(), name.to_owned())) else {
            return;
        };
        let key = Self::user_key(&old);
        if let Some(names) = self.by_user.get_mut(&key) {
            names.retain(|n| n != name);
            if names.is_empty() {
                self.by_user.remove(&key);
            }
        }
    }
}

impl Projection<GuardedAccount> for Accounts {
    fn upsert(&mut self, object: &GuardedAccount) {
        let (ns, name) = (object.namespace().unwrap_or_default(), object.name_any());
        self.forget(&ns, &name);
        let Ok(account) = object.0.as_ref() else { return };
        let entry = AccountEntry {
            uid: account.uid().unwrap_or_default(),
            kind: account.spec.connection_ref.kind,
            connection: account.spec.connection_ref.name.clone(),
            identifier: account.spec.identifier.clone(),
            state: account.status.as_ref().and_then(|s| s.state),
            delivery: account.spec.delivery,
            namespace: ns.clone(),
            name: name.clone(),
        };
        self.by_user
            .entry(Self::user_key(&entry))
            .or_default()
            .push(name.clone());
        self.by_name.insert((ns, name), Arc::new(entry));
    }

    fn remove(&mut self, object: &GuardedAccount) {
        self.forget(&object.namespace().unwrap_or_default(), &object.name_any());
    }
}

/// What the broker keeps of one Connection or ClusterConnection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionEntry {
    pub delivery: Option<Delivery>,
    pub provider: Option<String>,
}

/// Connections (or ClusterConnections, namespace empty) by (namespace, name).
#[derive(Default)]
pub struct Connections(HashMap<(String, String), ConnectionEntry>);

fn connection_key<K: kube::Resource>(o: &K) -> (String, String) {
    (
        o.meta().namespace.clone().unwrap_or_default(),
        o.meta().name.clone().unwrap_or_default(),
    )
}

impl Projection<GuardedConnection> for Connections {
    fn upsert(&mut self, object: &GuardedConnection) {
        match object.0.as_ref() {
            Ok(c) => {
                let entry = ConnectionEntry {
                    delivery: c.spec.delivery,
                    provider: c.spec.provider.clone(),
                };
                self.0.insert(connection_key(object), entry);
            }
            Err(_) => self.remove(object),
        }
    }
    fn remove(&mut self, object: &GuardedConnection) {
        self.0.remove(&connection_key(object));
    }
}

impl Projection<GuardedClusterConnection> for Connections {
    fn upsert(&mut self, object: &GuardedClusterConnection) {
        match object.0.as_ref() {
            Ok(c) => {
                let entry = ConnectionEntry {
                    delivery: c.spec.connection.delivery,
                    provider: c.spec.connection.provider.clone(),
                };
                self.0.insert(connection_key(object), entry);
            }
            Err(_) => self.remove(object),
        }
    }
    fn remove(&mut self, object: &GuardedClusterConnection) {
        self.0.remove(&connection_key(object));
    }
}

/// The usable tokens of each account, by UID, refresh tokens stripped.
#[derive(Default)]
pub struct Credentials(HashMap<String, Arc<TokenSet>>);

fn uid_of(secret: &Secret) -> Option<String> {
    secret.name_any().strip_prefix("agentauth-").map(str::to_owned)
}

impl Projection<Secret> for Credentials {
    fn upsert(&mut self, secret: &Secret) {
        let Some(uid) = uid_of(secret) else { return };
        let tokens = CredentialStore::parse(secret)
            .ok()
            .map(|v| v.record)
            .filter(|r| !r.rejected)
            .and_then(|r| r.tokens);
        match tokens {
            Some(mut t) => {
                t.refresh_token = None;
                self.0.insert(uid, Arc::new(t));
            }
            None => {
                self.0.remove(&uid);
            }
        }
    }
    fn remove(&mut self, secret: &Secret) {
        if let Some(uid) = uid_of(secret) {
            self.0.remove(&uid);
        }
    }
}

/// Every watch the broker answers from.
#[derive(Clone, Default)]
pub struct Cache {
    accounts: Vec<Projected<Accounts>>,
    connections: Vec<Projected<Connections>>,
    cluster_connections: Projected<Connections>,
    credentials: Projected<Credentials>,
}

/// How a lookup by user went.
#[derive(Debug, PartialEq, Eq)]
pub enum Match {
    None,
    One(Arc<AccountEntry>),
    Several,
}

impl Cache {
    /// Starts the watches: accounts and Connections of the watched namespaces (or all),
    /// ClusterConnections, and the operator's copies in `operator_ns`.
    pub fn start(client: &Client, namespaces: &[String], operator_ns: &str) -> Cache {
        let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        let all = || watcher::Config::default().any_semantic();
        let mut cache = Cache::default();
        for ns in scopes {
            let accounts = Projected::<Accounts>::default();
            accounts.watch(api_for::<GuardedAccount>(client, ns), all());
            cache.accounts.push(accounts);
            let connections = Projected::<Connections>::default();
            connections.watch(api_for::<GuardedConnection>(client, ns), all());
            cache.connections.push(connections);
        }
        cache
            .cluster_connections
            .watch(kube::Api::<GuardedClusterConnection>::all(client.clone()), all());
        cache.credentials.watch(
            kube::Api::<Secret>::namespaced(client.clone(), operator_ns),
            all().labels(&CredentialStore::selector()),
        );
        cache
    }

    /// A cache of just `accounts`, watching nothing (for tests).
    #[cfg(test)]
    pub fn of_accounts(accounts: &[GuardedAccount]) -> Cache {
        let mut projection = Accounts::default();
        for a in accounts {
            projection.upsert(a);
        }
        Cache {
            accounts: vec![Projected::of(projection)],
            ..Cache::default()
        }
    }

    /// Every watch has listed once.
    pub fn synced(&self) -> bool {
        self.accounts.iter().all(Projected::synced)
            && self.connections.iter().all(Projected::synced)
            && self.cluster_connections.synced()
            && self.credentials.synced()
    }

    pub fn account(&self, ns: &str, name: &str) -> Option<Arc<AccountEntry>> {
        let key = (ns.to_owned(), name.to_owned());
        self.accounts
            .iter()
            .find_map(|p| p.read().and_then(|a| a.by_name.get(&key).cloned()))
    }

    /// The account in `ns` for `connection` and `identifier`.
    pub fn matching(&self, ns: &str, connection: &str, identifier: &str) -> Match {
        let key = (ns.to_owned(), connection.to_owned(), identifier.to_owned());
        let names: Vec<String> = self
            .accounts
            .iter()
            .filter_map(|p| p.read().and_then(|a| a.by_user.get(&key).cloned()))
            .flatten()
            .collect();
        match names.as_slice() {
            [] => Match::None,
            [one] => self.account(ns, one).map_or(Match::None, Match::One),
            _ => Match::Several,
        }
    }

    /// The Connection `entry` refers to, if it exists.
    pub fn connection(&self, entry: &AccountEntry) -> Option<ConnectionEntry> {
        match entry.kind {
            ConnectionKind::ClusterConnection => {
                let key = (String::new(), entry.connection.clone());
                self.cluster_connections
                    .read()
                    .and_then(|c| c.0.get(&key).cloned())
            }
            ConnectionKind::Connection => {
                let key = (entry.namespace.clone(), entry.connection.clone());
                self.connections
                    .iter()
                    .find_map(|p| p.read().and_then(|c| c.0.get(&key).cloned()))
            }
        }
    }

    /// The account's current tokens (no refresh token).
    pub fn tokens(&self, uid: &str) -> Option<Arc<TokenSet>> {
        self.credentials.read().and_then(|c| c.0.get(uid).cloned())
    }
}
