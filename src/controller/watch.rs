//! Running the controllers: the watches and caches of one set of controllers (one per watched
//! namespace, or one for all), what re-triggers an account, and the error policies.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use super::{Context, Error, RECONCILE_CONCURRENCY, Shared, account, connection};
use crate::api::{ConnectionKind, GuardedAccount, GuardedClusterConnection, GuardedConnection, api_for};
use crate::config::Config;
use crate::signer::Signer;
use crate::store::operator_copy::CredentialStore;
use crate::store::{ACCOUNT_LABEL, ACCOUNT_NAMESPACE_LABEL, agent_secret};

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
        // A new key ring may have dropped the key of a link in status: such links are replaced.
        .reconcile_all_on(ctx.signer.changes())
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

/// Drops what no reconcile reads from a cached object.
fn slim<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
    if let Some(a) = obj.meta_mut().annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

fn error_policy(account: Arc<GuardedAccount>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(account = %account.name_any(), namespace = %account.namespace().unwrap_or_default(), category = err.category(), error = %err, "reconcile failed");
    if err.is_conflict() {
        Action::requeue(Duration::from_millis(200))
    } else {
        Action::requeue(Duration::from_secs(5))
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
        // The leader keeps the key ring; links are signed only once one is loaded.
        let keys = crate::store::signing_key::maintain(
            client.clone(),
            &config.namespace,
            config.signing_key_rotation,
            shutdown.clone(),
        );
        let mut keys = std::pin::pin!(async move {
            keys.await;
            futures::future::pending::<()>().await;
        });
        if signer.primary_kid().is_none() {
            tokio::select! {
                loaded = signer.wait_loaded(Duration::from_secs(10)) => if !loaded {
                    tracing::warn!("no signing key ring loaded yet; starting the controllers anyway");
                },
                () = &mut keys => {}
            }
        }
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
        // The leader also re-seals credential copies under the primary KEK (after a rotation).
        let reseal = crate::store::seal::reseal::run(
            client.clone(),
            config.namespace.clone(),
            config.reseal_rate,
            metrics.clone(),
            shutdown.clone(),
        );
        let sets = futures::future::join(futures::future::join_all(sets), reseal).map(|(r, ())| r);
        tokio::select! {
            results = sets => results.into_iter().collect::<Result<Vec<_>, _>>().map(|_| ()),
            _ = all_ready => Ok(()),
            () = keys => Ok(()),
        }
    }
}
