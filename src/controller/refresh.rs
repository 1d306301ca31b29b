//! Renewing a credential so that a refresh token is spent at most once.
//!
//! A refresh is an intent first: before a refresh token leaves the operator, the operator's copy
//! records an attempt (id, start, hash of the token). The outcome replaces the attempt in one more
//! write. An attempt found without an outcome (after a restart, a failover, or a timeout) is
//! *ambiguous*: the provider may have rotated the token and the answer is lost. What follows
//! depends on the provider's rotation ([`Rotation`]): a strict provider is never sent that token
//! again (the account keeps its access token until expiry and gets a link), a grace provider
//! gets it once more inside its window, a non-rotating one any number of times (so no intent is
//! written for it at all).
//!
//! Guarantees: the reconcile waits for an answer at most `spec.refresh.timeout` and never past the
//! access token's expiry, so status turns when it should; for a strict provider the answer is
//! still read afterwards (up to [`LATE_ANSWER_LIMIT`]) and persisted when it comes.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use tracing::Instrument;

use super::attempt::{InFlight, Rotation};
use super::decide::ConnectionView;
use super::persist::persist;
use super::{Context, Error, schedule};
use crate::api::GuardedAccount;
use crate::api::{AuthType, ConnectedAccount, Connection, Reason};
use crate::auth::oauth2::{Delivery, TokenEndpointError};
use crate::metrics::RefreshResult;
use crate::store::operator_copy::{StoreError, Versioned};
use crate::store::{Record, RefreshAttempt, TokenSet, token_sha256};

/// Longest a strict provider's answer is read after the reconcile stopped waiting for it.
pub const LATE_ANSWER_LIMIT: Duration = Duration::from_secs(600);

/// Renews the credential and persists the outcome in the operator's copy before anything is
/// published. Returns early, leaving the call in the background, when the timeout or the access
/// token's expiry comes first.
pub(super) async fn refresh(
    account: &Arc<ConnectedAccount>,
    conn: &Arc<Connection>,
    view: &ConnectionView,
    mut versioned: Versioned,
    ctx: &Arc<Context>,
) -> Result<Versioned, Error> {
    // One of the `--refresh-concurrency` slots, taken before the intent and held while this
    // reconcile waits: a refresh queued for a slot is not yet sent, so its clock has not started.
    // A late answer is read outside the slots.
    let Ok(_slot) = ctx.shared.token_calls.clone().acquire_owned().await else {
        return Ok(versioned); // shutting down
    };
    let now = Timestamp::now();
    let uid = account.uid().unwrap_or_default();
    let current = versioned
        .record
        .tokens
        .clone()
        .filter(|_| !versioned.record.rejected);
    let spends = match (conn.spec.auth_type, &current) {
        (AuthType::OAuth2, Some(t)) => t.refresh_token.clone(),
        _ => None,
    };
    let attempt = match (&spends, view.rotation) {
        (Some(token), Rotation::Strict | Rotation::Grace(_)) => {
            let replay = versioned
                .record
                .attempt
                .as_ref()
                .is_some_and(|a| a.token_sha256 == token_sha256(token));
            let attempt = RefreshAttempt::new(token, now, replay);
            let mut record = versioned.record.clone();
            record.attempt = Some(attempt.clone());
            // The intent, before the token leaves: one write, conditional on the version read.
            versioned = persist(account, &versioned, record, ctx).await?;
            if replay {
                tracing::info!(
                    "replaying a refresh token whose outcome is unknown, inside the provider's grace window"
                );
            }
            Some(attempt)
        }
        _ => None,
    };
    // A strict provider's answer is worth reading for as long as it may come.
    let strict = attempt.is_some() && view.rotation == Rotation::Strict;
    let timeout = std::time::Duration::try_from(view.refresh_timeout).unwrap_or(Duration::from_secs(60));
    let request_timeout = if strict { LATE_ANSWER_LIMIT } else { timeout };
    // Spawned tasks keep the reconcile's span, so their log lines still name the account.
    let mut call = tokio::spawn({
        let (ctx, conn, account) = (ctx.clone(), conn.clone(), account.clone());
        let (current, grant) = (current.clone(), versioned.record.grant.clone());
        async move {
            super::obtain::obtain(
                &ctx,
                &conn,
                &account,
                current.as_ref(),
                grant.as_ref(),
                now,
                request_timeout,
            )
            .await
        }
        .in_current_span()
    });
    let sent = Timestamp::now();
    let until = sent + jiff::SignedDuration::try_from(timeout).unwrap_or_default();
    // Stop waiting at the timeout, or when the access token expires (status turns then).
    let stop = current
        .as_ref()
        .and_then(|t| t.expires_at)
        .filter(|e| *e > sent)
        .map_or(until, |e| e.min(until));
    let wait = Duration::try_from(stop.duration_since(sent)).unwrap_or_default();
    let finished = tokio::select! {
        r = &mut call => Some(r),
        () = tokio::time::sleep(wait) => None,
    };
    let attempt_id = attempt.map(|a| a.id);
    let Some(joined) = finished else {
        let flight = InFlight {
            attempt: attempt_id.clone(),
            until,
        };
        ctx.set_in_flight(&uid, flight.clone());
        tracing::warn!("the token endpoint has not answered yet; still waiting for it in the background");
        let (ctx, account, mut late) = (ctx.clone(), account.clone(), versioned.clone());
        tokio::spawn(
            async move {
                let outcome = joined_outcome(call.await);
                let settled = settle(&account, &mut late, attempt_id.as_deref(), outcome, &ctx, now).await;
                if let Err(e) = settled {
                    tracing::warn!(error = %e, "could not record a late refresh answer");
                }
                ctx.clear_in_flight(&uid, &flight);
                ctx.wake(
                    ObjectRef::<GuardedAccount>::new(&account.name_any())
                        .within(&account.namespace().unwrap_or_default()),
                );
            }
            .in_current_span(),
        );
        return Ok(versioned);
    };
    settle(
        account,
        &mut versioned,
        attempt_id.as_deref(),
        joined_outcome(joined),
        ctx,
        now,
    )
    .await?;
    Ok(versioned)
}

type Outcome = Result<Option<TokenSet>, TokenEndpointError>;

fn joined_outcome(joined: Result<Outcome, tokio::task::JoinError>) -> Outcome {
    joined.unwrap_or_else(|_| {
        Err(TokenEndpointError::Transient {
            message: "the refresh was interrupted".into(),
            delivery: Delivery::NoAnswer,
        })
    })
}

/// Records the outcome of the attempt `attempt_id` (or of a refresh without an intent), unless
/// the record moved on meanwhile (the user authorized again): then the outcome is dropped.
async fn settle(
    account: &ConnectedAccount,
    versioned: &mut Versioned,
    attempt_id: Option<&str>,
    outcome: Outcome,
    ctx: &Context,
    now: Timestamp,
) -> Result<(), Error> {
    let uid = account.uid().unwrap_or_default();
    let outcome = match outcome {
        Ok(None) => return Ok(()),
        Ok(Some(t)) => Ok(t),
        Err(e) => Err(e),
    };
    let result = match &outcome {
        Ok(_) => RefreshResult::Success,
        Err(TokenEndpointError::Rejected { .. }) => RefreshResult::Rejected,
        Err(e) if e.outcome_unknown() => RefreshResult::NoAnswer,
        Err(_) => RefreshResult::Failed,
    };
    ctx.metrics.refresh(
        &account.namespace().unwrap_or_default(),
        &account.spec.connection_ref.name,
        result,
    );
    let obtained = versioned.record.tokens.as_ref().map(|t| t.obtained_at);
    let ours = |r: &Record| match attempt_id {
        Some(id) => r.attempt.as_ref().is_some_and(|a| a.id == id),
        None => r.tokens.as_ref().map(|t| t.obtained_at) == obtained,
    };
    match outcome {
        Ok(tokens) => {
            let first = versioned.record.tokens.is_none();
            ctx.clear_failure(&uid);
            let change = |r: &mut Record| {
                r.tokens = Some(tokens.clone());
                r.rejected = false;
                r.attempt = None;
            };
            match write(account, versioned, ctx, &ours, &change).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!("a refresh answer arrived after the user authorized again; dropped");
                    return Ok(());
                }
                Err(e) => {
                    // The provider may have rotated the refresh token: keep the only copy of the
                    // new one in memory and write it before anything else once the API answers.
                    let mut record = versioned.record.clone();
                    change(&mut record);
                    ctx.set_pending(&uid, record);
                    return Err(e);
                }
            }
            let (reason, note) = if first {
                (Reason::Obtained, "credential obtained")
            } else {
                (Reason::Refreshed, "access token renewed")
            };
            if first {
                tracing::info!("credential obtained");
            } else {
                tracing::info!("token refreshed");
            }
            ctx.event(account, EventType::Normal, reason, "Refresh", note.into())
                .await;
        }
        Err(TokenEndpointError::Rejected { code, .. }) => {
            ctx.clear_failure(&uid);
            let change = |r: &mut Record| {
                r.rejected = true;
                r.attempt = None;
            };
            if !write(account, versioned, ctx, &ours, &change).await? {
                return Ok(());
            }
            tracing::warn!(%code, "refresh rejected by the provider");
            ctx.event(
                account,
                EventType::Warning,
                Reason::RefreshRejected,
                "Refresh",
                format!(
                    "the provider rejected the refresh token ({code}); a new authorization link was issued"
                ),
            )
            .await;
        }
        Err(e) => {
            // Answered with an error, or never sent: the token was not spent and the attempt is
            // closed. Without an answer the attempt stays, and the rotation policy decides.
            if !e.outcome_unknown() && attempt_id.is_some() {
                write(account, versioned, ctx, &ours, &|r: &mut Record| r.attempt = None).await?;
            }
            let message = e.to_string();
            let attempts = ctx.note_failure(&uid, message.clone(), now, |attempts| {
                let wait = schedule::backoff(attempts, &uid);
                match &e {
                    TokenEndpointError::RetryAfter { retry_after, .. } => wait.max(*retry_after),
                    _ => wait,
                }
            });
            tracing::warn!(attempts, error = %message, "refresh failed; backing off");
            if attempts == 1 {
                ctx.event(
                    account,
                    EventType::Warning,
                    Reason::RefreshFailing,
                    "Refresh",
                    message,
                )
                .await;
            }
        }
    }
    Ok(())
}

/// Applies `change` to the record while `ours` holds, re-reading it after a conflicting write
/// (the gateway, or the reconcile that went on while this answer was late). `Ok(false)`: the
/// record moved on and nothing was written.
async fn write(
    account: &ConnectedAccount,
    versioned: &mut Versioned,
    ctx: &Context,
    ours: &(dyn Fn(&Record) -> bool + Sync),
    change: &(dyn Fn(&mut Record) + Sync),
) -> Result<bool, Error> {
    let uid = account.uid().unwrap_or_default();
    for _ in 0..5 {
        if !ours(&versioned.record) {
            return Ok(false);
        }
        let mut record = versioned.record.clone();
        change(&mut record);
        match persist(account, versioned, record, ctx).await {
            Ok(written) => {
                *versioned = written;
                return Ok(true);
            }
            Err(e) if e.is_conflict() => {
                *versioned = ctx.credentials.get(&uid).await.map_err(Error::ReadRecord)?;
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::WriteRecord(StoreError::Conflict))
}
