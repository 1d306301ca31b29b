//! The operator's HMAC key for links and OAuth state: a Secret in the operator's namespace, created
//! once by whichever replica starts first and read by all others.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

use super::{MANAGED_BY, ROLE_LABEL};
use crate::signer;

/// Name of the Secret holding the key.
pub const NAME: &str = "agent-auth-operator-signing-key";
const KEY: &str = "hmac-sha256";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("Kubernetes API error: {0}")]
    Api(#[from] kube::Error),
    #[error("Secret {NAME} has no usable key {KEY:?}; delete it to have a new one generated")]
    Unusable,
}

/// Reads the key, creating it when absent. Safe to race: the loser of a concurrent create reads
/// the winner's key.
pub async fn load_or_create(client: Client, namespace: &str) -> Result<Vec<u8>, KeyError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    for _ in 0..3 {
        if let Some(secret) = api.get_opt(NAME).await? {
            let key = secret
                .data
                .and_then(|mut d| d.remove(KEY))
                .map(|b| b.0)
                .unwrap_or_default();
            return if key.len() >= 32 {
                Ok(key)
            } else {
                Err(KeyError::Unusable)
            };
        }
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(NAME.to_owned()),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                    (ROLE_LABEL.to_owned(), "signing-key".to_owned()),
                ])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                KEY.to_owned(),
                ByteString(signer::random_key()),
            )])),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => tracing::info!(namespace, "created the link signing key"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(KeyError::Unusable)
}
