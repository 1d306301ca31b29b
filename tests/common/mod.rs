//! Shared set-up for integration tests: the real control plane of this test binary, the CRDs, a
//! fresh namespace per test, and polling with deadlines.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub use agentauth_testcluster::dex;
pub mod browser;
pub mod fixtures;
pub mod forms;
pub mod hygiene;
pub mod identity;
pub mod operator;
pub mod outage;
pub mod proxy;
pub mod recorder;
pub mod rotating;
pub mod rotating_account;
pub mod token_server;

use std::future::Future;
use std::time::{Duration, Instant};

use agent_auth_operator::api;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;

/// A test's view of the cluster: an admin client, a namespace of its own, and the APIs of its
/// accounts and Secrets there.
pub struct TestEnv {
    pub client: Client,
    pub ns: String,
    pub accounts: Api<api::ConnectedAccount>,
    pub secrets: Api<Secret>,
}

impl TestEnv {
    /// `(client, namespace, accounts, secrets)`, to unpack in one line.
    pub fn parts(&self) -> (&Client, &str, &Api<api::ConnectedAccount>, &Api<Secret>) {
        (&self.client, &self.ns, &self.accounts, &self.secrets)
    }
}

/// The control plane of this test binary.
pub fn cluster() -> Result<&'static agentauth_testcluster::Cluster, String> {
    agentauth_testcluster::shared()
}

/// Starts (once per binary) the control plane, installs the CRDs and waits until they are
/// Established, and creates a fresh namespace. Panics with the reason when the cluster cannot start.
pub async fn setup(prefix: &str) -> TestEnv {
    let cluster =
        agentauth_testcluster::shared().unwrap_or_else(|e| panic!("control plane unavailable: {e}"));
    let client = cluster.client().await.unwrap_or_else(|e| panic!("{e}"));
    install_crds(&client).await;
    let ns = cluster
        .namespace(&client, prefix)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    TestEnv {
        accounts: Api::namespaced(client.clone(), &ns),
        secrets: Api::namespaced(client.clone(), &ns),
        client,
        ns,
    }
}

/// Server-side applies every CRD of the operator and waits until each is Established.
pub async fn install_crds(client: &Client) {
    agentauth_testcluster::fixtures::install_crds(client, api::crds())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Polls `check` until it returns `Some`, or panics naming `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    let mut wait = Duration::from_millis(50);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(wait).await; // poll interval, not synchronisation
        wait = (wait * 2).min(Duration::from_millis(500));
    }
}
