//! The intake's desk: the controller-side half of every interactive flow. It holds what the
//! public gateway must not: the rights on the operator's credential copies and on referenced
//! Secrets (client secrets), and the egress to providers.
//!
//! Guarantees: every step re-verifies the signed link, state or request id it is handed and
//! re-reads the account from the API server (same UID, the link still its current one), so a
//! compromised gateway can make the desk do only what a browser holding that link could; no
//! answer carries a token.

mod complete;
mod exchange;
mod submit;
mod verify;

use std::sync::Arc;

use jiff::Timestamp;
use kube::{Api, Client, ResourceExt};

use super::wire::{Completion, Declined, SpentQuery};
use crate::api::{AccountState, ConnectedAccount, Connection, Reason};
use crate::auth::resolve as conn_auth;
use crate::config::Config;
use crate::egress::EgressClient;
use crate::signer::{self, LinkClaims, Signer, StateClaims};
use crate::store::FlowError;
use crate::store::operator_copy::{CredentialStore, StoreError};

/// The controller-side half of the flows. Cheap to clone.
#[derive(Clone)]
pub struct Desk {
    client: Client,
    config: Arc<Config>,
    signer: Signer,
    credentials: CredentialStore,
    http: EgressClient,
    checks: submit::CheckLimit,
}

impl Desk {
    pub fn new(client: Client, config: Arc<Config>, signer: Signer, http: EgressClient) -> Desk {
        Desk {
            credentials: CredentialStore::new(client.clone(), &config.namespace),
            client,
            config,
            signer,
            http,
            checks: submit::CheckLimit::default(),
        }
    }

    /// Whether an authorization already completed through the link nonce `link`. The status may
    /// still show that link (the controller has not caught up): the operator's copy is the
    /// authority.
    pub async fn spent(&self, q: &SpentQuery) -> bool {
        match self.credentials.get(&q.uid).await {
            Ok(v) => v.record.completed_link.as_deref() == Some(q.link.as_str()),
            Err(_) => false,
        }
    }

    /// Notes that the provider declined the attempt `state` (shown as the account's Ready
    /// condition until the next attempt succeeds); best effort. The message is the desk's own,
    /// with the provider's error code reduced to a short ASCII word.
    pub async fn declined(&self, d: &Declined) {
        let Ok((claims, account)) = self.attempt(&d.state).await else {
            return;
        };
        let (reason, message) = match d.error.as_str() {
            "access_denied" => (
                Reason::AccessDenied,
                "the user declined access at the provider".to_owned(),
            ),
            other => (
                Reason::AuthorizationFailed,
                format!("the provider reported {}", error_code(other)),
            ),
        };
        self.record_failure(&account, &claims.link, reason, &message)
            .await;
    }

    /// The claims of a valid `state` and its account, which must still exist with the same UID
    /// and still show the attempt's link.
    async fn attempt(&self, state: &str) -> Result<(StateClaims, ConnectedAccount), Completion> {
        let claims = self
            .signer
            .verify_state(state, Timestamp::now().as_second())
            .map_err(|e| {
                tracing::info!(reason = %e, "intake refused an OAuth state");
                Completion::Spent
            })?;
        let link = LinkClaims {
            ns: claims.ns.clone(),
            name: claims.name.clone(),
            uid: claims.uid.clone(),
            nonce: claims.link.clone(),
            exp: 0,
        };
        let account = self.account(&link).await?;
        if self.current_link(&account).map(|l| l.nonce) != Some(claims.link.clone()) {
            return Err(Completion::Spent);
        }
        Ok((claims, account))
    }

    /// The account `claims` names, if it still exists with the same UID.
    async fn account(&self, claims: &LinkClaims) -> Result<ConnectedAccount, Completion> {
        let api: Api<ConnectedAccount> = Api::namespaced(self.client.clone(), &claims.ns);
        match api.get_opt(&claims.name).await {
            Ok(Some(a)) if a.metadata.uid.as_deref() == Some(claims.uid.as_str()) => Ok(a),
            Ok(_) => Err(Completion::Spent),
            Err(e) => {
                tracing::warn!(error = %e, "intake cannot read the account");
                Err(Completion::Unavailable)
            }
        }
    }

    /// The claims of the account's current link, unless it is disconnected.
    fn current_link(&self, account: &ConnectedAccount) -> Option<LinkClaims> {
        let status = account.status.as_ref()?;
        if status.state == Some(AccountState::Disconnected) {
            return None;
        }
        let token = status.authorization_link.as_deref().and_then(signer::token_of)?;
        self.signer.read_link(token)
    }

    /// The account's Connection, validated in its current generation.
    async fn connection(&self, account: &ConnectedAccount) -> Result<Connection, Completion> {
        match conn_auth::of_account(&self.client, &self.config.namespace, account).await {
            Ok(Some(c)) if conn_auth::ready_now(&c) => Ok(c),
            Ok(Some(_)) => Err(Completion::Updating),
            Ok(None) => Err(Completion::Unconfigured),
            Err(e) => {
                tracing::warn!(error = %e, "intake cannot read the connection");
                Err(Completion::Unavailable)
            }
        }
    }

    /// Notes a failed attempt on the account; best effort.
    async fn record_failure(&self, account: &ConnectedAccount, link: &str, reason: Reason, message: &str) {
        let uid = account.uid().unwrap_or_default();
        for _ in 0..3 {
            let Ok(current) = self.credentials.get(&uid).await else {
                return;
            };
            let mut record = current.record.clone();
            record.flow_error = Some(FlowError {
                reason,
                message: message.to_owned(),
                link: link.to_owned(),
            });
            match self
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
}

/// Provider error codes are ASCII words; keep them so and short.
pub fn error_code(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_error_codes_stay_short_ascii_words() {
        assert_eq!(error_code("invalid_scope"), "invalid_scope");
        assert_eq!(error_code("<script>alert(1)</script>"), "scriptalert1script");
        assert_eq!(error_code(&"x".repeat(200)).len(), 64);
    }
}
