//! What every gateway handler shares: clients, configuration, the signer and the caches. Cheap to
//! clone (everything inside is shared).

use std::sync::Arc;

use kube::Client;

use super::cache;
use crate::config::Config;
use crate::intake::Intake;
use crate::signer::Signer;

/// What every handler shares.
#[derive(Clone)]
pub struct Gateway {
    pub client: Client,
    pub config: Arc<Config>,
    pub signer: Signer,
    /// Where flow results go: the gateway itself holds no rights on credentials.
    pub intake: Intake,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub cache: cache::Cache,
}
