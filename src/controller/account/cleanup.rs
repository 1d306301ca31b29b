//! Removing an account's credentials: on `spec.disconnected`, and when the account is deleted
//! (its finalizer holds the deletion until this is done).
//!
//! Revocation goes only to the endpoint the grant was pinned to, and is best effort: the local
//! copies are deleted whatever the provider answers.

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use k8s_openapi::api::core::v1::Secret;

use super::super::{Context, Error, grants};
use crate::api::{ConnectedAccount, Connection, GuardedAccount};
use crate::store::agent_secret::{self, Ownership};
use crate::store::finalizer;

/// Revokes at the provider (best effort) and deletes every stored copy.
pub async fn discard(
    account: &ConnectedAccount,
    conn: Option<&Connection>,
    ctx: &Context,
    ownership: Ownership,
) -> Result<(), Error> {
    let uid = account.uid().unwrap_or_default();
    let versioned = ctx.credentials.get(&uid).await.map_err(Error::ReadRecord)?;
    let revocable = conn.filter(|c| c.spec.oauth2.is_some());
    if let (Some(tokens), Some(conn)) = (&versioned.record.tokens, revocable) {
        // Only where the grant was obtained. A credential without a pinned grant (a form's API key,
        // a machine token) is never sent to whatever revocation endpoint the Connection names now.
        if let Some(grant) = &versioned.record.grant {
            grants::revoke(account, conn, tokens, grant, ctx).await;
        }
    }
    if ownership == Ownership::Ours {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &account.namespace().unwrap_or_default());
        agent_secret::delete(&api, &super::secret_name(account))
            .await
            .map_err(Error::DeleteSecret)?;
    }
    if versioned.resource_version.is_some() {
        ctx.credentials.delete(&uid).await.map_err(Error::DeleteRecord)?;
    }
    ctx.clear_failure(&uid);
    Ok(())
}

/// A deleted account (with the finalizer): revoke, remove every copy, forget its metrics.
pub async fn deleted(account: &ConnectedAccount, ctx: &Context) -> Result<(), Error> {
    let conn = super::super::resolve::connection(account, ctx)
        .ok()
        .map(|(c, _)| c);
    let ns = account.namespace().unwrap_or_default();
    let secret = ctx
        .agent_secrets
        .get(&ObjectRef::new(&super::secret_name(account)).within(&ns));
    let ownership = agent_secret::ownership(secret.as_deref(), account);
    discard(account, conn.as_deref(), ctx, ownership).await?;
    ctx.metrics
        .account_deleted(&account.uid().unwrap_or_default(), &ns, &account.name_any());
    tracing::info!("credentials removed for deleted account");
    Ok(())
}

/// Deleting an account that no longer matches the schema: its operator copy is found by UID and
/// its agent Secret goes with it by owner reference; revocation would need the spec, so it is
/// skipped.
pub async fn invalid(
    guard: &GuardedAccount,
    invalid: &kube::core::error_boundary::InvalidObject,
    ctx: &Context,
) -> Result<Action, Error> {
    if finalizer::present_in(&invalid.metadata) {
        let uid = guard.meta().uid.clone().unwrap_or_default();
        ctx.credentials.delete(&uid).await.map_err(Error::DeleteRecord)?;
        let api: Api<GuardedAccount> =
            Api::namespaced(ctx.client.clone(), &guard.namespace().unwrap_or_default());
        finalizer::remove(&api, &invalid.metadata)
            .await
            .map_err(Error::Finalizer)?;
        tracing::info!("removed the copy of a deleted account that does not match the schema");
    }
    Ok(Action::await_change())
}
