//! Reading a Secret that a resource names (`clientSecretRef`, `signingKeyRef`, `credentialsRef`,
//! and any later reference): the one place that decides whether the operator may use it.
//!
//! Guarantees:
//! - only a Secret labelled [`USABLE_LABEL`]`: "true"` is read. Setting a label takes update rights
//!   on that Secret, so a tenant who may create Connections but may not read a Secret cannot make
//!   the operator send it anywhere (the confused deputy of a `clientSecretRef` to `db-creds`);
//! - a Secret the operator manages itself (credential copies, agent Secrets, the signing key) is
//!   refused whatever its labels say, so one account's credential can never be used as another
//!   Connection's client secret or copied into another account;
//! - errors name the Secret and the fix, never its content.

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;

use super::{MANAGED_BY, signing_key};

/// The opt-in label a referenced Secret must carry.
pub const USABLE_LABEL: &str = "agentauth.dev/usable";

/// Why a referenced Secret cannot be used. Safe for status and Events.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RefError {
    #[error("Secret {0} not found")]
    NotFound(String),
    #[error(
        "Secret {0} does not carry the label {USABLE_LABEL}: \"true\"; label it to let the operator use it \
         (this takes update rights on that Secret)"
    )]
    NotOptedIn(String),
    #[error("Secret {0} is managed by the operator and cannot be referenced")]
    OperatorOwned(String),
    #[error("Secret {name} has no key {key:?}")]
    MissingKey { name: String, key: String },
    #[error("Secret {name} key {key:?} is not UTF-8")]
    NotText { name: String, key: String },
    #[error("cannot read Secret {0}: the API server is unavailable")]
    Unavailable(String),
    #[error("cannot read Secret {name}: {reason}")]
    Api { name: String, reason: String },
}

impl RefError {
    /// Worth retrying without a change to the Secret or the resource.
    pub fn transient(&self) -> bool {
        matches!(self, RefError::Unavailable(_))
    }
}

/// The labels that opt a Secret in, for code that creates referenced Secrets.
pub fn opt_in_labels() -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([(USABLE_LABEL.to_owned(), "true".to_owned())])
}

/// Whether `secret` may be used through a reference.
pub fn check(secret: &Secret) -> Result<(), RefError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let labels = secret.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    if label(MANAGED_BY.0) == Some(MANAGED_BY.1) || name == signing_key::NAME {
        return Err(RefError::OperatorOwned(name));
    }
    if label(USABLE_LABEL) != Some("true") {
        return Err(RefError::NotOptedIn(name));
    }
    Ok(())
}

/// Reads Secret `name` in `namespace` if it opted in.
pub async fn read(client: &Client, namespace: &str, name: &str) -> Result<Secret, RefError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api.get_opt(name).await.map_err(|e| match e {
        kube::Error::Api(s) => RefError::Api {
            name: name.to_owned(),
            reason: format!("{} ({})", s.reason, s.code),
        },
        _ => RefError::Unavailable(name.to_owned()),
    })?;
    let secret = secret.ok_or_else(|| RefError::NotFound(name.to_owned()))?;
    check(&secret)?;
    Ok(secret)
}

/// One key of an opted-in Secret, byte for byte (an HS256 secret must not be trimmed).
pub async fn read_key(client: &Client, namespace: &str, name: &str, key: &str) -> Result<Vec<u8>, RefError> {
    let secret = read(client, namespace, name).await?;
    secret
        .data
        .and_then(|mut d| d.remove(key))
        .map(|b| b.0)
        .ok_or_else(|| RefError::MissingKey {
            name: name.to_owned(),
            key: key.to_owned(),
        })
}

/// One key of an opted-in Secret as trimmed text (client secrets).
pub async fn read_text(client: &Client, namespace: &str, name: &str, key: &str) -> Result<String, RefError> {
    let bytes = read_key(client, namespace, name, key).await?;
    let text = String::from_utf8(bytes).map_err(|_| RefError::NotText {
        name: name.to_owned(),
        key: key.to_owned(),
    })?;
    Ok(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn secret(name: &str, labels: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn only_opted_in_secrets_the_operator_does_not_manage_are_usable() {
        assert_eq!(
            check(&secret("db-creds", &[])),
            Err(RefError::NotOptedIn("db-creds".into()))
        );
        assert_eq!(
            check(&secret("db-creds", &[(USABLE_LABEL, "yes")])),
            Err(RefError::NotOptedIn("db-creds".into()))
        );
        assert_eq!(check(&secret("google-oauth", &[(USABLE_LABEL, "true")])), Ok(()));
        let agent = secret("alice-credentials", &[(USABLE_LABEL, "true"), MANAGED_BY]);
        assert_eq!(
            check(&agent),
            Err(RefError::OperatorOwned("alice-credentials".into()))
        );
        let key = secret(signing_key::NAME, &[(USABLE_LABEL, "true")]);
        assert!(matches!(check(&key), Err(RefError::OperatorOwned(_))));
        assert!(
            RefError::NotOptedIn("x".into())
                .to_string()
                .contains("agentauth.dev/usable: \"true\"")
        );
    }
}
