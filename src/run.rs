//! `agent-auth-operator run`: wires the parts of the process's `--role` together (the controllers,
//! the token broker and the intake for `controller`; the public gateway for `gateway`; all of them
//! for `all`), plus the admin listener, and stops them all on SIGTERM/SIGINT.

use std::sync::Arc;

use futures::FutureExt;

use kube_lease_manager::LeaseManagerBuilder;

use crate::config::{Config, Role};
use crate::intake::remote::{Remote, RemoteError};
use crate::intake::server::Gatekeeper;
use crate::intake::{Desk, Intake};
use crate::signer::Signer;
use crate::store::signing_key;
use crate::{admin, broker, controller, gateway, intake};

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
    #[error("cannot load the signing key: {0}")]
    Key(#[from] signing_key::KeyError),
    #[error("the signing key is unusable")]
    BadKey,
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("listener failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("--role=gateway needs --intake-url")]
    NoIntake,
    #[error("cannot set up the intake client: {0}")]
    Intake(#[from] RemoteError),
}

pub async fn run(config: Config) -> Result<(), RunError> {
    let client = kube::Client::try_default().await?;
    let key = signing_key::load_or_create(client.clone(), &config.namespace).await?;
    let signer = Signer::new(&key).map_err(|_| RunError::BadKey)?;
    let config = Arc::new(config);
    let role = config.role;
    let shutdown = shutdown_signal().shared();
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let metrics = Arc::new(crate::metrics::Metrics::new());
    tracing::info!(role = ?role, "starting");

    // The controller side: the desk (behind the intake), the broker and the controllers.
    let desk = role.controls().then(|| -> Result<Desk, RunError> {
        let http = crate::auth::oauth2::http_client(config.egress.clone())?;
        Ok(Desk::new(client.clone(), config.clone(), signer.clone(), http))
    });
    let desk = desk.transpose()?;
    let gateway = match role.serves_gateway() {
        false => None,
        true => {
            let intake = match (&desk, &config.intake.url) {
                (Some(desk), _) => Intake::Local(Arc::new(desk.clone())),
                (None, Some(url)) => Intake::Remote(Arc::new(Remote::new(
                    url.clone(),
                    config.intake.token_file.clone(),
                )?)),
                (None, None) => return Err(RunError::NoIntake),
            };
            let gw = gateway::Gateway {
                client: client.clone(),
                config: config.clone(),
                signer: signer.clone(),
                intake,
                metrics: metrics.clone(),
                cache: gateway::cache::Cache::start(&client, &config.watch_namespaces),
            };
            Some(gateway::serve(gw, config.gateway_addr, shutdown.clone()))
        }
    };
    let intake = match (&desk, role) {
        (Some(desk), Role::Controller) => {
            if config.intake.allow.is_empty() {
                tracing::warn!("--intake-allow is empty: the intake refuses every gateway");
            }
            let keeper = Gatekeeper::new(
                client.clone(),
                &config.intake.audience,
                config.intake.allow.clone(),
            );
            Some(intake::server::serve(
                desk.clone(),
                keeper,
                config.intake.addr,
                shutdown.clone(),
            ))
        }
        _ => None,
    };
    let brokered = role.controls().then(|| {
        broker::Broker::start(
            &client,
            &config.broker_audience,
            &config.watch_namespaces,
            &config.namespace,
            metrics.clone(),
        )
    });
    let synced = brokered.clone();
    let broker = brokered.map(|b| broker::serve(b, config.broker_addr, shutdown.clone()));
    let admin = admin::serve(
        config.admin_addr,
        ready_rx,
        Arc::new(move || synced.as_ref().is_none_or(|b| b.synced())),
        metrics.clone(),
        shutdown.clone(),
    );
    let ready = Arc::new(ready_tx);
    if !role.controls() {
        // The gateway role needs no caches to answer.
        let _ = ready.send(true);
    }
    let controllers = role.controls().then(|| controller::Controllers {
        shared: controller::Shared::new(&client, &config),
        client,
        config: config.clone(),
        signer,
        metrics,
        ready,
    });
    let controllers = async {
        match &controllers {
            None => Ok(()),
            Some(c) if config.leader_election => lead(c, shutdown.clone()).await,
            Some(c) => c.run(shutdown.clone()).await.map_err(RunError::from),
        }
    };
    let (g, i, b, a, c) = tokio::join!(
        optional(gateway),
        optional(intake),
        optional(broker),
        admin,
        controllers
    );
    g?;
    i?;
    b?;
    a?;
    c?;
    tracing::info!("stopped");
    Ok(())
}

/// Runs `f` if there is one.
async fn optional<F: std::future::Future<Output = std::io::Result<()>>>(f: Option<F>) -> std::io::Result<()> {
    match f {
        Some(f) => f.await,
        None => Ok(()),
    }
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
