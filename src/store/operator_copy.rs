//! The operator's copy of each account's credentials: a Secret `agentauth-<account uid>` in the
//! operator's namespace, holding the [`Record`] as JSON (`record.json`), or sealed under the
//! operator's KEK (`record.sealed`, see [`super::seal`]) when one is configured.
//!
//! With a KEK, writes never produce plaintext; plaintext copies written before still read (and
//! are re-sealed by [`super::seal::reseal`]). A copy sealed under a key that is not loaded is an
//! error ([`StoreError::KeyNotLoaded`]), never read as empty, so it is never overwritten.
//!
//! Writes use optimistic concurrency (`resourceVersion`), so two writers (two gateway replicas
//! completing the same link, or a gateway and a refreshing controller) cannot silently overwrite
//! each other: the loser gets [`StoreError::Conflict`] and must re-read.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};

use zeroize::Zeroizing;

use super::seal::{self, SealError};
use super::{ACCOUNT_LABEL, ACCOUNT_NAMESPACE_LABEL, ACCOUNT_UID_LABEL, MANAGED_BY, ROLE_LABEL, Record};
use crate::api::ConnectedAccount;

/// Key of the plaintext record inside the Secret.
const RECORD_KEY: &str = "record.json";
/// Key of the sealed record inside the Secret.
const SEALED_KEY: &str = "record.sealed";
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
    #[error(
        "the credential record is sealed with key {0:?}, which is not loaded (--kek); it is left untouched"
    )]
    KeyNotLoaded(String),
    #[error("the sealed credential record does not open: {0}")]
    Sealed(SealError),
}

impl From<SealError> for StoreError {
    fn from(e: SealError) -> Self {
        match e {
            SealError::KeyNotLoaded(id) => StoreError::KeyNotLoaded(id),
            e => StoreError::Sealed(e),
        }
    }
}

/// How a copy is stored, read without opening it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protection {
    /// No record yet.
    Empty,
    /// `record.json`: written without a KEK.
    Plaintext,
    /// `record.sealed` under this KEK id.
    Sealed(String),
    /// A sealed value whose header does not parse (or of an unknown version).
    Unreadable,
}

impl Protection {
    pub fn of(secret: &Secret) -> Protection {
        let data = secret.data.as_ref();
        match (
            data.and_then(|d| d.get(SEALED_KEY)),
            data.and_then(|d| d.get(RECORD_KEY)),
        ) {
            (Some(sealed), _) => match seal::envelope::key_id(&sealed.0) {
                Ok(id) => Protection::Sealed(id),
                Err(_) => Protection::Unreadable,
            },
            (None, Some(_)) => Protection::Plaintext,
            (None, None) => Protection::Empty,
        }
    }
}

/// What [`CredentialStore::reseal`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resealed {
    /// Written again under this (the primary) key.
    Now(String),
    /// Already under the primary key, or empty, or no KEK is configured: nothing written.
    Unchanged(Protection),
    /// The Secret is gone.
    Gone,
}

/// The record of Secret `name` from its data.
fn decode(name: &str, data: Option<&BTreeMap<String, ByteString>>) -> Result<Record, StoreError> {
    if let Some(sealed) = data.and_then(|d| d.get(SEALED_KEY)) {
        let json = seal::envelope::open(seal::keyring(), name, &sealed.0)?;
        return serde_json::from_slice(&json).map_err(|_| StoreError::Corrupt);
    }
    match data.and_then(|d| d.get(RECORD_KEY)) {
        Some(bytes) => serde_json::from_slice(&bytes.0).map_err(|_| StoreError::Corrupt),
        None => Ok(Record::default()),
    }
}

/// The data of Secret `name` holding `record`: sealed when a KEK is configured.
fn encode(name: &str, record: &Record) -> Result<BTreeMap<String, ByteString>, StoreError> {
    let json = Zeroizing::new(serde_json::to_vec(record).map_err(|_| StoreError::Corrupt)?);
    Ok(match seal::keyring() {
        Some(k) => BTreeMap::from([(
            SEALED_KEY.to_owned(),
            ByteString(seal::envelope::seal(k, name, &json)?),
        )]),
        None => BTreeMap::from([(RECORD_KEY.to_owned(), ByteString(json.to_vec()))]),
    })
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
        Ok(Versioned {
            record: decode(&secret.name_any(), secret.data.as_ref())?,
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
        let data = encode(&Self::name_for(&uid), record)?;
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
            data: Some(data),
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

    /// Re-writes copy `name` sealed under the primary KEK if it is not already, against the version
    /// just read: a concurrent write (a refresh) makes it fail with [`StoreError::Conflict`]
    /// rather than be overwritten. The record itself is unchanged.
    pub async fn reseal(&self, name: &str) -> Result<Resealed, StoreError> {
        let Some(mut secret) = self.api.get_opt(name).await? else {
            return Ok(Resealed::Gone);
        };
        let now = Protection::of(&secret);
        let Some(keyring) = seal::keyring() else {
            return Ok(Resealed::Unchanged(now));
        };
        match &now {
            Protection::Empty => return Ok(Resealed::Unchanged(now)),
            Protection::Sealed(id) if id == keyring.primary() => return Ok(Resealed::Unchanged(now)),
            _ => {}
        }
        let record = decode(name, secret.data.as_ref())?;
        secret.data = Some(encode(name, &record)?);
        secret.metadata.managed_fields = None;
        let pp = PostParams {
            field_manager: Some(super::FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        match self.api.replace(name, &pp, &secret).await {
            Ok(_) => Ok(Resealed::Now(keyring.primary().to_owned())),
            Err(kube::Error::Api(e)) if e.code == 409 => Err(StoreError::Conflict),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(Resealed::Gone),
            Err(e) => Err(e.into()),
        }
    }

    /// Every copy's name and [`Protection`], listed in pages of `page` (for the re-seal pass).
    pub async fn protections(&self, page: u32) -> Result<Vec<(String, Protection)>, StoreError> {
        let mut out = Vec::new();
        let mut lp = kube::api::ListParams::default()
            .labels(&Self::selector())
            .limit(page);
        loop {
            let list = self.api.list(&lp).await?;
            out.extend(list.items.iter().map(|s| (s.name_any(), Protection::of(s))));
            match list.metadata.continue_ {
                Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
                _ => return Ok(out),
            }
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
