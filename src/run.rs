//! `agent-auth-operator run`: wires the controller, the gateway, the token broker and the admin
//! listener together and stops them all on SIGTERM/SIGINT.

use std::sync::Arc;

use futures::FutureExt;

use kube_lease_manager::LeaseManagerBuilder;

use crate::config::Config;
use crate::signer::Signer;
use crate::store::operator_copy::CredentialStore;
use crate::store::signing_key;
use crate::{admin, broker, controller, gateway};

/// Name of the Lease that elects the replica running the controllers.
const LEASE_NAME: &str = "agent-auth-operator";
/// A leader that stops renewing is replaced after this long.
const LEASE_SECONDS: u64 = 15;
const LEASE_GRACE_SECONDS: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("leader election failed: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("cannot connect to Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("listener failed: {0}")]
    Io(#[from] std::io::Error),
}

pub async fn run(config: Config) -> Result<(), RunError> {
    let client = kube::Client::try_default().await?;
    let config = Arc::new(config);
    let shutdown = shutdown_signal().shared();
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let metrics = Arc::new(crate::metrics::Metrics::new());
    // Every role follows the key ring; the leading controller creates and rotates it.
    let signer = Signer::empty();
    let keys = signing_key::follow(
        client.clone(),
        &config.namespace,
        signer.clone(),
        metrics.clone(),
        shutdown.clone(),
    );

    let gw = gateway::Gateway {
        client: client.clone(),
        config: config.clone(),
        signer: signer.clone(),
        http: crate::auth::oauth2::http_client(config.egress.clone())?,
        credentials: CredentialStore::new(client.clone(), &config.namespace),
        metrics: metrics.clone(),
        cache: gateway::cache::Cache::start(&client, &config.watch_namespaces),
    };
    let gateway = gateway::serve(gw, config.gateway_addr, shutdown.clone());
    let brokered = broker::Broker::start(
        &client,
        &config.broker_audience,
        &config.watch_namespaces,
        &config.namespace,
        metrics.clone(),
    );
    let synced = brokered.clone();
    let broker = broker::serve(brokered, config.broker_addr, shutdown.clone());
    let admin = admin::serve(
        config.admin_addr,
        ready_rx,
        Arc::new(move || synced.synced()),
        metrics.clone(),
        shutdown.clone(),
    );
    let shared = controller::Shared::new(&client, &config);
    let controllers = controller::Controllers {
        shared,
        client,
        config: config.clone(),
        signer,
        metrics,
        ready: Arc::new(ready_tx),
    };
    let controllers = async {
        if config.leader_election {
            lead(&controllers, shutdown.clone()).await
        } else {
            controllers.run(shutdown.clone()).await.map_err(RunError::from)
        }
    };
    let (g, b, a, c, ()) = tokio::join!(gateway, broker, admin, controllers, keys);
    g?;
    b?;
    a?;
    c?;
    tracing::info!("stopped");
    Ok(())
}

/// Runs the controllers only while this replica holds the lease, so exactly one process reconciles
/// (and refreshes tokens) at a time. The gateway and the broker serve on every replica regardless.
async fn lead(
    controllers: &controller::Controllers,
    shutdown: futures::future::Shared<impl std::future::Future<Output = ()> + Send + 'static>,
) -> Result<(), RunError> {
    let (client, config) = (&controllers.client, &controllers.config);
    let lease = LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
        .with_namespace(&config.namespace)
        .with_identity(&config.instance)
        .with_duration(LEASE_SECONDS)
        .with_grace(LEASE_GRACE_SECONDS)
        .build()
        .await?;
    let (mut leader, task) = lease.watch().await;
    // A follower serves the gateway, which needs no caches.
    let _ = controllers.ready.send(true);
    loop {
        tokio::select! {
            _ = shutdown.clone() => break,
            r = leader.wait_for(|l| *l) => if r.is_err() { break },
        }
        tracing::info!(instance = %config.instance, "acquired the lease; starting controllers");
        let lost = {
            let mut l = leader.clone();
            async move {
                let _ = l.wait_for(|l| !*l).await;
            }
        };
        let stop = futures::future::select(Box::pin(shutdown.clone()), Box::pin(lost))
            .map(|_| ())
            .shared();
        controllers.run(stop).await?;
        if shutdown.clone().now_or_never().is_some() {
            break;
        }
        tracing::warn!(instance = %config.instance, "lost the lease; controllers stopped");
    }
    drop(leader);
    // Dropping the receiver makes the lease task release the lease for the next leader.
    let _ = task.await;
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
