//! Stage 5: status. [`build_status`] is pure (unit-tested); [`write`] applies it only when it
//! changed, and records the Events and metrics of the transition.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::json;

use super::super::decide::{self, LinkPlan, Plan};
use super::super::{Context, Error};
use super::observe::Observed;
use super::publish::Link;
use crate::api::conditions;
use crate::api::{AccountState, ConnectedAccount, ConnectedAccountStatus, Reason};
use crate::store::{FIELD_MANAGER, Record};

/// The status the account should show, from the plan, the renewed record and the link.
pub fn build_status(
    account: &ConnectedAccount,
    observed: &Observed,
    record: &Record,
    plan: &Plan,
    link: Link,
    now: Timestamp,
) -> ConnectedAccountStatus {
    let old = account.status.clone().unwrap_or_default();
    let tokens = record
        .tokens
        .as_ref()
        .filter(|_| !record.rejected && plan.state != AccountState::Disconnected);
    let mut conds = old.conditions.clone();
    for c in &plan.conditions {
        let new = conditions::condition(
            c.type_,
            c.ok,
            c.reason,
            c.message.clone(),
            account.metadata.generation,
        );
        conds = conditions::merge(&conds, new, now);
    }
    if tokens.is_none() {
        conds.retain(|c| c.type_ != decide::TOKEN_REFRESH);
    }
    let issuing = matches!(plan.link, LinkPlan::Issue { .. });
    ConnectedAccountStatus {
        state: Some(plan.state),
        authorization_link: link.url,
        authorization_link_expires_at: link.expires_at,
        secret_name: plan
            .delivery
            .writes_secret()
            .then(|| observed.secret_name.clone()),
        expires_at: tokens.and_then(|t| t.expires_at).map(Time),
        next_refresh_at: plan.next_refresh_at.filter(|_| tokens.is_some()).map(Time),
        last_refreshed_at: tokens.map(|t| Time(t.obtained_at)),
        granted_scopes: tokens.map(|t| t.scopes.clone()).unwrap_or_default(),
        provider_identity: tokens.and_then(|t| t.identity.clone()),
        reauthorize_request: if issuing {
            account
                .annotations()
                .get(crate::api::REAUTHORIZE_ANNOTATION)
                .cloned()
        } else {
            old.reauthorize_request.clone()
        },
        conditions: conds,
        observed_generation: account.metadata.generation,
    }
}

/// Applies `status` when it differs from the account's, then announces the transition.
pub async fn write(
    account: &ConnectedAccount,
    status: ConnectedAccountStatus,
    plan: &Plan,
    ctx: &Context,
) -> Result<(), Error> {
    let uid = account.uid().unwrap_or_default();
    let ns = account.namespace().unwrap_or_default();
    let old = account.status.clone().unwrap_or_default();
    ctx.metrics.account_state(
        &uid,
        &ns,
        &account.name_any(),
        &account.spec.connection_ref.name,
        plan.state,
        status.expires_at.as_ref().map(|t| t.0.as_second()),
    );
    // The cache still shows the account as it was before our own last status write: that write
    // is on its way, and its watch event reconciles again. Writing now would repeat it.
    let stale = ctx.stale_status(&uid, account.resource_version().as_deref());
    let changed = status != old && !stale;
    tracing::debug!(state = ?plan.state, changed, stale, "reconciled");
    if !changed {
        return Ok(());
    }
    let api: Api<ConnectedAccount> = Api::namespaced(ctx.client.clone(), &ns);
    // A new link is decided from the cache: the resourceVersion makes that write conditional on
    // the cache having been current, so a reconcile that ran on a stale copy (before our own
    // last write arrived) cannot replace a link the user already holds with another.
    let issuing = matches!(plan.link, LinkPlan::Issue { .. });
    let mut patch =
        json!({"apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount", "status": status});
    if let (true, Some(rv)) = (issuing, account.resource_version()) {
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    let written = api
        .patch_status(
            &account.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::PatchStatus)?;
    ctx.wrote_status(&uid, account.resource_version(), written.resource_version());
    announce(account, &old, &status, plan, ctx).await;
    Ok(())
}

/// Events for what changed, in words a platform engineer reads in `kubectl describe`.
async fn announce(
    account: &ConnectedAccount,
    old: &ConnectedAccountStatus,
    new: &ConnectedAccountStatus,
    plan: &Plan,
    ctx: &Context,
) {
    // A new account's first link is in its status and metrics only: at thousands of accounts an
    // Event each would double the writes of a burst and trail it for minutes.
    let first_link = old.state.is_none() && matches!(plan.link, LinkPlan::Issue { .. });
    if first_link {
        return;
    }
    let ready_reason = |s: &ConnectedAccountStatus| {
        conditions::find(&s.conditions, conditions::READY).map(|c| c.reason.clone())
    };
    let stranded = ready_reason(new).as_deref() == Some(Reason::RefreshOutcomeUnknown.as_str());
    if stranded && ready_reason(old) != ready_reason(new) {
        ctx.metrics.refresh_outcome_unknown(
            &account.namespace().unwrap_or_default(),
            &account.spec.connection_ref.name,
        );
        if old.state == new.state {
            ctx.event(
                account,
                EventType::Warning,
                Reason::RefreshOutcomeUnknown,
                "Refresh",
                "a refresh got no answer; its refresh token is not sent again and a new link waits for the user".into(),
            )
            .await;
        }
    }
    if old.state != new.state {
        let ready = plan.conditions.iter().find(|c| c.type_ == conditions::READY);
        let (reason, note) = ready
            .map(|c| (c.reason, c.message.clone()))
            .unwrap_or((Reason::StateChanged, String::new()));
        let warn = matches!(new.state, Some(AccountState::Error | AccountState::Expired));
        let kind = if warn {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let state = new
            .state
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        ctx.event(
            account,
            kind,
            reason,
            "Transition",
            format!("state {state}: {note}"),
        )
        .await;
    }
    if let (LinkPlan::Issue { expires_at }, true) =
        (&plan.link, new.authorization_link != old.authorization_link)
    {
        ctx.event(
            account,
            EventType::Normal,
            Reason::LinkIssued,
            "IssueLink",
            format!("new authorization link in status.authorizationLink, valid until {expires_at}"),
        )
        .await;
    }
}
