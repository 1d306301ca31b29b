//! The controllers: one for ConnectedAccounts (the lifecycle), one for Connections (validation).
//!
//! Accounts are re-triggered by their Connection, by their operator-side credential copy (the
//! gateway writes it when a user completes a flow) and by their agent Secret (deleted by hand:
//! rebuilt). All of these are read from watch caches; only Secrets the operator labels are cached.

pub mod account;
pub mod attempt;
pub mod connection;
pub mod decide;
mod events;
mod grants;
mod obtain;
mod persist;
pub mod refresh;
pub mod resolve;
pub mod schedule;
pub mod tenancy;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use kube::core::DeserializeGuard;

use crate::api::{ClusterConnection, ConnectedAccount, Connection, ConnectionKind};

/// Accounts as watched: an object that does not deserialize is reported, not fatal.
pub type GuardedAccount = DeserializeGuard<ConnectedAccount>;
/// Connections as watched.
pub type GuardedConnection = DeserializeGuard<Connection>;
/// ClusterConnections as watched.
pub type GuardedClusterConnection = DeserializeGuard<ClusterConnection>;
use crate::config::Config;
use crate::signer::Signer;
use crate::store::operator_copy::CredentialStore;
use crate::store::{ACCOUNT_LABEL, ACCOUNT_NAMESPACE_LABEL, agent_secret};
use decide::RefreshFailure;

/// Reconcile errors. `category()` names them for logs and metrics without formatting details.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("the credential record changed concurrently")]
    Conflict,
    #[error("the credential record is unreadable")]
    CorruptRecord,
    #[error("watch caches are not synced yet")]
    NotSynced,
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Conflict => "conflict",
            Error::CorruptRecord => "corrupt_record",
            Error::NotSynced => "not_synced",
        }
    }
}

/// What every set of controllers (one per watched namespace) and every leadership term of the
/// process share, so that limits hold per process and nothing a refresh brought back is dropped
/// with a term that ended.
pub struct Shared {
    /// Bounds concurrent token-endpoint calls (`--refresh-concurrency`).
    pub token_calls: Arc<tokio::sync::Semaphore>,
    /// Refreshed records the API did not accept yet (outage): written before anything else.
    pending: Mutex<HashMap<String, crate::store::Record>>,
    /// Refreshes whose answer is still read after their reconcile returned, by account UID.
    in_flight: Mutex<HashMap<String, attempt::InFlight>>,
    /// The last transient failure to get each account a credential (the backoff), by UID.
    failures: Mutex<HashMap<String, RefreshFailure>>,
    /// Per account UID: the resourceVersion before and after this process's last status write.
    status_writes: Mutex<HashMap<String, (String, Option<String>)>>,
    /// Bounds account reconciles in flight across every set of controllers.
    pub reconciles: Arc<tokio::sync::Semaphore>,
    /// The few workers that write Events.
    events: events::EventQueue,
}

impl Shared {
    /// Starts the Event workers: call from within the runtime.
    pub fn new(client: &Client, config: &Config) -> Arc<Shared> {
        let reporter = Reporter {
            controller: "agent-auth-operator".into(),
            instance: Some(config.instance.clone()),
        };
        Arc::new(Shared {
            token_calls: Arc::new(tokio::sync::Semaphore::new(config.refresh_concurrency.max(1))),
            reconciles: Arc::new(tokio::sync::Semaphore::new(usize::from(RECONCILE_CONCURRENCY))),
            events: events::EventQueue::start(Recorder::new(client.clone(), reporter)),
            pending: Mutex::default(),
            in_flight: Mutex::default(),
            failures: Mutex::default(),
            status_writes: Mutex::default(),
        })
    }

    /// Forgets a deleted account: nothing is kept per account once it is gone.
    fn forget(&self, uid: &str) {
        if let Ok(mut m) = self.failures.lock() {
            m.remove(uid);
        }
        if let Ok(mut m) = self.pending.lock() {
            m.remove(uid);
        }
        if let Ok(mut m) = self.status_writes.lock() {
            m.remove(uid);
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub config: Arc<Config>,
    pub signer: Signer,
    pub http: crate::egress::EgressClient,
    pub credentials: CredentialStore,
    pub connections: Store<GuardedConnection>,
    pub cluster_connections: Store<GuardedClusterConnection>,
    /// Namespace labels, for ClusterConnections' `namespaceSelector`.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub records: Store<Secret>,
    pub agent_secrets: Store<Secret>,
    pub metrics: Arc<crate::metrics::Metrics>,
    synced: tokio::sync::watch::Receiver<bool>,
    /// What outlives this set of controllers.
    pub shared: Arc<Shared>,
    /// Asks for a reconcile of an account (a late refresh answer was settled).
    wake: futures::channel::mpsc::UnboundedSender<ObjectRef<GuardedAccount>>,
}

impl Context {
    /// Waits until every cache has synced. Reconciles wait on a watch channel that one task
    /// sets (`Store::wait_until_ready` wakes only its most recent waiter, so concurrent waiters
    /// on one store could sleep until their timeout).
    async fn wait_for_caches(&self) -> Result<(), Error> {
        let mut synced = self.synced.clone();
        match tokio::time::timeout(Duration::from_secs(30), synced.wait_for(|s| *s)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::NotSynced),
        }
    }

    fn failure(&self, uid: &str) -> Option<RefreshFailure> {
        self.shared.failures.lock().ok().and_then(|f| f.get(uid).cloned())
    }

    /// Notes one more failed attempt to get `uid` a credential; the next try waits
    /// `wait(attempts)`. Returns the attempt number.
    fn note_failure(
        &self,
        uid: &str,
        message: String,
        now: jiff::Timestamp,
        wait: impl FnOnce(u32) -> Duration,
    ) -> u32 {
        let attempts = self.failure(uid).map_or(1, |f| f.attempts + 1);
        let retry_at = now + jiff::SignedDuration::try_from(wait(attempts)).unwrap_or_default();
        if let Ok(mut f) = self.shared.failures.lock() {
            f.insert(
                uid.to_owned(),
                RefreshFailure {
                    message,
                    attempts,
                    retry_at,
                },
            );
        }
        attempts
    }

    fn pending(&self, uid: &str) -> Option<crate::store::Record> {
        self.shared.pending.lock().ok().and_then(|p| p.get(uid).cloned())
    }

    fn set_pending(&self, uid: &str, record: crate::store::Record) {
        if let Ok(mut p) = self.shared.pending.lock() {
            p.insert(uid.to_owned(), record);
        }
    }

    fn clear_pending(&self, uid: &str) {
        if let Ok(mut p) = self.shared.pending.lock() {
            p.remove(uid);
        }
    }

    /// Whether the cached account (`rv`) predates this process's own last status write of it.
    fn stale_status(&self, uid: &str, rv: Option<&str>) -> bool {
        let Some(rv) = rv else { return false };
        self.shared
            .status_writes
            .lock()
            .ok()
            .and_then(|m| m.get(uid).cloned())
            .is_some_and(|(before, after)| before == rv && after.as_deref() != Some(rv))
    }

    fn wrote_status(&self, uid: &str, before: Option<String>, after: Option<String>) {
        if let (Some(before), Ok(mut m)) = (before, self.shared.status_writes.lock()) {
            m.insert(uid.to_owned(), (before, after));
        }
    }

    fn in_flight(&self, uid: &str) -> Option<attempt::InFlight> {
        self.shared
            .in_flight
            .lock()
            .ok()
            .and_then(|f| f.get(uid).cloned())
    }

    fn set_in_flight(&self, uid: &str, call: attempt::InFlight) {
        if let Ok(mut f) = self.shared.in_flight.lock() {
            f.insert(uid.to_owned(), call);
        }
    }

    /// Forgets the refresh `call` once settled; a newer one of the same account stays.
    fn clear_in_flight(&self, uid: &str, call: &attempt::InFlight) {
        if let Ok(mut f) = self.shared.in_flight.lock()
            && f.get(uid) == Some(call)
        {
            f.remove(uid);
        }
    }

    fn wake(&self, account: ObjectRef<GuardedAccount>) {
        let _ = self.wake.unbounded_send(account);
    }

    fn clear_failure(&self, uid: &str) {
        if let Ok(mut f) = self.shared.failures.lock() {
            f.remove(uid);
        }
    }

    /// Queues an Event on the account; recorded in the background, failures logged, never fatal.
    async fn event(
        &self,
        account: &ConnectedAccount,
        kind: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = account::event(kind, reason, action, note);
        self.shared.events.push(ev, account.object_ref(&()));
    }
}

/// An API for `K` in `ns`, or in every namespace.
pub fn api_for<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// What one set of controllers watches.
pub struct Scope {
    /// One namespace, or `None` for all.
    pub namespace: Option<String>,
    /// The first set also keeps the (cluster-scoped) ClusterConnections' status.
    pub primary: bool,
}

/// Runs both controllers until `shutdown` resolves; sets `ready` once every cache has synced.
#[allow(clippy::too_many_arguments)] // what one set of controllers is made of
pub async fn run(
    client: Client,
    config: Arc<Config>,
    scope: Scope,
    signer: Signer,
    metrics: Arc<crate::metrics::Metrics>,
    shared: Arc<Shared>,
    ready: Arc<tokio::sync::watch::Sender<bool>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), reqwest::Error> {
    let Scope { namespace, primary } = scope;
    let watch_ns = namespace.as_deref();
    let accounts: Api<GuardedAccount> = api_for(&client, watch_ns);
    let connections: Api<GuardedConnection> = api_for(&client, watch_ns);
    let agent_secrets: Api<Secret> = api_for(&client, watch_ns);
    let records: Api<Secret> = Api::namespaced(client.clone(), &config.namespace);

    let (conn_store, conn_writer) = reflector::store();
    let conn_stream = watcher(connections.clone(), watcher::Config::default())
        .default_backoff()
        .modify(slim)
        .reflect(conn_writer)
        .touched_objects();
    let cluster_connections: Api<GuardedClusterConnection> = Api::all(client.clone());
    let (cc_store, cc_writer) = reflector::store();
    let cc_stream = watcher(cluster_connections.clone(), watcher::Config::default())
        .default_backoff()
        .modify(slim)
        .reflect(cc_writer)
        .touched_objects();
    let (ns_store, ns_writer) = reflector::store();
    let ns_stream = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(ns_writer)
    .touched_objects();
    let (record_store, record_writer) = reflector::store();
    let record_stream = watcher(
        records,
        watcher::Config::default().labels(&CredentialStore::selector()),
    )
    .default_backoff()
    .modify(slim)
    .reflect(record_writer)
    .touched_objects();
    let (secret_store, secret_writer) = reflector::store();
    let secret_stream = watcher(
        agent_secrets,
        watcher::Config::default().labels(&agent_secret::selector()),
    )
    .default_backoff()
    .modify(slim)
    .reflect(secret_writer)
    .touched_objects();

    let (synced_tx, synced_rx) = tokio::sync::watch::channel(false);
    let (wake_tx, wake_rx) = futures::channel::mpsc::unbounded();
    let ctx = Arc::new(Context {
        client: client.clone(),
        credentials: CredentialStore::new(client.clone(), &config.namespace),
        http: crate::auth::oauth2::http_client(config.egress.clone())?,
        signer,
        config: config.clone(),
        connections: conn_store.clone(),
        cluster_connections: cc_store.clone(),
        namespaces: ns_store.clone(),
        records: record_store.clone(),
        agent_secrets: secret_store.clone(),
        shared,
        wake: wake_tx,
        metrics,
        synced: synced_rx,
    });

    // The caches keep what reconciles read, not managedFields or last-applied annotations: at
    // thousands of accounts those are most of the memory.
    let (account_store, account_writer) = reflector::store();
    // A deleted account leaves nothing behind in metrics or memory, finalizer or not (an account
    // without one is never reconciled again once gone).
    let forget = {
        let (metrics, shared) = (ctx.metrics.clone(), ctx.shared.clone());
        move |event: &watcher::Event<GuardedAccount>| {
            if let watcher::Event::Delete(a) = event {
                let uid = a.uid().unwrap_or_default();
                metrics.account_deleted(&uid, &a.namespace().unwrap_or_default(), &a.name_any());
                shared.forget(&uid);
            }
        }
    };
    let account_stream = watcher(accounts, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(slim)
        .inspect_ok(forget)
        .reflect(account_writer)
        .touched_objects();
    let account_controller = Controller::for_stream(account_stream, account_store.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY));
    let by_connection = {
        let account_store = account_store.clone();
        move |conn: GuardedConnection| {
            let (ns, name) = (conn.namespace(), conn.name_any());
            accounts_where(&account_store, |a, r| {
                a.namespace() == ns && r.kind == ConnectionKind::Connection && r.name == name
            })
        }
    };
    let by_cluster_connection = {
        let account_store = account_store.clone();
        move |cc: GuardedClusterConnection| {
            let name = cc.name_any();
            accounts_where(&account_store, |_, r| {
                r.kind == ConnectionKind::ClusterConnection && r.name == name
            })
        }
    };
    // A namespace's labels decide which ClusterConnections its accounts may use.
    let by_namespace = {
        let account_store = account_store.clone();
        move |n: PartialObjectMeta<Namespace>| {
            let ns = Some(n.name_any());
            accounts_where(&account_store, |a, r| {
                a.namespace() == ns && r.kind == ConnectionKind::ClusterConnection
            })
        }
    };
    let by_record = |s: Secret| {
        let labels = s.labels();
        let (ns, name) = (labels.get(ACCOUNT_NAMESPACE_LABEL)?, labels.get(ACCOUNT_LABEL)?);
        Some(ObjectRef::<GuardedAccount>::new(name).within(ns))
    };

    let shutdown = shutdown.shared();

    let accounts_fut = account_controller
        .owns_stream(secret_stream)
        .watches_stream(conn_stream, by_connection)
        .watches_stream(cc_stream, by_cluster_connection)
        .watches_stream(ns_stream, by_namespace)
        .watches_stream(record_stream, by_record)
        .reconcile_on(wake_rx)
        .graceful_shutdown_on(shutdown.clone())
        .run(account::reconcile_measured, error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "account reconcile failed");
            }
        });
    let connections_fut = Controller::new(connections, watcher::Config::default().any_semantic())
        .graceful_shutdown_on(shutdown.clone())
        .run(connection::reconcile_measured, conn_error_policy, ctx.clone())
        .for_each(|_| async {});
    // One set of controllers (the first) keeps the ClusterConnections' status.
    let cluster_fut = async {
        if primary {
            Controller::new(cluster_connections, watcher::Config::default().any_semantic())
                .graceful_shutdown_on(shutdown.clone())
                .run(
                    connection::reconcile_cluster_measured,
                    cluster_error_policy,
                    ctx.clone(),
                )
                .for_each(|_| async {})
                .await;
        }
    };
    let readiness = {
        let ctx = ctx.clone();
        let account_store = account_store.clone();
        async move {
            let _ = account_store.wait_until_ready().await;
            let _ = conn_store.wait_until_ready().await;
            let _ = cc_store.wait_until_ready().await;
            let _ = ns_store.wait_until_ready().await;
            let _ = record_store.wait_until_ready().await;
            let _ = secret_store.wait_until_ready().await;
            let _ = synced_tx.send(true);
            if ctx.wait_for_caches().await.is_ok() {
                let _ = ready.send(true);
                tracing::info!("caches synced; ready");
            }
            futures::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = futures::future::join3(accounts_fut, connections_fut, cluster_fut) => {}
        _ = readiness => {}
    }
    Ok(())
}

/// The cached accounts whose Connection reference satisfies `pred`, to trigger them.
fn accounts_where(
    store: &Store<GuardedAccount>,
    pred: impl Fn(&GuardedAccount, &crate::api::ConnectionRef) -> bool,
) -> Vec<ObjectRef<GuardedAccount>> {
    store
        .state()
        .into_iter()
        .filter(|a| a.0.as_ref().is_ok_and(|acc| pred(a, &acc.spec.connection_ref)))
        .map(|a| ObjectRef::from_obj(&*a))
        .collect()
}

/// Most account reconciles in flight at once: enough to keep the API server's write pipeline full,
/// bounded so a burst of thousands of accounts does not exceed its in-flight limit.
pub const RECONCILE_CONCURRENCY: u16 = 64;

/// Drops what no reconcile reads from a cached object.
fn slim<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
    if let Some(a) = obj.meta_mut().annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

fn error_policy(account: Arc<GuardedAccount>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(account = %account.name_any(), namespace = ?account.namespace(), category = err.category(), error = %err, "reconcile failed");
    match err {
        Error::Conflict => Action::requeue(Duration::from_millis(200)),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}

fn cluster_error_policy(conn: Arc<GuardedClusterConnection>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(clusterconnection = %conn.name_any(), category = err.category(), error = %err, "cluster connection reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

fn conn_error_policy(conn: Arc<GuardedConnection>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(connection = %conn.name_any(), category = err.category(), error = %err, "connection reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// What the controllers share across leadership terms.
pub struct Controllers {
    pub client: Client,
    pub config: Arc<Config>,
    pub signer: Signer,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Turns true once every set of controllers has synced its caches.
    pub ready: Arc<tokio::sync::watch::Sender<bool>>,
    pub shared: Arc<Shared>,
}

impl Controllers {
    /// Runs one set of controllers per watched namespace (or one for all namespaces) until
    /// `shutdown` resolves.
    pub async fn run<F>(&self, shutdown: F) -> Result<(), reqwest::Error>
    where
        F: std::future::Future<Output = ()> + Clone + Send + 'static,
    {
        let Controllers {
            client,
            config,
            signer,
            metrics,
            ready,
            shared,
        } = self;
        let scopes: Vec<Option<String>> = if config.watch_namespaces.is_empty() {
            vec![None]
        } else {
            config.watch_namespaces.iter().cloned().map(Some).collect()
        };
        let mut flags = Vec::new();
        let mut sets = Vec::new();
        for (i, scope) in scopes.into_iter().enumerate() {
            let (tx, rx) = tokio::sync::watch::channel(false);
            flags.push(rx);
            sets.push(run(
                client.clone(),
                config.clone(),
                Scope {
                    namespace: scope,
                    primary: i == 0,
                },
                signer.clone(),
                metrics.clone(),
                shared.clone(),
                Arc::new(tx),
                shutdown.clone(),
            ));
        }
        let all_ready = async move {
            for mut f in flags {
                let _ = f.wait_for(|r| *r).await;
            }
            let _ = ready.send(true);
            futures::future::pending::<()>().await;
        };
        tokio::select! {
            results = futures::future::join_all(sets) => results.into_iter().collect::<Result<Vec<_>, _>>().map(|_| ()),
            _ = all_ready => Ok(()),
        }
    }
}
