//! Reconciles one ConnectedAccount as a pipeline:
//! resolve (Connection, record, Secret, link from caches) -> refresh when due (persist first) ->
//! decide (pure) -> apply (credentials, agent Secret, link) -> status (only when it changed).
//!
//! Guarantees: a converged account costs no API writes; the operator's copy is written before the
//! agent Secret, so a crash between the two loses nothing (the next reconcile republishes); a
//! Secret the operator did not create for this account is never written.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::decide::{self, ConnectionView, LinkPlan, Observed, Plan, RefreshFailure, Source};
use super::persist::persist;
use super::{Context, Error};
use crate::api::conditions;
use crate::api::{AccountState, ConnectedAccount, ConnectedAccountStatus, Connection};
use crate::signer::{self, LinkClaims};
use crate::store::agent_secret::{self, Ownership};
use crate::store::operator_copy::{CredentialStore, StoreError, Versioned};
use crate::store::{FIELD_MANAGER, Record, finalizer};

/// [`reconcile`] with its duration and outcome recorded in metrics.
pub async fn reconcile_measured(
    guard: Arc<super::GuardedAccount>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let account = match &guard.0 {
        Ok(a) => Arc::new(a.clone()),
        Err(invalid) if invalid.metadata.deletion_timestamp.is_some() => {
            // Deleting an account that no longer matches the schema: its operator copy is found
            // by UID and its agent Secret goes with it by owner reference; revocation would need
            // the spec, so it is skipped.
            if finalizer::present_in(&invalid.metadata) {
                ctx.credentials.delete(&guard.uid().unwrap_or_default()).await?;
                let api: Api<super::GuardedAccount> =
                    Api::namespaced(ctx.client.clone(), &guard.namespace().unwrap_or_default());
                finalizer::remove(&api, &invalid.metadata).await?;
                tracing::info!(account = %guard.name_any(), namespace = ?guard.namespace(), "removed the copy of a deleted account that does not match the schema");
            }
            return Ok(Action::await_change());
        }
        Err(invalid) => {
            // Left alone until someone fixes it; the other accounts carry on.
            tracing::warn!(account = %guard.name_any(), namespace = ?guard.namespace(), error = %invalid, "ignoring a ConnectedAccount that does not match the schema");
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
            cleanup(&account, &ctx).await?;
            finalizer::remove(&accounts_api(&account, &ctx), account.meta()).await?;
        }
        return Ok(Action::await_change());
    }
    apply(&account, &ctx).await
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

/// The account's record from the cache of operator copies.
fn cached_record(uid: &str, ctx: &Context) -> Result<Versioned, Error> {
    let key = ObjectRef::new(&CredentialStore::name_for(uid)).within(&ctx.config.namespace);
    match ctx.records.get(&key) {
        Some(s) => Ok(CredentialStore::parse(&s)?),
        None => Ok(Versioned::default()),
    }
}

/// The status link, if it is one this operator signed for this very account.
fn current_link(account: &ConnectedAccount, ctx: &Context) -> Option<LinkClaims> {
    let url = account.status.as_ref()?.authorization_link.as_deref()?;
    let claims = ctx.signer.read_link(signer::token_of(url)?)?;
    let same = Some(&claims.uid) == account.metadata.uid.as_ref()
        && claims.name == account.name_any()
        && Some(&claims.ns) == account.metadata.namespace.as_ref();
    same.then_some(claims)
}

async fn apply(account: &Arc<ConnectedAccount>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let uid = account.uid().unwrap_or_default();
    let ns = account.namespace().unwrap_or_default();
    let resolved = super::resolve::connection(account, ctx);
    let mut versioned = cached_record(&uid, ctx)?;
    flush_pending(account, &mut versioned, ctx).await?;
    let name = secret_name(account);
    let cached_secret = ctx.agent_secrets.get(&ObjectRef::new(&name).within(&ns));
    let mut ownership = agent_secret::ownership(cached_secret.as_deref(), account);
    let link = current_link(account, ctx);
    let mut now = Timestamp::now();
    if (versioned.resource_version.is_some() || ownership == Ownership::Ours) && !finalizer::present(account)
    {
        finalizer::ensure(&accounts_api(account, ctx), account).await?;
    }

    let provider = resolved.as_ref().ok().and_then(|(c, _)| c.spec.provider.clone());
    let observe = |record: &Record,
                   ownership: Ownership,
                   failure: Option<RefreshFailure>,
                   now: Timestamp|
     -> (Plan, bool) {
        let view = resolved.as_ref().map(|(_, v)| v);
        let current = record.tokens.as_ref().is_some_and(|t| {
            agent_secret::holds(
                cached_secret.as_deref(),
                &agent_secret::render(t, provider.as_deref()),
            )
        });
        let o = Observed {
            account,
            connection: view,
            record,
            link: link.as_ref(),
            secret: ownership,
            secret_current: current,
            refresh_failure: failure.as_ref(),
            attempt: super::attempt::attempt_state(record, ctx.in_flight(&uid).as_ref(), now),
            now,
        };
        (decide::decide(&o), decide::refresh_due(&o))
    };

    if let Ok((conn, view)) = &resolved {
        housekeeping(account, conn, view, &mut versioned, ctx, now).await?;
    }
    // An open attempt that nobody here waits for decides a link and a Warning: make sure it is not
    // our own settled attempt seen through a cache that lags behind the outcome's write.
    let own =
        |f: &super::attempt::InFlight| f.attempt == versioned.record.attempt.as_ref().map(|a| a.id.clone());
    if versioned.record.attempt.is_some() && !ctx.in_flight(&uid).is_some_and(|f| own(&f)) {
        versioned = ctx.credentials.get(&uid).await?;
    }
    let (_, due) = observe(&versioned.record, ownership, ctx.failure(&uid), now);
    if let (true, Ok((conn, view))) = (due, &resolved) {
        // A refresh token may be spent once: decide on a consistent read, not on the watch cache,
        // which can lag behind our own last write.
        versioned = ctx.credentials.get(&uid).await?;
        if observe(&versioned.record, ownership, ctx.failure(&uid), now).1 {
            super::refresh::refresh(account, conn, view, &mut versioned, ctx).await?;
        }
    }
    if due {
        // A refresh that waited for the provider took time: status describes the moment it is written.
        now = Timestamp::now();
    }
    let (mut plan, _) = observe(&versioned.record, ownership, ctx.failure(&uid), now);
    // Before a user is handed a link, make sure the Secret name is free: a foreign Secret found only
    // after the user authorized would tell them "connected" and then fail.
    if ownership == Ownership::Missing && matches!(plan.link, LinkPlan::Issue { .. }) {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        if let Some(existing) = api.get_opt(&name).await? {
            ownership = agent_secret::ownership(Some(&existing), account);
            plan = observe(&versioned.record, ownership, ctx.failure(&uid), now).0;
        }
    }

    if plan.remove_credentials {
        let conn = resolved.as_ref().ok().map(|(c, _)| c.as_ref());
        discard_credentials(account, conn, ctx, ownership).await?;
    }
    if plan.unpublish {
        // The operator's copy is gone (deleted by hand): the agent Secret cannot be renewed or
        // revoked any more, so it goes too, and status and Secret agree.
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        agent_secret::delete(&api, &name).await?;
        tracing::warn!(account = %account.name_any(), namespace = %ns, "the operator's copy is missing; removed the agent Secret");
    }
    if let (true, Some(tokens)) = (plan.publish, &versioned.record.tokens) {
        let data = agent_secret::render(tokens, provider.as_deref());
        if !publish(account, &name, &data, ownership, cached_secret.as_deref(), ctx).await? {
            ownership = Ownership::Foreign;
            plan = observe(&versioned.record, ownership, ctx.failure(&uid), now).0;
        }
    }

    let old = account.status.clone().unwrap_or_default();
    let (link_url, link_expires) = match &plan.link {
        LinkPlan::Keep => (
            old.authorization_link.clone(),
            old.authorization_link_expires_at.clone(),
        ),
        LinkPlan::Issue { expires_at } => {
            let claims = LinkClaims {
                ns: ns.clone(),
                name: account.name_any(),
                uid: uid.clone(),
                nonce: signer::random_id(),
                exp: expires_at.as_second(),
            };
            let url = ctx
                .config
                .endpoint(&format!("connect/{}", ctx.signer.issue_link(&claims)));
            (Some(url), Some(Time(*expires_at)))
        }
        LinkPlan::Clear => (None, None),
    };
    let tokens = versioned
        .record
        .tokens
        .as_ref()
        .filter(|_| !versioned.record.rejected && plan.state != AccountState::Disconnected);
    let annotation = account
        .annotations()
        .get(crate::api::REAUTHORIZE_ANNOTATION)
        .cloned();
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
    let status = ConnectedAccountStatus {
        state: Some(plan.state),
        authorization_link: link_url,
        authorization_link_expires_at: link_expires,
        secret_name: Some(name),
        expires_at: tokens.and_then(|t| t.expires_at).map(Time),
        next_refresh_at: plan.next_refresh_at.filter(|_| tokens.is_some()).map(Time),
        last_refreshed_at: tokens.map(|t| Time(t.obtained_at)),
        granted_scopes: tokens.map(|t| t.scopes.clone()).unwrap_or_default(),
        reauthorize_request: if matches!(plan.link, LinkPlan::Issue { .. }) {
            annotation
        } else {
            old.reauthorize_request.clone()
        },
        conditions: conds,
        observed_generation: account.metadata.generation,
    };
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
    tracing::debug!(account = %account.name_any(), namespace = %ns, state = ?plan.state, changed, stale, "reconciled");
    if changed {
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
        match api
            .patch_status(
                &account.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(written) => ctx.wrote_status(&uid, account.resource_version(), written.resource_version()),
            Err(kube::Error::Api(e)) if e.code == 409 => return Err(Error::Conflict),
            Err(e) => return Err(e.into()),
        }
        announce(account, &old, &status, &plan, ctx).await;
    }
    Ok(plan
        .requeue_after
        .map(Action::requeue)
        .unwrap_or_else(Action::await_change))
}

/// Record upkeep that needs no user: drops a held-back credential the platform never confirmed,
/// and copies a changed `spec.credentialsRef` Secret into the record.
async fn housekeeping(
    account: &ConnectedAccount,
    conn: &Connection,
    view: &ConnectionView,
    versioned: &mut Versioned,
    ctx: &Context,
    now: Timestamp,
) -> Result<(), Error> {
    if versioned
        .record
        .pending
        .as_ref()
        .is_some_and(|p| p.expires_at <= now)
    {
        *versioned = ctx.credentials.get(&account.uid().unwrap_or_default()).await?;
        if let Some(p) = versioned.record.pending.as_ref().filter(|p| p.expires_at <= now) {
            tracing::info!(account = %account.name_any(), expired = %p.expires_at, "discarding a credential the platform did not verify in time");
            let mut record = versioned.record.clone();
            record.pending = None;
            record.flow_error = Some(crate::store::FlowError {
                reason: "VerificationFailed".into(),
                message: "the platform did not confirm the user in time; the credential was discarded".into(),
                link: record.completed_link.clone().unwrap_or_default(),
            });
            persist(account, versioned, record, ctx).await?;
        }
    }
    if view.source == Source::SecretRef {
        sync_credentials_ref(account, conn, versioned, ctx, now).await?;
    }
    super::grants::pin(account, view, versioned, ctx).await?;
    super::grants::revoke_superseded(account, conn, versioned, ctx).await
}

/// Copies the credential from the account's `spec.credentialsRef` Secret when it changed. A missing
/// or invalid Secret is reported like a failed renewal; the last good copy stays published.
async fn sync_credentials_ref(
    account: &ConnectedAccount,
    conn: &Connection,
    versioned: &mut Versioned,
    ctx: &Context,
    now: Timestamp,
) -> Result<(), Error> {
    let uid = account.uid().unwrap_or_default();
    let Some(r) = &account.spec.credentials_ref else {
        return Ok(());
    };
    let ns = account.namespace().unwrap_or_default();
    let fail = |message: String| {
        ctx.note_failure(&uid, message, now, |_| std::time::Duration::from_secs(30));
        Ok(())
    };
    let secret = match crate::store::secret_ref::read(&ctx.client, &ns, &r.name).await {
        Ok(s) => s,
        Err(e) => return fail(format!("spec.credentialsRef: {e}")),
    };
    if secret.metadata.resource_version == versioned.record.source_version
        && versioned.record.tokens.is_some()
    {
        return Ok(());
    }
    let form = match crate::auth::form::Form::of(conn) {
        Ok(f) => f,
        Err(e) => return fail(e.0),
    };
    let values = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| Some((k, String::from_utf8(v.0).ok()?)))
        .collect();
    let clean = match form.validate(&values) {
        Ok(c) => c,
        Err(errors) => {
            let fields: Vec<_> = errors.keys().map(String::as_str).collect();
            return fail(format!(
                "Secret {} named in spec.credentialsRef has missing or invalid keys: {}",
                r.name,
                fields.join(", ")
            ));
        }
    };
    *versioned = ctx.credentials.get(&uid).await?;
    let mut record = versioned.record.clone();
    record.tokens = Some(form.credential(clean, now));
    record.source_version = secret.metadata.resource_version.clone();
    record.rejected = false;
    persist(account, versioned, record, ctx).await?;
    ctx.clear_failure(&uid);
    ctx.event(
        account,
        EventType::Normal,
        "CredentialsCopied",
        "Refresh",
        format!("credential taken from Secret {}", r.name),
    )
    .await;
    Ok(())
}

/// Persists a refreshed record that could not be written earlier (API outage). A newer record in
/// the store (the user authorized again meanwhile) wins over it.
async fn flush_pending(
    account: &ConnectedAccount,
    versioned: &mut Versioned,
    ctx: &Context,
) -> Result<(), Error> {
    let uid = account.uid().unwrap_or_default();
    let Some(pending) = ctx.pending(&uid) else {
        return Ok(());
    };
    let fresh = ctx.credentials.get(&uid).await?;
    let obtained = |v: &Record| v.tokens.as_ref().map(|t| t.obtained_at);
    if obtained(&fresh.record) > obtained(&pending) {
        ctx.clear_pending(&uid);
        *versioned = fresh;
        return Ok(());
    }
    // Only what a refresh outcome changes: anything the gateway wrote meanwhile stays.
    let mut merged = fresh.record.clone();
    merged.tokens = pending.tokens;
    merged.rejected = pending.rejected;
    merged.attempt = pending.attempt;
    *versioned = fresh;
    persist(account, versioned, merged, ctx).await?;
    ctx.clear_pending(&uid);
    tracing::info!(account = %account.name_any(), "persisted a refreshed token held in memory during an API outage");
    Ok(())
}

/// Creates or updates the agent Secret. Returns `false` when the name belongs to someone else.
async fn publish(
    account: &ConnectedAccount,
    name: &str,
    data: &std::collections::BTreeMap<String, String>,
    ownership: Ownership,
    cached: Option<&Secret>,
    ctx: &Context,
) -> Result<bool, Error> {
    let ns = account.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    match ownership {
        Ownership::Foreign => Ok(false),
        Ownership::Ours => {
            agent_secret::apply(&api, account, name, data, cached).await?;
            Ok(true)
        }
        // Not in our cache: it may still exist unlabelled. Look before writing.
        Ownership::Missing => match api.get_opt(name).await? {
            Some(existing) if agent_secret::ownership(Some(&existing), account) == Ownership::Foreign => {
                Ok(false)
            }
            existing => {
                agent_secret::apply(&api, account, name, data, existing.as_ref()).await?;
                Ok(true)
            }
        },
    }
}

/// Revokes at the provider (best effort) and deletes every stored copy.
async fn discard_credentials(
    account: &ConnectedAccount,
    conn: Option<&Connection>,
    ctx: &Context,
    ownership: Ownership,
) -> Result<(), Error> {
    let uid = account.uid().unwrap_or_default();
    let versioned = ctx.credentials.get(&uid).await?;
    let revocable = conn.filter(|c| c.spec.oauth2.is_some());
    if let (Some(tokens), Some(conn)) = (&versioned.record.tokens, revocable) {
        // Only where the grant was obtained. A credential without a pinned grant (a form's API key,
        // a machine token) is never sent to whatever revocation endpoint the Connection names now.
        if let Some(grant) = &versioned.record.grant {
            super::grants::revoke(account, conn, tokens, grant, ctx).await;
        }
    }
    if ownership == Ownership::Ours {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &account.namespace().unwrap_or_default());
        agent_secret::delete(&api, &secret_name(account)).await?;
    }
    if versioned.resource_version.is_some() {
        ctx.credentials.delete(&uid).await?;
    }
    ctx.clear_failure(&uid);
    Ok(())
}

async fn cleanup(account: &ConnectedAccount, ctx: &Context) -> Result<Action, Error> {
    let conn = super::resolve::connection(account, ctx).ok().map(|(c, _)| c);
    let ns = account.namespace().unwrap_or_default();
    let secret = ctx
        .agent_secrets
        .get(&ObjectRef::new(&secret_name(account)).within(&ns));
    let ownership = agent_secret::ownership(secret.as_deref(), account);
    discard_credentials(account, conn.as_deref(), ctx, ownership).await?;
    ctx.metrics
        .account_deleted(&account.uid().unwrap_or_default(), &ns, &account.name_any());
    tracing::info!(account = %account.name_any(), namespace = %ns, "credentials removed for deleted account");
    Ok(Action::await_change())
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
    let stranded = ready_reason(new).as_deref() == Some("RefreshOutcomeUnknown");
    if stranded && ready_reason(old) != ready_reason(new) {
        ctx.metrics.refresh_outcome_unknown(
            &account.namespace().unwrap_or_default(),
            &account.spec.connection_ref.name,
        );
        if old.state == new.state {
            ctx.event(
                account,
                EventType::Warning,
                "RefreshOutcomeUnknown",
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
            .unwrap_or(("StateChanged", String::new()));
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
            "LinkIssued",
            "IssueLink",
            format!("new authorization link in status.authorizationLink, valid until {expires_at}"),
        )
        .await;
    }
}

/// Used by [`Context::event`].
pub(super) fn event(kind: EventType, reason: &str, action: &str, note: String) -> KubeEvent {
    KubeEvent {
        type_: kind,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Error::Conflict,
            StoreError::Corrupt => Error::CorruptRecord,
            StoreError::Api(e) => Error::Kube(e),
        }
    }
}
