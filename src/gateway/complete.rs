//! The end of every interactive flow (OAuth callback, hosted form): store the credential in the
//! operator's copy with optimistic concurrency, which also spends the link, so a second completion
//! through the same link is refused. With `spec.verification` the credential is held back as
//! pending and the user is sent to the platform to confirm who they are.

use axum::response::{IntoResponse, Redirect, Response};
use jiff::Timestamp;
use kube::ResourceExt;

use super::{Gateway, pages};
use crate::api::{ConnectedAccount, Connection};
use crate::controller::schedule;
use crate::links::LinkClaims;
use crate::store::credentials::StoreError;
use crate::store::{FlowError, Grant, PendingVerification, Record, TokenSet};

/// How long the platform has to confirm a user by default.
const DEFAULT_VERIFICATION_TTL: jiff::SignedDuration = jiff::SignedDuration::from_mins(15);

pub enum Completion {
    AlreadyDone,
    Failed(StoreError),
}

/// What the user sees next.
pub enum Next {
    Done,
    /// The platform's verify page with the one-time request id.
    Verify(String),
}

/// Stores `tokens` obtained through the link `link` and spends it.
pub async fn complete(
    gw: &Gateway,
    account: &ConnectedAccount,
    conn: &Connection,
    link: &str,
    tokens: TokenSet,
    grant: Option<Grant>,
) -> Result<Next, Completion> {
    let uid = account.uid().unwrap_or_default();
    let now = Timestamp::now();
    // The first stored credential brings the finalizer that guarantees its cleanup.
    let api: kube::Api<ConnectedAccount> =
        kube::Api::namespaced(gw.client.clone(), &account.namespace().unwrap_or_default());
    crate::store::finalizer::ensure(&api, account)
        .await
        .map_err(|e| Completion::Failed(StoreError::Api(e)))?;
    for _ in 0..3 {
        let current = gw.credentials.get(&uid).await.map_err(Completion::Failed)?;
        if current.record.completed_link.as_deref() == Some(link) {
            return Err(Completion::AlreadyDone);
        }
        let (record, next) = match &conn.spec.verification {
            None => {
                let mut record = Record {
                    tokens: current.record.tokens.clone(),
                    grant: current.record.grant.clone(),
                    rejected: current.record.rejected,
                    superseded: current.record.superseded.clone(),
                    completed_link: Some(link.to_owned()),
                    ..Default::default()
                };
                record.install(tokens.clone(), grant.clone());
                (record, Next::Done)
            }
            Some(v) => {
                let ttl = v
                    .ttl
                    .as_deref()
                    .and_then(|t| schedule::parse_duration(t).ok())
                    .unwrap_or(DEFAULT_VERIFICATION_TTL);
                let request = crate::links::random_id();
                let claims = LinkClaims {
                    ns: account.namespace().unwrap_or_default(),
                    name: account.name_any(),
                    uid: uid.clone(),
                    nonce: request.clone(),
                    exp: (now + ttl).as_second(),
                };
                let mut url = url::Url::parse(&v.url).map_err(|_| Completion::Failed(StoreError::Corrupt))?;
                url.query_pairs_mut()
                    .append_pair("request_id", &gw.signer.issue_request(&claims));
                // Credentials that work today stay published until the new ones are confirmed.
                let record = Record {
                    tokens: current.record.tokens.clone().filter(|_| !current.record.rejected),
                    grant: current.record.grant.clone(),
                    superseded: current.record.superseded.clone(),
                    completed_link: Some(link.to_owned()),
                    pending: Some(PendingVerification {
                        request,
                        tokens: tokens.clone(),
                        grant: grant.clone(),
                        expires_at: now + ttl,
                    }),
                    ..Default::default()
                };
                (record, Next::Verify(url.into()))
            }
        };
        match gw
            .credentials
            .put(account, &record, current.resource_version.as_deref())
            .await
        {
            Ok(_) => return Ok(next),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(Completion::Failed(e)),
        }
    }
    Err(Completion::Failed(StoreError::Conflict))
}

/// The response for a completed flow.
pub fn finish(account: &ConnectedAccount, conn: &Connection, result: Result<Next, Completion>) -> Response {
    match result {
        Ok(Next::Verify(url)) => {
            tracing::info!(account = %account.name_any(), namespace = ?account.namespace(), "authorization completed; waiting for the platform to verify the user");
            Redirect::to(&url).into_response()
        }
        Ok(Next::Done) => {
            tracing::info!(account = %account.name_any(), namespace = ?account.namespace(), "authorization completed");
            match conn.spec.success_redirect_url.as_deref() {
                Some(url) => Redirect::to(url).into_response(),
                None => pages::success(),
            }
        }
        Err(Completion::AlreadyDone) => pages::used_link(),
        Err(Completion::Failed(e)) => {
            tracing::warn!(error = %e, "cannot store credentials");
            pages::unavailable("We could not save the connection. Open your link again to retry.")
        }
    }
}

/// Whether an authorization already completed through the link `link`. The status may still show
/// that link (the controller has not caught up): the operator's copy is the authority.
pub async fn spent(gw: &Gateway, account: &ConnectedAccount, link: &str) -> bool {
    match gw.credentials.get(&account.uid().unwrap_or_default()).await {
        Ok(v) => v.record.completed_link.as_deref() == Some(link),
        Err(_) => false,
    }
}

/// Notes a failed attempt on the account (shown as its Ready condition); best effort.
pub async fn record_failure(
    gw: &Gateway,
    account: &ConnectedAccount,
    link: &str,
    reason: &str,
    message: &str,
) {
    let uid = account.uid().unwrap_or_default();
    for _ in 0..3 {
        let Ok(current) = gw.credentials.get(&uid).await else {
            return;
        };
        let mut record = current.record.clone();
        record.flow_error = Some(FlowError {
            reason: reason.to_owned(),
            message: message.to_owned(),
            link: link.to_owned(),
        });
        match gw
            .credentials
            .put(account, &record, current.resource_version.as_deref())
            .await
        {
            Err(StoreError::Conflict) => continue,
            Err(e) => {
                tracing::warn!(account = %account.name_any(), error = %e, "cannot record the failed attempt");
                return;
            }
            Ok(_) => return,
        }
    }
}
