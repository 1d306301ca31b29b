//! Turns a Connection into something usable: its effective OAuth settings and an OAuth client with
//! the client secret read from the Secret it references. Shared by the controller (refresh,
//! revocation) and the gateway (authorize, code exchange).

use kube::{Client, ResourceExt};

use super::oauth2::{ConfigError, OAuthClient, Settings};
use crate::api::{Connection, SecretKeyRef};
use crate::config::Config;
use crate::store::secret_ref;

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

/// Reads one key of an opted-in Secret in `namespace`, as text (see [`secret_ref`]).
pub async fn read_secret_key(
    client: &Client,
    namespace: &str,
    r: &SecretKeyRef,
) -> Result<String, ConfigError> {
    secret_ref::read_text(client, namespace, &r.name, &r.key)
        .await
        .map_err(|e| ConfigError(e.to_string()))
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
