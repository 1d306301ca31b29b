//! Getting a fresh credential without a user, per auth method: OAuth 2.0 refresh, the client
//! credentials grant, or minting (and optionally exchanging) a JWT. Errors use the OAuth
//! classification so the controller treats every method alike: rejected, misconfigured, or
//! transient (retried with backoff).

use jiff::Timestamp;
use kube::ResourceExt;

use super::Context;
use crate::api::{AuthType, ConnectedAccount, Connection, SecretKeyRef};
use crate::auth::jwt::{self, JwtError, Template};
use crate::auth::oauth2::TokenEndpointError;
use crate::auth::resolve as conn_auth;
use crate::store::{Grant, TokenSet};

/// A new credential for `account`. `current` is the credential to renew, if any; OAuth 2.0 needs it,
/// and `grant`, where it was obtained.
/// `Ok(None)`: this method has nothing to renew on its own (hosted forms). `refresh_timeout`
/// bounds an OAuth 2.0 refresh from sending to the end of the answer.
pub async fn obtain(
    ctx: &Context,
    conn: &Connection,
    account: &ConnectedAccount,
    current: Option<&TokenSet>,
    grant: Option<&Grant>,
    now: Timestamp,
    refresh_timeout: std::time::Duration,
) -> Result<Option<TokenSet>, TokenEndpointError> {
    match (conn.spec.auth_type, current) {
        // Refreshed only where it was obtained, with the client it was issued to.
        (AuthType::OAuth2, Some(current)) => {
            let client = conn_auth::oauth_client_for(&ctx.client, &ctx.config, conn, grant)
                .await
                .map_err(|e| misconfigured(e.0))?;
            client
                .refresh(&ctx.http, current, now, refresh_timeout)
                .await
                .map(Some)
        }
        (AuthType::ClientCredentials, _) => {
            let client = conn_auth::oauth_client(&ctx.client, &ctx.config, conn)
                .await
                .map_err(|e| misconfigured(e.0))?;
            // Only a user can replace a rejected user grant; a machine credential is retried.
            match client.client_credentials(&ctx.http, now).await {
                Err(TokenEndpointError::Rejected { code, description }) => {
                    Err(TokenEndpointError::ClientRejected { code, description })
                }
                other => other.map(Some),
            }
        }
        (AuthType::CustomJWT, _) => mint(ctx, conn, account, now).await.map(Some),
        _ => Ok(None),
    }
}

async fn mint(
    ctx: &Context,
    conn: &Connection,
    account: &ConnectedAccount,
    now: Timestamp,
) -> Result<TokenSet, TokenEndpointError> {
    let settings = conn
        .spec
        .custom_jwt
        .as_ref()
        .ok_or_else(|| misconfigured("spec.customJWT is missing".into()))?;
    let key = signing_key(ctx, conn, &settings.signing_key_ref).await?;
    let (name, ns) = (account.name_any(), account.namespace().unwrap_or_default());
    let t = Template {
        identifier: &account.spec.identifier,
        name: &name,
        namespace: &ns,
    };
    jwt::obtain(&ctx.http, settings, &key, &t, now)
        .await
        .map_err(|e| match e {
            JwtError::Config(m) => misconfigured(m),
            JwtError::Rejected {
                status,
                code,
                description,
            } => TokenEndpointError::ClientRejected {
                code: code.unwrap_or_else(|| format!("HTTP {status}")),
                description,
            },
            JwtError::Transient {
                message,
                retry_after: Some(retry_after),
            } => TokenEndpointError::RetryAfter { message, retry_after },
            JwtError::Transient {
                message,
                retry_after: None,
            } => TokenEndpointError::transient(message),
        })
}

/// The signing key, byte for byte (an HS256 secret must not be trimmed), from an opted-in Secret.
pub async fn signing_key(
    ctx: &Context,
    conn: &Connection,
    r: &SecretKeyRef,
) -> Result<Vec<u8>, TokenEndpointError> {
    crate::store::secret_ref::read_key(
        &ctx.client,
        &conn.namespace().unwrap_or_default(),
        &r.name,
        &r.key,
    )
    .await
    .map_err(|e| {
        if e.transient() {
            TokenEndpointError::transient(e.to_string())
        } else {
            misconfigured(e.to_string())
        }
    })
}

/// A configuration problem: the Connection or a Secret it names must be fixed.
pub fn misconfigured(message: String) -> TokenEndpointError {
    TokenEndpointError::Misconfigured(message)
}
