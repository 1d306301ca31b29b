//! Reconciles one ConnectedAccount as a pipeline of typed stages, each in its own file:
//!
//! [`observe`] (an owned snapshot from the caches) -> [`renew`] (the operator's copy brought up to
//! date: outage flush, housekeeping, refresh; returns the new record) -> [`decide`](super::decide)
//! (pure, runs once) -> [`publish`] (agent Secret, removal, the link as an explicit step) ->
//! [`status`] (a pure `build_status`, then one server-side apply and the Events).
//!
//! Guarantees: a converged account costs no API writes; the operator's copy is written before the
//! agent Secret, and the Secret before status, so a crash between two steps loses nothing (the
//! next reconcile republishes); a Secret the operator did not create for this account is never
//! written.

mod cleanup;
mod credentials_ref;
mod observe;
mod publish;
mod renew;
mod status;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use super::{Context, Error, decide};
use crate::api::{ConnectedAccount, GuardedAccount, Reason};
use crate::store::finalizer;

/// [`reconcile`] with its duration and outcome recorded in metrics, inside a span that names
/// the account (so no log line below has to).
pub async fn reconcile_measured(guard: Arc<GuardedAccount>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!(
        "reconcile",
        account = %guard.name_any(),
        namespace = %guard.namespace().unwrap_or_default(),
    );
    measured(guard, ctx).instrument(span).await
}

async fn measured(guard: Arc<GuardedAccount>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let account = match &guard.0 {
        Ok(a) => Arc::new(a.clone()),
        Err(invalid) if invalid.metadata.deletion_timestamp.is_some() => {
            return cleanup::invalid(&guard, invalid, &ctx).await;
        }
        Err(invalid) => {
            // Left alone until someone fixes it; the other accounts carry on.
            tracing::warn!(error = %invalid, "ignoring a ConnectedAccount that does not match the schema");
            return Ok(Action::await_change());
        }
    };
    // One limit for the process, however many namespaces are watched.
    let Ok(_slot) = ctx.shared.reconciles.acquire().await else {
        return Ok(Action::await_change()); // shutting down
    };
    let result = reconcile(account, ctx.clone()).await;
    ctx.metrics.reconciled(
        "account",
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    result
}

/// Deleted accounts are cleaned up only when they carry the finalizer, that is when a credential
/// was ever stored for them (see [`crate::store::finalizer`]).
pub async fn reconcile(account: Arc<ConnectedAccount>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.wait_for_caches().await?;
    if account.meta().deletion_timestamp.is_some() {
        if finalizer::present(&account) {
            cleanup::deleted(&account, &ctx).await?;
            finalizer::remove(&accounts_api(&account, &ctx), account.meta())
                .await
                .map_err(Error::Finalizer)?;
        }
        return Ok(Action::await_change());
    }
    let observed = observe::observe(&account, &ctx).await?;
    let renewed = renew::renew(&account, &observed, &ctx).await?;
    // Renewal may have brought the first credential (credentialsRef, a re-read): the Secret name
    // is checked before it is published.
    let observed = observed
        .confirm_secret(&account, &renewed.record.record, &ctx)
        .await?;
    // A refresh that waited for the provider took time: the plan and status describe the moment
    // they are written.
    let now = if renewed.waited {
        Timestamp::now()
    } else {
        observed.now
    };
    let failure = ctx.failure(&observed.uid);
    let plan = decide::decide(&observed.facts(&account, &renewed.record.record, failure.as_ref(), &ctx, now));
    let link = publish::publish(&account, &observed, &renewed.record, &plan, &ctx).await?;
    let built = status::build_status(&account, &observed, &renewed.record.record, &plan, link, now);
    status::write(&account, built, &plan, &ctx).await?;
    Ok(plan
        .requeue_after
        .map(Action::requeue)
        .unwrap_or_else(Action::await_change))
}

fn accounts_api(account: &ConnectedAccount, ctx: &Context) -> Api<ConnectedAccount> {
    Api::namespaced(ctx.client.clone(), &account.namespace().unwrap_or_default())
}

/// The name of the agent-facing Secret.
pub fn secret_name(account: &ConnectedAccount) -> String {
    account
        .spec
        .secret_name
        .clone()
        .unwrap_or_else(|| format!("{}-credentials", account.name_any()))
}

/// Used by [`Context::event`].
pub(super) fn event(kind: EventType, reason: Reason, action: &str, note: String) -> KubeEvent {
    KubeEvent {
        type_: kind,
        reason: reason.as_str().to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    }
}
