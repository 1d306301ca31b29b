//! The agent-facing Secret: the contract with agent pods.
//!
//! Keys (files when mounted): `authorization` (the whole auth header value), `access_token`,
//! `token_type`, `expires_at` (RFC 3339), `scope`, and `credentials.json` with all of these plus
//! provider metadata. Refresh tokens never appear here. The Secret is labelled, owned by its
//! account (so it is garbage-collected with it) and only ever written when it is ours.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{ACCOUNT_LABEL, FIELD_MANAGER, MANAGED_BY, ROLE_LABEL, TokenSet};
use crate::api::ConnectedAccount;

/// Value of [`ROLE_LABEL`] on agent-facing Secrets.
pub const ROLE: &str = "agent";

/// Label selector matching every agent-facing Secret.
pub fn selector() -> String {
    format!("{}={},{ROLE_LABEL}={ROLE}", MANAGED_BY.0, MANAGED_BY.1)
}

/// Whose a Secret of the wanted name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    Missing,
    /// Created by the operator for this very account (its controller owner reference).
    Ours,
    /// Someone else's: never written, never deleted.
    Foreign,
}

pub fn ownership(secret: Option<&Secret>, account: &ConnectedAccount) -> Ownership {
    let Some(secret) = secret else {
        return Ownership::Missing;
    };
    // Ownership is the controller owner reference (only the operator sets one naming this account's
    // UID); a removed label is repaired by the next apply.
    let owned = secret
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == account.metadata.uid.as_ref());
    if owned {
        Ownership::Ours
    } else {
        Ownership::Foreign
    }
}

/// The Secret's data for a credential: the same `authorization` (and `header_name`) for every
/// auth type; token fields for token types, the form's field names for API-key types.
/// `provider` is the Connection's catalog name, so tools (the sidecar) know which API this is.
pub fn render(tokens: &TokenSet, provider: Option<&str>) -> BTreeMap<String, String> {
    let mut data = BTreeMap::from([("authorization".to_owned(), tokens.authorization())]);
    if let Some(p) = provider {
        data.insert("provider".to_owned(), p.to_owned());
    }
    if let Some(h) = &tokens.header_name {
        data.insert("header_name".to_owned(), h.clone());
    }
    if !tokens.access_token.is_empty() {
        data.insert("access_token".to_owned(), tokens.access_token.clone());
        data.insert("token_type".to_owned(), tokens.token_type.clone());
        data.insert("scope".to_owned(), tokens.scopes.join(" "));
    }
    if let Some(e) = tokens.expires_at {
        data.insert("expires_at".to_owned(), e.to_string());
    }
    for (k, v) in &tokens.fields {
        // Field names are kept off the contract's own keys by the CRD; never let one win anyway.
        data.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let mut doc: serde_json::Map<String, serde_json::Value> =
        data.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    if !tokens.metadata.is_empty() {
        doc.insert("metadata".into(), json!(tokens.metadata));
    }
    data.insert(
        "credentials.json".to_owned(),
        serde_json::Value::Object(doc).to_string(),
    );
    data
}

/// Whether `secret` already holds exactly `data`.
pub fn holds(secret: Option<&Secret>, data: &BTreeMap<String, String>) -> bool {
    let Some(current) = secret.and_then(|s| s.data.as_ref()) else {
        return false;
    };
    current.len() == data.len()
        && data
            .iter()
            .all(|(k, v)| current.get(k).map(|b| b.0.as_slice()) == Some(v.as_bytes()))
}

/// Server-side applies the Secret for `account` with `data`, and removes any other key someone
/// planted in it (`existing` is what is there now): the operator owns the whole data map. Call
/// only when [`ownership`] is not `Foreign`.
pub async fn apply(
    api: &Api<Secret>,
    account: &ConnectedAccount,
    name: &str,
    data: &BTreeMap<String, String>,
    existing: Option<&Secret>,
) -> Result<(), kube::Error> {
    let secret = desired(account, name, data);
    let mut value = serde_json::to_value(&secret).map_err(kube::Error::SerdeError)?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("apiVersion".into(), json!("v1"));
        obj.insert("kind".into(), json!("Secret"));
    }
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await?;
    // Server-side apply leaves keys another manager added; a merge patch removes them.
    let planted: serde_json::Map<String, serde_json::Value> = existing
        .and_then(|s| s.data.as_ref())
        .into_iter()
        .flat_map(|d| d.keys())
        .filter(|k| !data.contains_key(*k))
        .map(|k| (k.clone(), serde_json::Value::Null))
        .collect();
    if !planted.is_empty() {
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": planted})),
        )
        .await?;
    }
    Ok(())
}

/// Creates the Secret for a name that was looked up and found free: a Secret someone created
/// since then makes this fail (409) instead of being taken over.
pub async fn create(
    api: &Api<Secret>,
    account: &ConnectedAccount,
    name: &str,
    data: &BTreeMap<String, String>,
) -> Result<(), kube::Error> {
    let pp = kube::api::PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    api.create(&pp, &desired(account, name, data)).await.map(|_| ())
}

/// The agent Secret as the operator writes it: labelled, owned by the account, `data` only.
fn desired(account: &ConnectedAccount, name: &str, data: &BTreeMap<String, String>) -> Secret {
    let owner = account.controller_owner_ref(&());
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                (ROLE_LABEL.to_owned(), ROLE.to_owned()),
                (ACCOUNT_LABEL.to_owned(), account.name_any()),
            ])),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Deletes the Secret if it is ours; absent is fine.
pub async fn delete(api: &Api<Secret>, name: &str) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_the_documented_keys_and_no_refresh_token() {
        let t = TokenSet {
            access_token: "at".into(),
            refresh_token: Some("rt-must-not-appear".into()),
            token_type: "Bearer".into(),
            expires_at: Some(jiff::Timestamp::from_second(1_800_000_000).unwrap()),
            scopes: vec!["openid".into(), "email".into()],
            obtained_at: jiff::Timestamp::UNIX_EPOCH,
            metadata: BTreeMap::from([("team".to_owned(), json!({"id": "T1"}))]),
            ..Default::default()
        };
        let d = render(&t, None);
        assert_eq!(d["authorization"], "Bearer at");
        assert_eq!(d["expires_at"], "2027-01-15T08:00:00Z");
        assert_eq!(d["scope"], "openid email");
        let doc: serde_json::Value = serde_json::from_str(&d["credentials.json"]).unwrap();
        assert_eq!(doc["metadata"]["team"]["id"], "T1");
        assert!(d.values().all(|v| !v.contains("rt-must-not-appear")));
        let secret = Secret {
            data: Some(
                d.iter()
                    .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                    .collect(),
            ),
            ..Default::default()
        };
        assert!(holds(Some(&secret), &d));
    }

    #[test]
    fn api_keys_publish_their_fields_and_header() {
        let t = TokenSet {
            fields: BTreeMap::from([
                ("api_key".to_owned(), "k1".to_owned()),
                ("subdomain".to_owned(), "acme".to_owned()),
            ]),
            header_name: Some("X-Api-Key".into()),
            header_value: Some("k1".into()),
            ..Default::default()
        };
        let d = render(&t, None);
        let keys: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "api_key",
                "authorization",
                "credentials.json",
                "header_name",
                "subdomain"
            ]
        );
        assert_eq!(
            (d["authorization"].as_str(), d["header_name"].as_str()),
            ("k1", "X-Api-Key")
        );
        let doc: serde_json::Value = serde_json::from_str(&d["credentials.json"]).unwrap();
        assert_eq!(doc["subdomain"], "acme");
    }
}
