//! `agent-auth-operator run`: wires the controller, the gateway and the admin listener together and
//! stops them all on SIGTERM/SIGINT.

use std::sync::Arc;

use futures::FutureExt;

use crate::config::Config;
use crate::links::Signer;
use crate::store::credentials::CredentialStore;
use crate::store::signing_key;
use crate::{admin, controller, gateway};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
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
}

pub async fn run(config: Config) -> Result<(), RunError> {
    let client = kube::Client::try_default().await?;
    let key = signing_key::load_or_create(client.clone(), &config.namespace).await?;
    let signer = Signer::new(&key).map_err(|_| RunError::BadKey)?;
    let config = Arc::new(config);
    let shutdown = shutdown_signal().shared();
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);

    let gw = gateway::Gateway {
        client: client.clone(),
        config: config.clone(),
        signer: signer.clone(),
        http: crate::auth::oauth2::http_client()?,
        credentials: CredentialStore::new(client.clone(), &config.namespace),
    };
    let gateway = gateway::serve(gw, config.gateway_addr, shutdown.clone());
    let admin = admin::serve(config.admin_addr, ready_rx, shutdown.clone());
    let controllers = controller::run(client, config.clone(), signer, ready_tx, shutdown.clone());
    let (g, a, c) = tokio::join!(gateway, admin, controllers);
    g?;
    a?;
    c?;
    tracing::info!("stopped");
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
