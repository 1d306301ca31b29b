//! The platform's answer to a verification request, applied by the controller to the held-back
//! credential, and the return of the browser that started the flow. The gateway has authenticated
//! the platform (TokenReview) and authorized it (RBAC verb `verify`), and checked the browser's
//! cookie for a return; the desk re-checks the signed request id and the pending attempt it names.
//!
//! Guarantees: an inspection changes nothing; a matching identifier only marks the held-back
//! credential confirmed; it is published by [`Desk::returned`] (the starting browser is back),
//! never before; any other identifier, or a refusal, discards it, so nothing of that attempt is
//! ever published; an answered or expired request is gone.

use jiff::Timestamp;
use kube::ResourceExt;

use super::Desk;
use crate::api::ConnectedAccount;
use crate::intake::onward;
use crate::intake::wire::{Completion, Confirmation, Inspected, Inspection, Return, Returned, Verified};
use crate::signer::LinkClaims;
use crate::store::operator_copy::StoreError;
use crate::store::{FlowError, PendingVerification};

impl Desk {
    /// Applies the platform's answer for the request `c.request_id`.
    pub async fn verify(&self, c: &Confirmation) -> Verified {
        let (claims, account) = match self.request(&c.request_id).await {
            Ok(found) => found,
            Err(v) => return v,
        };
        // The gateway checked the platform for its answer's sake; the desk checks again, so a
        // compromised gateway cannot confirm a user without the platform's own token.
        match self.platform_may_verify(&c.platform, &claims).await {
            Ok(true) => {}
            Ok(false) => return Verified::Forbidden,
            Err(()) => return Verified::Unavailable,
        }
        let uid = account.uid().unwrap_or_default();
        let identifier = c.identifier.as_deref().filter(|_| !c.refuse);
        for _ in 0..3 {
            let Ok(current) = self.credentials.get(&uid).await else {
                return Verified::Unavailable;
            };
            let mut record = current.record.clone();
            let Some(pending) = record
                .pending
                .take()
                .filter(|p| p.request == claims.nonce && p.expires_at > Timestamp::now())
            else {
                return Verified::Gone;
            };
            let outcome = match identifier {
                Some(i) if i == account.spec.identifier => Verified::Confirmed,
                Some(_) => Verified::Mismatch,
                None => Verified::Refused,
            };
            if outcome == Verified::Confirmed {
                record.pending = Some(PendingVerification {
                    confirmed: true,
                    ..pending
                });
            } else {
                record.flow_error = Some(FlowError {
                    reason: crate::api::Reason::VerificationFailed,
                    message: if outcome == Verified::Refused {
                        "the platform refused the user; the credential was discarded"
                    } else {
                        "the platform reported a different user than the account's identifier; the credential was discarded"
                    }
                    .into(),
                    link: record.completed_link.clone().unwrap_or_default(),
                });
            }
            match self
                .credentials
                .put(&account, &record, current.resource_version.as_deref())
                .await
            {
                Ok(_) => {
                    tracing::info!(account = %claims.name, namespace = %claims.ns, outcome = ?outcome, "verification answered");
                    return outcome;
                }
                Err(StoreError::Conflict) => continue,
                Err(_) => return Verified::Unavailable,
            }
        }
        Verified::Unavailable
    }

    /// Whether `token` is a platform's, issued for the verify audience, whose identity may `verify`
    /// the account `claims` names (TokenReview, then SubjectAccessReview).
    async fn platform_may_verify(&self, token: &str, claims: &LinkClaims) -> Result<bool, ()> {
        let audience = Some(self.config.verify_audience.as_str());
        let user = match crate::review::authenticate(&self.client, token, audience).await {
            Ok(Some(u)) => u,
            Ok(None) => return Ok(false),
            Err(e) => {
                tracing::warn!(error = %e, "intake TokenReview of the platform failed");
                return Err(());
            }
        };
        let verb = crate::intake::wire::VERIFY_VERB;
        crate::review::may(&self.client, &user, verb, &claims.ns, &claims.name)
            .await
            .map_err(|e| tracing::warn!(error = %e, "intake SubjectAccessReview failed"))
    }

    /// What the platform may see of the request `i.request_id`; changes nothing.
    pub async fn inspect(&self, i: &Inspection) -> Inspected {
        let (claims, account) = match self.request(&i.request_id).await {
            Ok(found) => found,
            Err(Verified::Unavailable) => return Inspected::Unavailable,
            Err(_) => return Inspected::Gone,
        };
        let Ok(current) = self.credentials.get(&account.uid().unwrap_or_default()).await else {
            return Inspected::Unavailable;
        };
        match current
            .record
            .pending
            .filter(|p| p.request == claims.nonce && p.expires_at > Timestamp::now())
        {
            Some(p) => Inspected::Pending {
                identifier: account.spec.identifier.clone(),
                provider_identity: p.tokens.identity,
                confirmed: p.confirmed,
            },
            None => Inspected::Gone,
        }
    }

    /// Publishes the held-back credential of `b.request_id` if the platform confirmed it (the
    /// gateway has checked that the browser that started the flow is the one back).
    pub async fn returned(&self, b: &Return) -> Returned {
        let (claims, account) = match self.request(&b.request_id).await {
            Ok(found) => found,
            Err(Verified::Unavailable) => return Returned::Unavailable,
            Err(_) => return Returned::Gone,
        };
        let uid = account.uid().unwrap_or_default();
        for _ in 0..3 {
            let Ok(current) = self.credentials.get(&uid).await else {
                return Returned::Unavailable;
            };
            let mut record = current.record.clone();
            let Some(pending) = record
                .pending
                .take()
                .filter(|p| p.request == claims.nonce && p.expires_at > Timestamp::now())
            else {
                return Returned::Gone;
            };
            if !pending.confirmed {
                return Returned::NotConfirmed;
            }
            record.install(pending.tokens, pending.grant);
            record.flow_error = None;
            match self
                .credentials
                .put(&account, &record, current.resource_version.as_deref())
                .await
            {
                Ok(_) => {
                    tracing::info!(account = %claims.name, namespace = %claims.ns, "user verified and back: credential published");
                    let onward = match self.connection(&account).await {
                        Ok(conn) => onward::decide(
                            &self.config.allowed_redirect_origins,
                            conn.spec.success_redirect_url.as_deref(),
                        ),
                        Err(_) => onward::Onward::Stay,
                    };
                    return Returned::Published { onward };
                }
                Err(StoreError::Conflict) => continue,
                Err(_) => return Returned::Unavailable,
            }
        }
        Returned::Unavailable
    }

    /// The claims and account of a signed, unexpired request id.
    async fn request(&self, request_id: &str) -> Result<(LinkClaims, ConnectedAccount), Verified> {
        let Ok(claims) = self
            .signer
            .verify_request(request_id, Timestamp::now().as_second())
        else {
            return Err(Verified::Gone);
        };
        match self.account(&claims).await {
            Ok(a) => Ok((claims, a)),
            Err(Completion::Unavailable) => Err(Verified::Unavailable),
            Err(_) => Err(Verified::Unknown),
        }
    }
}
