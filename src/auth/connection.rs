//! Turns a Connection into something usable: its effective OAuth settings and an OAuth client with
//! the client secret read from the Secret it references. Shared by the controller (refresh,
//! revocation) and the gateway (authorize, code exchange).

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::oauth2::{ConfigError, OAuthClient, Settings};
use crate::api::{Connection, SecretKeyRef};
use crate::config::Config;

/// The Connection's effective OAuth 2.0 settings (no API calls), for `OAuth2` and
/// `ClientCredentials` Connections.
pub fn settings(conn: &Connection) -> Result<Settings, ConfigError> {
    let oauth2 = conn
        .spec
        .oauth2
        .as_ref()
        .ok_or_else(|| ConfigError("spec.oauth2 is missing".into()))?;
    Settings::resolve(conn.spec.auth_type, conn.spec.provider.as_deref(), oauth2)
}

/// Reads one key of a Secret in `namespace`, as text.
pub async fn read_secret_key(
    client: &Client,
    namespace: &str,
    r: &SecretKeyRef,
) -> Result<String, ConfigError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(&r.name)
        .await
        .map_err(|e| ConfigError(format!("cannot read Secret {}: {}", r.name, api_reason(&e))))?
        .ok_or_else(|| ConfigError(format!("Secret {} not found", r.name)))?;
    let bytes = secret
        .data
        .and_then(|mut d| d.remove(&r.key))
        .ok_or_else(|| ConfigError(format!("Secret {} has no key {:?}", r.name, r.key)))?;
    let text = String::from_utf8(bytes.0)
        .map_err(|_| ConfigError(format!("Secret {} key {:?} is not UTF-8", r.name, r.key)))?;
    Ok(text.trim().to_owned())
}

/// An OAuth client for the Connection, with its client secret.
pub async fn oauth_client(
    client: &Client,
    config: &Config,
    conn: &Connection,
) -> Result<OAuthClient, ConfigError> {
    let settings = settings(conn)?;
    let secret = match conn
        .spec
        .oauth2
        .as_ref()
        .and_then(|o| o.client_secret_ref.as_ref())
    {
        Some(r) => Some(read_secret_key(client, &conn.namespace().unwrap_or_default(), r).await?),
        None => None,
    };
    OAuthClient::new(settings, secret, &config.redirect_uri())
}

/// A short reason for an API error, without response bodies.
fn api_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.reason, s.code),
        _ => "API unavailable".to_owned(),
    }
}
