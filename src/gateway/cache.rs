//! What `GET /connect/{token}` needs, kept in memory from watches so the hot path makes no API
//! call: for each account only its UID, current link token, state and Connection name (a few
//! hundred bytes, not the object), and the Connections themselves.
//!
//! The cache only ever speeds up the answer "this link is current": whenever it says anything
//! else (not synced yet, lagging behind a new link, unknown account) the gateway asks the API
//! server, so a stale cache can cost a request its speed, never its correctness.

use std::collections::HashMap;

use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::runtime::{WatchStreamExt, reflector::store::Writer};
use kube::{Api, Client, ResourceExt};

use crate::projection::{Projected, Projection};

use crate::api::{AccountState, Connection};
use crate::api::{GuardedAccount, GuardedConnection, api_for};
use crate::signer;

/// The little the gateway keeps per account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub uid: String,
    /// The token of `status.authorizationLink`.
    pub link: Option<String>,
    pub disconnected: bool,
    pub connection: String,
    /// `spec.identifier`, shown on the interstitial page.
    pub identifier: String,
    /// ClusterConnections are not cached: their namespace selector needs the namespace's labels.
    pub cluster: bool,
}

type Key = (String, String);

/// Account entries by (namespace, name).
#[derive(Default)]
pub struct Accounts(HashMap<Key, Entry>);

impl Projection<GuardedAccount> for Accounts {
    fn upsert(&mut self, a: &GuardedAccount) {
        match entry(a) {
            Some((k, e)) => {
                self.0.insert(k, e);
            }
            None => {
                self.0.remove(&key(a));
            }
        }
    }
    fn remove(&mut self, a: &GuardedAccount) {
        self.0.remove(&key(a));
    }
}

/// Account entries and Connections of the watched namespaces.
#[derive(Clone, Default)]
pub struct Cache {
    accounts: Vec<Projected<Accounts>>,
    connections: Vec<Store<GuardedConnection>>,
}

impl Cache {
    /// Starts the watches (one set per watched namespace, or one for all) in the background.
    pub fn start(client: &Client, namespaces: &[String]) -> Cache {
        let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        let mut cache = Cache::default();
        for ns in scopes {
            let (store, writer) = reflector::store();
            cache.connections.push(store);
            tokio::spawn(watch_connections(api_for(client, ns), writer));
            let accounts = Projected::<Accounts>::default();
            accounts.watch(
                api_for::<GuardedAccount>(client, ns),
                watcher::Config::default().any_semantic(),
            );
            cache.accounts.push(accounts);
        }
        cache
    }

    pub fn account(&self, ns: &str, name: &str) -> Option<Entry> {
        let key = (ns.to_owned(), name.to_owned());
        self.accounts
            .iter()
            .find_map(|p| p.read().and_then(|a| a.0.get(&key).cloned()))
    }

    /// A Connection that matches its schema, as a tenant's (never passing for the platform's).
    pub fn connection(&self, ns: &str, name: &str) -> Option<Connection> {
        let key = ObjectRef::new(name).within(ns);
        self.connections
            .iter()
            .find_map(|s| s.get(&key))
            .and_then(|g| g.0.as_ref().ok().cloned())
            .map(crate::api::tenant_connection)
    }
}

async fn watch_connections(api: Api<GuardedConnection>, writer: Writer<GuardedConnection>) {
    let stream = watcher::watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|c| c.managed_fields_mut().clear())
        .reflect(writer);
    futures::pin_mut!(stream);
    while stream.next().await.is_some() {}
}

fn key(a: &GuardedAccount) -> Key {
    (a.namespace().unwrap_or_default(), a.name_any())
}

fn entry(a: &GuardedAccount) -> Option<(Key, Entry)> {
    let account = a.0.as_ref().ok()?;
    let status = account.status.as_ref();
    let e = Entry {
        uid: account.uid()?,
        link: status
            .and_then(|s| s.authorization_link.as_deref())
            .and_then(signer::token_of)
            .map(str::to_owned),
        disconnected: status.and_then(|s| s.state) == Some(AccountState::Disconnected),
        connection: account.spec.connection_ref.name.clone(),
        identifier: account.spec.identifier.clone(),
        cluster: account.spec.connection_ref.kind == crate::api::ConnectionKind::ClusterConnection,
    };
    Some((key(a), e))
}
