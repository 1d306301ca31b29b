//! What every gateway handler shares: clients, configuration, the signer and the caches. Cheap to
//! clone (everything inside is shared).

use std::sync::Arc;

use kube::Client;

use super::cache;
use crate::config::Config;
use crate::signer::Signer;
use crate::store::operator_copy::CredentialStore;

/// What every handler shares.
#[derive(Clone)]
pub struct Gateway {
    pub client: Client,
    pub config: Arc<Config>,
    pub signer: Signer,
    pub http: crate::egress::EgressClient,
    pub credentials: CredentialStore,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub cache: cache::Cache,
}
