//! Stage 2: the operator's copy brought up to date before anything is decided or published.
//!
//! In order: a refreshed record that an API outage held in memory is written first; the
//! finalizer goes on once a copy exists; housekeeping (expired verifications, `credentialsRef`,
//! grant pinning, superseded grants); then a refresh when one is due, decided on a consistent
//! read because a refresh token may be spent only once. Returns the new record; nothing is
//! mutated in place.

use std::sync::Arc;

use kube::ResourceExt;

use super::super::decide::{self, ConnectionView, Source};
use super::super::persist::persist;
use super::super::{Context, Error, grants, refresh};
use super::observe::Observed;
use crate::api::{ConnectedAccount, Connection, Reason};
use crate::store::agent_secret::Ownership;
use crate::store::operator_copy::Versioned;
use crate::store::{FlowError, Record, finalizer};

/// The record after renewal.
pub struct Renewed {
    pub record: Versioned,
    /// A refresh was due, so time passed waiting for the provider.
    pub waited: bool,
}

/// Runs the renewal steps on `observed` and returns the record the next stages work from.
pub async fn renew(
    account: &Arc<ConnectedAccount>,
    observed: &Observed,
    ctx: &Arc<Context>,
) -> Result<Renewed, Error> {
    let uid = &observed.uid;
    let mut record = flush_pending(account, observed.record.clone(), ctx).await?;
    if (record.resource_version.is_some() || observed.ownership == Ownership::Ours)
        && !finalizer::present(account)
    {
        finalizer::ensure(&super::accounts_api(account, ctx), account)
            .await
            .map_err(Error::Finalizer)?;
    }
    if let Some((conn, view)) = observed.usable() {
        record = housekeeping(account, conn, view, record, ctx, observed).await?;
    }
    // An open attempt that nobody here waits for decides a link and a Warning: make sure it is not
    // our own settled attempt seen through a cache that lags behind the outcome's write.
    let ours = |r: &Versioned| {
        ctx.in_flight(uid)
            .is_some_and(|f| f.attempt == r.record.attempt.as_ref().map(|a| a.id.clone()))
    };
    if record.record.attempt.is_some() && !ours(&record) {
        record = ctx.credentials.get(uid).await.map_err(Error::ReadRecord)?;
    }
    let due = |v: &Versioned| {
        let failure = ctx.failure(uid);
        decide::refresh_due(&observed.facts(account, &v.record, failure.as_ref(), ctx, observed.now))
    };
    let Some((conn, view)) = observed.usable().filter(|_| due(&record)) else {
        return Ok(Renewed {
            record,
            waited: false,
        });
    };
    // Decided on a consistent read, not on the watch cache, which can lag behind our own last write.
    record = ctx.credentials.get(uid).await.map_err(Error::ReadRecord)?;
    if due(&record) {
        record = refresh::refresh(account, conn, view, record, ctx).await?;
    }
    Ok(Renewed { record, waited: true })
}

/// Record upkeep that needs no user: drops a held-back credential the platform never confirmed,
/// copies a changed `spec.credentialsRef` Secret into the record, pins and revokes grants.
async fn housekeeping(
    account: &ConnectedAccount,
    conn: &Connection,
    view: &ConnectionView,
    mut versioned: Versioned,
    ctx: &Context,
    observed: &Observed,
) -> Result<Versioned, Error> {
    let now = observed.now;
    if versioned
        .record
        .pending
        .as_ref()
        .is_some_and(|p| p.expires_at <= now)
    {
        versioned = ctx
            .credentials
            .get(&observed.uid)
            .await
            .map_err(Error::ReadRecord)?;
        if let Some(p) = versioned.record.pending.as_ref().filter(|p| p.expires_at <= now) {
            tracing::info!(expired = %p.expires_at, "discarding a credential the platform did not verify in time");
            let mut record = versioned.record.clone();
            record.pending = None;
            record.flow_error = Some(FlowError {
                reason: Reason::VerificationFailed,
                message: "the platform did not confirm the user in time; the credential was discarded".into(),
                link: record.completed_link.clone().unwrap_or_default(),
            });
            versioned = persist(account, &versioned, record, ctx).await?;
        }
    }
    if view.source == Source::SecretRef {
        versioned = super::credentials_ref::sync(account, conn, versioned, ctx, now).await?;
    }
    let versioned = grants::pin(account, view, versioned, ctx).await?;
    grants::revoke_superseded(account, conn, versioned, ctx).await
}

/// Persists a refreshed record that could not be written earlier (API outage). A newer record in
/// the store (the user authorized again meanwhile) wins over it.
async fn flush_pending(
    account: &ConnectedAccount,
    cached: Versioned,
    ctx: &Context,
) -> Result<Versioned, Error> {
    let uid = account.uid().unwrap_or_default();
    let Some(pending) = ctx.pending(&uid) else {
        return Ok(cached);
    };
    let fresh = ctx.credentials.get(&uid).await.map_err(Error::ReadRecord)?;
    let obtained = |v: &Record| v.tokens.as_ref().map(|t| t.obtained_at);
    if obtained(&fresh.record) > obtained(&pending) {
        ctx.clear_pending(&uid);
        return Ok(fresh);
    }
    // Only what a refresh outcome changes: anything the gateway wrote meanwhile stays.
    let mut merged = fresh.record.clone();
    merged.tokens = pending.tokens;
    merged.rejected = pending.rejected;
    merged.attempt = pending.attempt;
    let written = persist(account, &fresh, merged, ctx).await?;
    ctx.clear_pending(&uid);
    tracing::info!("persisted a refreshed token held in memory during an API outage");
    Ok(written)
}
