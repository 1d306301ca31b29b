//! The platform's answer to a verification request, applied by the controller to the held-back
//! credential. The gateway has authenticated the platform (TokenReview) and authorized it (RBAC
//! verb `verify`); the desk re-checks the signed request id and the pending attempt it names.
//!
//! Guarantees: a matching identifier publishes the held-back credential; any other identifier
//! discards it, so nothing of that attempt is ever published; an answered or expired request is
//! gone.

use jiff::Timestamp;
use kube::ResourceExt;

use super::Desk;
use crate::intake::wire::{Confirmation, Verified};
use crate::store::FlowError;
use crate::store::operator_copy::StoreError;

impl Desk {
    /// Applies the platform's `identifier` for the request `c.request_id`.
    pub async fn verify(&self, c: &Confirmation) -> Verified {
        let Ok(claims) = self
            .signer
            .verify_request(&c.request_id, Timestamp::now().as_second())
        else {
            return Verified::Gone;
        };
        let account = match self.account(&claims).await {
            Ok(a) => a,
            Err(crate::intake::wire::Completion::Unavailable) => return Verified::Unavailable,
            Err(_) => return Verified::Unknown,
        };
        let uid = account.uid().unwrap_or_default();
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
            let matches = c.identifier == account.spec.identifier;
            if matches {
                record.install(pending.tokens, pending.grant);
                record.flow_error = None;
            } else {
                record.flow_error = Some(FlowError {
                    reason: crate::api::Reason::VerificationFailed,
                    message: "the platform reported a different user than the account's identifier; the credential was discarded".into(),
                    link: record.completed_link.clone().unwrap_or_default(),
                });
            }
            match self
                .credentials
                .put(&account, &record, current.resource_version.as_deref())
                .await
            {
                Ok(_) if matches => {
                    tracing::info!(account = %claims.name, namespace = %claims.ns, "user verified");
                    return Verified::Published;
                }
                Ok(_) => {
                    tracing::warn!(account = %claims.name, namespace = %claims.ns, "verification refused: identifier mismatch");
                    return Verified::Mismatch;
                }
                Err(StoreError::Conflict) => continue,
                Err(_) => return Verified::Unavailable,
            }
        }
        Verified::Unavailable
    }
}
