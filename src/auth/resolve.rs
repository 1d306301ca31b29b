//! Turns a Connection into something usable: its effective OAuth settings and an OAuth client with
//! the client secret read from the Secret it references. Shared by the controller (refresh,
//! revocation) and the gateway (authorize, code exchange).

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::error::ConfigError;
use super::oauth2::OAuthClient;
use super::settings::Settings;
use crate::api::{ClusterConnection, ConnectedAccount, Connection, ConnectionKind};
use crate::config::Config;
use crate::store::{Grant, secret_ref};

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

/// An OAuth client for the Connection, with its client secret.
pub async fn oauth_client(
    client: &Client,
    config: &Config,
    conn: &Connection,
) -> Result<OAuthClient, ConfigError> {
    oauth_client_for(client, config, conn, None).await
}

/// An OAuth client for refreshing or revoking `grant`: its own endpoints and client id, whatever
/// the Connection says now, with the Connection's current client secret (so rotating the secret
/// under the same client id keeps working). A grant of another client gets no secret.
pub async fn oauth_client_for(
    client: &Client,
    config: &Config,
    conn: &Connection,
    grant: Option<&Grant>,
) -> Result<OAuthClient, ConfigError> {
    let current = settings(conn)?;
    let same_client = grant.is_none_or(|g| g.client_id == current.client_id);
    let settings = match grant {
        Some(g) => current.pinned_to(g),
        None => current,
    };
    let secret = match conn
        .spec
        .oauth2
        .as_ref()
        .and_then(|o| o.client_secret_ref.as_ref())
    {
        Some(r) if same_client => Some(
            secret_ref::read_text(client, &conn.namespace().unwrap_or_default(), &r.name, &r.key)
                .await
                .map_err(|e| ConfigError(e.to_string()))?,
        ),
        Some(_) => None,
        None => None,
    };
    OAuthClient::new(settings, secret, &redirect_uri(config, conn))
}

/// The callback URL to register at the provider for this Connection:
/// `<gateway>/oauth/callback/ns/<namespace>/<name>`, its own, so that a provider sends a user who
/// consented to this client back only to this Connection (RFC 9700 section 4.4 mix-up defence).
/// A Connection with `spec.oauth2.legacyRedirectUri` keeps the shared `<gateway>/oauth/callback`
/// of earlier releases.
pub fn redirect_uri(config: &Config, conn: &Connection) -> String {
    if legacy_callback(conn) {
        return config.redirect_uri();
    }
    if crate::api::is_cluster_view(conn) {
        return config.endpoint(&format!("oauth/callback/cluster/{}", conn.name_any()));
    }
    config.endpoint(&format!(
        "oauth/callback/ns/{}/{}",
        conn.namespace().unwrap_or_default(),
        conn.name_any()
    ))
}

/// The Connection an account refers to, read from the API server: a namespaced Connection in the
/// account's namespace, or the Connection view of a ClusterConnection (Secrets in
/// `operator_ns`). `None` when it does not exist or does not admit the account's namespace.
pub async fn of_account(
    client: &Client,
    operator_ns: &str,
    account: &ConnectedAccount,
) -> Result<Option<Connection>, kube::Error> {
    let ns = account.namespace().unwrap_or_default();
    let name = &account.spec.connection_ref.name;
    match account.spec.connection_ref.kind {
        ConnectionKind::Connection => Ok(Api::<Connection>::namespaced(client.clone(), &ns)
            .get_opt(name)
            .await?
            .map(crate::api::tenant_connection)),
        ConnectionKind::ClusterConnection => {
            let Some(cc) = Api::<ClusterConnection>::all(client.clone())
                .get_opt(name)
                .await?
            else {
                return Ok(None);
            };
            if cc.spec.namespace_selector.is_some() {
                let labels = Api::<Namespace>::all(client.clone())
                    .get_metadata_opt(&ns)
                    .await?
                    .and_then(|n| n.metadata.labels)
                    .unwrap_or_default();
                if !cc.admits(&labels) {
                    return Ok(None);
                }
            }
            Ok(Some(cc.as_connection(operator_ns)))
        }
    }
}

/// Whether the Connection controller has validated the Connection as it is now: Ready and its
/// status describing the current generation. The gateway sends a user, a code or a credential
/// only then, so that an edit (a new `tokenUrl`) takes effect only after it passed the policies.
pub fn ready_now(conn: &Connection) -> bool {
    let Some(status) = conn.status.as_ref() else {
        return false;
    };
    status.observed_generation == conn.metadata.generation
        && crate::api::conditions::find(&status.conditions, crate::api::conditions::READY)
            .is_some_and(|c| c.status == "True")
}

/// The Connection opted in to the shared callback of earlier releases.
pub fn legacy_callback(conn: &Connection) -> bool {
    conn.spec
        .oauth2
        .as_ref()
        .and_then(|o| o.legacy_redirect_uri)
        .unwrap_or(false)
}
