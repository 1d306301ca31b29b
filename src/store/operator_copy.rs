//! The operator's copy of each account's credentials: a Secret `agentauth-<account uid>` in the
//! operator's namespace, holding the [`Record`] as JSON.
//!
//! Writes use optimistic concurrency (`resourceVersion`), so two writers (two gateway replicas
//! completing the same link, or a gateway and a refreshing controller) cannot silently overwrite
//! each other: the loser gets [`StoreError::Conflict`] and must re-read.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};

use super::{ACCOUNT_LABEL, ACCOUNT_NAMESPACE_LABEL, ACCOUNT_UID_LABEL, MANAGED_BY, ROLE_LABEL, Record};
use crate::api::ConnectedAccount;

/// Key of the record inside the Secret.
const RECORD_KEY: &str = "record.json";
/// Value of [`ROLE_LABEL`] on the operator's copies.
pub const ROLE: &str = "credentials";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the credential record changed concurrently")]
    Conflict,
    #[error("the credential record is unreadable")]
    Corrupt,
    #[error("Kubernetes API error: {0}")]
    Api(#[from] kube::Error),
}

/// A record as read, with the version to write against.
#[derive(Debug, Clone, Default)]
pub struct Versioned {
    pub record: Record,
    /// `None` when no Secret exists yet.
    pub resource_version: Option<String>,
}

/// Reads and writes the operator's copies in one namespace.
#[derive(Clone)]
pub struct CredentialStore {
    api: Api<Secret>,
}

impl CredentialStore {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
        }
    }

    /// Name of an account's Secret. Keyed by UID, so a re-created account never sees old tokens.
    pub fn name_for(uid: &str) -> String {
        format!("agentauth-{uid}")
    }

    /// Label selector matching every operator copy.
    pub fn selector() -> String {
        format!("{}={},{ROLE_LABEL}={ROLE}", MANAGED_BY.0, MANAGED_BY.1)
    }

    /// Parses a record from a Secret (from the API or a watch cache).
    pub fn parse(secret: &Secret) -> Result<Versioned, StoreError> {
        let record = match secret.data.as_ref().and_then(|d| d.get(RECORD_KEY)) {
            Some(bytes) => serde_json::from_slice(&bytes.0).map_err(|_| StoreError::Corrupt)?,
            None => Record::default(),
        };
        Ok(Versioned {
            record,
            resource_version: secret.resource_version(),
        })
    }

    pub async fn get(&self, uid: &str) -> Result<Versioned, StoreError> {
        match self.api.get_opt(&Self::name_for(uid)).await? {
            Some(s) => Self::parse(&s),
            None => Ok(Versioned::default()),
        }
    }

    /// Writes `record`, creating the Secret when `expected` has no version. Fails with
    /// [`StoreError::Conflict`] when someone else wrote since `expected` was read. Returns the new
    /// version.
    pub async fn put(
        &self,
        account: &ConnectedAccount,
        record: &Record,
        expected: Option<&str>,
    ) -> Result<String, StoreError> {
        let uid = account.uid().unwrap_or_default();
        let data = serde_json::to_vec(record).map_err(|_| StoreError::Corrupt)?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(Self::name_for(&uid)),
                resource_version: expected.map(str::to_owned),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                    (ROLE_LABEL.to_owned(), ROLE.to_owned()),
                    (ACCOUNT_LABEL.to_owned(), account.name_any()),
                    (
                        ACCOUNT_NAMESPACE_LABEL.to_owned(),
                        account.namespace().unwrap_or_default(),
                    ),
                    (ACCOUNT_UID_LABEL.to_owned(), uid.clone()),
                ])),
                ..Default::default()
            },
            type_: Some("agentauth.dev/credentials".to_owned()),
            data: Some(BTreeMap::from([(RECORD_KEY.to_owned(), ByteString(data))])),
            ..Default::default()
        };
        let pp = PostParams {
            field_manager: Some(super::FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        let result = match expected {
            None => self.api.create(&pp, &secret).await,
            Some(_) => self.api.replace(&Self::name_for(&uid), &pp, &secret).await,
        };
        match result {
            Ok(s) => Ok(s.resource_version().unwrap_or_default()),
            Err(kube::Error::Api(e)) if e.code == 409 => Err(StoreError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an account's copy; absent is fine.
    pub async fn delete(&self, uid: &str) -> Result<(), StoreError> {
        match self
            .api
            .delete(&Self::name_for(uid), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
