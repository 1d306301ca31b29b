//! Where a grant may go: pinning an existing credential to the endpoints it came from, and
//! revoking a grant only at its own pinned endpoint (see [`crate::store::Grant`]).

use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::Context;
use super::Error;
use super::decide::ConnectionView;
use super::persist::persist;
use crate::api::{ConnectedAccount, Connection, Reason};
use crate::auth::resolve as conn_auth;
use crate::store::operator_copy::Versioned;

/// A credential stored before grants were pinned gets the Connection's endpoints of today, once:
/// from then on an edit of the Connection cannot redirect its refresh token.
pub(super) async fn pin(
    account: &ConnectedAccount,
    view: &ConnectionView,
    versioned: Versioned,
    ctx: &Context,
) -> Result<Versioned, Error> {
    // Only OAuth 2.0 grants of earlier releases: a refresh token, no form fields. A form's API key
    // under a Connection switched to OAuth 2.0 is never pinned to (and so never sent to) its URLs.
    let unpinned = |v: &Versioned| {
        v.record.grant.is_none()
            && v.record
                .tokens
                .as_ref()
                .is_some_and(|t| t.refresh_token.is_some() && t.fields.is_empty() && t.header_value.is_none())
    };
    let Some(grant) = view.grant.as_ref().filter(|_| unpinned(&versioned)) else {
        return Ok(versioned);
    };
    let fresh = ctx
        .credentials
        .get(&account.uid().unwrap_or_default())
        .await
        .map_err(Error::ReadRecord)?;
    if !unpinned(&fresh) {
        return Ok(fresh);
    }
    let mut record = fresh.record.clone();
    record.grant = Some(grant.clone());
    let written = persist(account, &fresh, record, ctx).await?;
    tracing::info!("pinned the existing grant to the Connection's current endpoints");
    Ok(written)
}

/// Revokes a grant that a new authorization elsewhere replaced, at its own pinned endpoint only,
/// then forgets it (also when revocation fails: the provider's refusal is final, and a retry loop
/// against an endpoint that is gone would never end).
pub(super) async fn revoke_superseded(
    account: &ConnectedAccount,
    conn: &Connection,
    versioned: Versioned,
    ctx: &Context,
) -> Result<Versioned, Error> {
    let Some(old) = versioned.record.superseded.clone() else {
        return Ok(versioned);
    };
    revoke(account, conn, &old.tokens, &old.grant, ctx).await;
    let mut record = versioned.record.clone();
    record.superseded = None;
    persist(account, &versioned, record, ctx).await
}

/// Revokes `tokens` at the endpoint of `grant` (best effort), with an Event either way.
pub(super) async fn revoke(
    account: &ConnectedAccount,
    conn: &Connection,
    tokens: &crate::store::TokenSet,
    grant: &crate::store::Grant,
    ctx: &Context,
) {
    let outcome = match conn_auth::oauth_client_for(&ctx.client, &ctx.config, conn, Some(grant)).await {
        Ok(c) => c.revoke(&ctx.http, tokens).await,
        Err(e) => Err(e.0),
    };
    let host = grant
        .revocation_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    match outcome {
        Ok(true) => {
            ctx.event(
                account,
                EventType::Normal,
                Reason::Revoked,
                "Revoke",
                format!("token revoked at {host}, where it was obtained"),
            )
            .await
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "revocation failed; deleting local copies anyway");
            ctx.event(account, EventType::Warning, Reason::RevocationFailed, "Revoke", e)
                .await;
        }
    }
}
