//! A hosted-form submission, checked and stored by the controller: the credential check calls
//! the app (egress), and the store is the operator's copy. The gateway has validated the fields
//! and the browser session for the user's sake; the desk re-checks the link and the fields.
//!
//! Guarantees: each link gets at most [`CHECKS_PER_LINK`] credential checks per
//! [`CHECK_WINDOW`] (per controller replica), so a link holder cannot use the operator to try
//! guessed keys against the app; the app's answer reaches the user only as an HTTP status code.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::http::header;
use jiff::Timestamp;

use super::Desk;
use crate::api::HttpMethod;
use crate::auth::form::Form;
use crate::intake::wire::{Completed, Completion, Submission};
use crate::store::TokenSet;

/// Credential checks one link may cause per window.
pub const CHECKS_PER_LINK: u32 = 10;
/// The window of [`CHECKS_PER_LINK`], from a link's first check.
pub const CHECK_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Counts credential checks per link nonce; bounded in size and time.
#[derive(Clone)]
pub(super) struct CheckLimit(moka::sync::Cache<String, Arc<AtomicU32>>);

impl Default for CheckLimit {
    fn default() -> Self {
        CheckLimit(
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(CHECK_WINDOW)
                .build(),
        )
    }
}

impl CheckLimit {
    /// Counts one check for `link`; false once the link has had its share.
    fn admit(&self, link: &str) -> bool {
        let count = self.0.get_with(link.to_owned(), || Arc::new(AtomicU32::new(0)));
        count.fetch_add(1, Ordering::Relaxed) < CHECKS_PER_LINK
    }
}

impl Desk {
    /// Checks (when the Connection asks) and stores the credential typed into the form of `s.link`.
    pub async fn submit(&self, s: &Submission) -> Completed {
        let claims = self
            .signer
            .verify_link(&s.link, Timestamp::now().as_second())
            .map_err(|_| Completion::Spent)?;
        let account = self.account(&claims).await?;
        if self.current_link(&account).map(|l| l.nonce) != Some(claims.nonce.clone()) {
            return Err(Completion::Spent);
        }
        if self.already_spent(&account, &claims.nonce).await {
            return Err(Completion::AlreadyDone);
        }
        let conn = self.connection(&account).await?;
        if !conn.spec.auth_type.form() {
            return Err(Completion::Unconfigured);
        }
        let form = Form::of(&conn).map_err(|e| {
            tracing::warn!(error = %e, "connection form unusable");
            Completion::Unconfigured
        })?;
        let Ok(clean) = form.validate(&s.values) else {
            // The gateway validated these already: only a gateway out of step gets here.
            return Err(Completion::CheckFailed {
                message: "Some fields are not valid. Check them and try again.".into(),
            });
        };
        let tokens = form.credential(clean.clone(), Timestamp::now());
        if form.verify.is_some() {
            if !self.checks.admit(&claims.nonce) {
                tracing::warn!(account = %claims.name, namespace = %claims.ns, "credential checks for this link exhausted");
                return Err(Completion::TooManyChecks);
            }
            if let Err(message) = self.check(&form, &clean, &tokens).await {
                tracing::info!(account = %claims.name, namespace = %claims.ns, "submitted credential failed the app's check");
                return Err(Completion::CheckFailed { message });
            }
        }
        self.complete(&account, &conn, &claims.nonce, tokens, None).await
    }

    /// Calls the Connection's verify URL with the new credential; a message for the user on
    /// failure.
    async fn check(
        &self,
        form: &Form,
        values: &std::collections::BTreeMap<String, String>,
        tokens: &TokenSet,
    ) -> Result<(), String> {
        let (Some(verify), Some(url)) = (&form.verify, form.verify_url(values)) else {
            return Ok(());
        };
        let request = match verify.method.unwrap_or_default() {
            HttpMethod::Get => self.http.get(&url),
            HttpMethod::Post => self.http.post(&url),
        };
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "credential check refused by the egress policy");
                return Err(
                    "This app's credential check is not allowed by the operator. Contact the platform team."
                        .into(),
                );
            }
        };
        let sent = request
            .header(form.header_name.as_str(), tokens.authorization())
            .header(header::ACCEPT, "application/json")
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!(
                "The app did not accept these credentials (HTTP {}). Check them and try again.",
                resp.status().as_u16()
            )),
            Err(e) => {
                tracing::warn!(error = %e.without_url(), "credential check could not reach the app");
                Err("We could not reach the app to check these credentials. Try again in a moment.".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_gets_a_bounded_number_of_checks() {
        let limit = CheckLimit::default();
        for _ in 0..CHECKS_PER_LINK {
            assert!(limit.admit("link-a"));
        }
        assert!(!limit.admit("link-a"));
        assert!(limit.admit("link-b"), "another link has its own share");
    }
}
