//! The OAuth code exchange, done by the controller: it alone may read the Connection's client
//! secret. The gateway has checked the callback (cookie, redirect URI, `iss`) for the user's
//! sake; the desk re-checks what decides the outcome: the state's signature and expiry, the
//! account and its current link, and that the state was issued for this very Connection.

use jiff::Timestamp;

use super::Desk;
use crate::api::Reason;
use crate::auth::resolve as conn_auth;
use crate::intake::wire::{Completed, Completion, Exchange};

impl Desk {
    /// Exchanges the code of `x.state` with the session's PKCE verifier and stores the
    /// credentials.
    pub async fn exchange(&self, x: &Exchange) -> Completed {
        let (claims, account) = self.attempt(&x.state).await?;
        if self.already_spent(&account, &claims.link).await {
            return Err(Completion::AlreadyDone);
        }
        let conn = self.connection(&account).await?;
        if conn.metadata.uid.as_deref() != Some(claims.conn.as_str()) {
            tracing::warn!(account = %claims.name, namespace = %claims.ns, "intake refused a state issued for another Connection");
            return Err(Completion::Spent);
        }
        let oauth = match conn_auth::oauth_client(&self.client, &self.config, &conn).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "connection unusable at callback");
                return Err(Completion::Unconfigured);
            }
        };
        let verifier = self.signer.pkce_verifier(&claims.sid);
        let tokens = match oauth
            .exchange_code(&self.http, &x.code, &verifier, Timestamp::now())
            .await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(account = %claims.name, namespace = %claims.ns, error = %e, "code exchange failed");
                let message = format!("the code exchange failed: {e}");
                self.record_failure(&account, &claims.link, Reason::ExchangeFailed, &message)
                    .await;
                return Err(Completion::ExchangeFailed);
            }
        };
        self.complete(&account, &conn, &claims.link, tokens, Some(oauth.grant()))
            .await
    }

    /// Whether the account's copy says the link nonce `link` is spent.
    pub(super) async fn already_spent(&self, account: &crate::api::ConnectedAccount, link: &str) -> bool {
        use kube::ResourceExt;
        self.spent(&crate::intake::wire::SpentQuery {
            uid: account.uid().unwrap_or_default(),
            link: link.to_owned(),
        })
        .await
    }
}
