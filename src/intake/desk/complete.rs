//! The end of every interactive flow (OAuth callback, hosted form): store the credential in the
//! operator's copy with optimistic concurrency, which also spends the link, so a second completion
//! through the same link is refused. With `spec.verification` the credential is held back as
//! pending and the user is sent to the platform to confirm who they are.
//!
//! Onward pages (`spec.verification.url`, `successRedirectUrl`) are decided here, against the
//! operator's allowlist ([`crate::intake::onward`]): a verification page that is not allowed
//! stores nothing (the link stays usable once the allowlist is fixed).

use jiff::Timestamp;
use kube::ResourceExt;

use super::Desk;
use crate::api::{ConnectedAccount, Connection};
use crate::intake::onward::{self, Onward};
use crate::intake::wire::{Completed, Completion, Next};
use crate::signer::LinkClaims;
use crate::store::operator_copy::StoreError;
use crate::store::{Grant, PendingVerification, Record, TokenSet};

/// How long the platform has to confirm a user by default.
const DEFAULT_VERIFICATION_TTL: jiff::SignedDuration = jiff::SignedDuration::from_mins(15);

impl Desk {
    /// Stores `tokens` obtained through the link nonce `link` and spends it.
    pub(super) async fn complete(
        &self,
        account: &ConnectedAccount,
        conn: &Connection,
        link: &str,
        tokens: TokenSet,
        grant: Option<Grant>,
    ) -> Completed {
        let uid = account.uid().unwrap_or_default();
        let now = Timestamp::now();
        let allowed = &self.config.allowed_redirect_origins;
        // Decided before anything is stored: a refused verification page leaves the link usable.
        let verify_url = match conn
            .spec
            .verification
            .as_ref()
            .map(|v| onward::decide(allowed, Some(&v.url)))
        {
            None | Some(Onward::Stay) => None,
            Some(Onward::Go(url)) => Some(url),
            Some(Onward::Refused(origin)) => {
                tracing::warn!(connection = %conn.name_any(), namespace = %conn.namespace().unwrap_or_default(), %origin, "spec.verification.url is not on --allowed-redirect-origin; nothing stored");
                return Err(Completion::VerifyNotAllowed { origin });
            }
        };
        // The first stored credential brings the finalizer that guarantees its cleanup.
        let api: kube::Api<ConnectedAccount> =
            kube::Api::namespaced(self.client.clone(), &account.namespace().unwrap_or_default());
        if let Err(e) = crate::store::finalizer::ensure(&api, account).await {
            tracing::warn!(error = %e, "cannot add the finalizer; nothing stored");
            return Err(Completion::Unavailable);
        }
        for _ in 0..3 {
            let current = self.credentials.get(&uid).await.map_err(unavailable)?;
            if current.record.completed_link.as_deref() == Some(link) {
                return Err(Completion::AlreadyDone);
            }
            let (record, next) = match (&conn.spec.verification, &verify_url) {
                (Some(v), Some(verify_url)) => {
                    let ttl = v
                        .ttl
                        .as_ref()
                        .map_or(DEFAULT_VERIFICATION_TTL, crate::api::Duration::get);
                    let request = crate::signer::random_id();
                    let claims = LinkClaims {
                        ns: account.namespace().unwrap_or_default(),
                        name: account.name_any(),
                        uid: uid.clone(),
                        nonce: request.clone(),
                        exp: (now + ttl).as_second(),
                    };
                    let mut url = verify_url.clone();
                    url.query_pairs_mut()
                        .append_pair("request_id", &self.signer.issue_request(&claims));
                    // Credentials that work today stay published until the new ones are confirmed.
                    let record = Record {
                        tokens: current.record.tokens.clone().filter(|_| !current.record.rejected),
                        grant: current.record.grant.clone(),
                        superseded: current.record.superseded.clone(),
                        completed_link: Some(link.to_owned()),
                        // The published tokens stay, and so does an open refresh attempt on them:
                        // its refresh token must not be spent again while its outcome is unknown.
                        attempt: current.record.attempt.clone(),
                        pending: Some(PendingVerification {
                            request,
                            tokens: tokens.clone(),
                            grant: grant.clone(),
                            expires_at: now + ttl,
                            confirmed: false,
                        }),
                        ..Default::default()
                    };
                    (record, Next::Verify { url })
                }
                _ => {
                    let mut record = Record {
                        tokens: current.record.tokens.clone(),
                        grant: current.record.grant.clone(),
                        rejected: current.record.rejected,
                        superseded: current.record.superseded.clone(),
                        completed_link: Some(link.to_owned()),
                        ..Default::default()
                    };
                    record.install(tokens.clone(), grant.clone());
                    let onward = onward::decide(allowed, conn.spec.success_redirect_url.as_deref());
                    (record, Next::Done { onward })
                }
            };
            match self
                .credentials
                .put(account, &record, current.resource_version.as_deref())
                .await
            {
                Ok(_) => return Ok(next),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(unavailable(StoreError::Conflict))
    }
}

fn unavailable(e: StoreError) -> Completion {
    tracing::warn!(error = %e, "cannot store credentials");
    Completion::Unavailable
}
