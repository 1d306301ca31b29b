//! The account state machine as a pure function: from what is observed (account, Connection,
//! credential record, agent Secret, clock) to what should be (state, conditions, link, actions).
//! No client, no I/O, so every transition of DESIGN.md is unit-tested here.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::attempt::{AttemptState, Rotation};
use super::schedule;
use crate::api::{AccountState, ConnectedAccount, Delivery, REAUTHORIZE_ANNOTATION, Reason};
use crate::signer::LinkClaims;
use crate::store::Record;
use crate::store::agent_secret::Ownership;

/// A Connection as an account needs it, once it is found and Ready.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionView {
    pub link_ttl: SignedDuration,
    pub refresh_before: Option<SignedDuration>,
    pub scopes: Vec<String>,
    pub source: Source,
    /// The grant an authorization now would give (OAuth 2.0): compared with the pinned one.
    pub grant: Option<crate::store::Grant>,
    pub rotation: Rotation,
    /// How long a refresh may take before its outcome counts as unknown.
    pub refresh_timeout: SignedDuration,
    /// The Connection's `spec.delivery` (an account's own wins, see [`Delivery::effective`]).
    pub delivery: Option<Delivery>,
    /// A platform's ClusterConnection, not a tenant's Connection.
    pub platform: bool,
}

/// Where an account's credential comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A user, through the authorization link (OAuth 2.0, hosted forms).
    Link,
    /// The operator itself (custom JWTs, client credentials): no link, obtained when missing.
    Operator,
    /// A Secret the platform team supplied (`spec.credentialsRef`).
    SecretRef,
}

/// Why an account cannot use its Connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionIssue {
    pub reason: Reason,
    pub message: String,
}

/// The last transient refresh failure, kept in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshFailure {
    pub message: String,
    pub attempts: u32,
    pub retry_at: Timestamp,
}

/// Everything `decide` looks at.
pub struct Facts<'a> {
    pub account: &'a ConnectedAccount,
    pub connection: Result<&'a ConnectionView, &'a ConnectionIssue>,
    pub record: &'a Record,
    /// The account's current link, if its status has one this operator signed for this account.
    pub link: Option<&'a LinkClaims>,
    pub secret: Ownership,
    /// The agent Secret already holds what the record says.
    pub secret_current: bool,
    pub refresh_failure: Option<&'a RefreshFailure>,
    pub attempt: AttemptState,
    pub now: Timestamp,
}

/// Condition type for the health of token renewal.
pub const TOKEN_REFRESH: &str = "TokenRefresh";

/// Whether renewal is due now. The caller refreshes first, then calls [`decide`] with the result.
/// For [`Source::Operator`] it is also due when there is no credential yet.
pub fn refresh_due(o: &Facts<'_>) -> bool {
    let Ok(conn) = o.connection else {
        return false;
    };
    if o.account.spec.disconnected == Some(true)
        || (o.secret == Ownership::Foreign && delivery(o).writes_secret())
    {
        return false;
    }
    let retry_ok = o.refresh_failure.is_none_or(|f| f.retry_at <= o.now);
    match usable_tokens(o.record) {
        None => conn.source == Source::Operator && retry_ok,
        Some(tokens) => {
            renewal_at(conn, tokens, o.account).is_some_and(|at| at <= o.now)
                && retry_ok
                && !client_moved(conn, o.record)
                && !o.attempt.busy()
                && !o.attempt.stranded(conn.rotation, o.now)
        }
    }
}

/// The Connection now names other endpoints or another client than the grant was obtained with.
fn grant_moved(conn: &ConnectionView, record: &Record) -> bool {
    matches!((&conn.grant, &record.grant), (Some(now), Some(pinned)) if !now.same_place(pinned))
}

/// The Connection's client id changed: the grant's own client cannot authenticate any more (its
/// secret is gone), so it is not refreshed; it runs until expiry while the user re-authorizes.
fn client_moved(conn: &ConnectionView, record: &Record) -> bool {
    matches!((&conn.grant, &record.grant), (Some(now), Some(pinned)) if now.client_id != pinned.client_id)
}

fn renewal_at(
    conn: &ConnectionView,
    tokens: &crate::store::TokenSet,
    account: &ConnectedAccount,
) -> Option<Timestamp> {
    match conn.source {
        Source::Link => schedule::renew_at(tokens, conn.refresh_before, &uid(account), true),
        Source::Operator => schedule::renew_at(tokens, conn.refresh_before, &uid(account), false),
        Source::SecretRef => None,
    }
}

/// How often a credential copied from `spec.credentialsRef` is compared with its Secret.
pub const SECRET_REF_RECHECK: Duration = Duration::from_secs(300);

/// The account's delivery, with its Connection's as the default.
pub fn delivery(o: &Facts<'_>) -> Delivery {
    let conn = o.connection.ok();
    Delivery::effective(
        o.account.spec.delivery,
        conn.and_then(|c| c.delivery),
        conn.is_some_and(|c| c.platform),
    )
}

pub fn decide(o: &Facts<'_>) -> Plan {
    let delivery = delivery(o);
    let mut plan = Plan {
        state: AccountState::PendingAuth,
        conditions: Vec::new(),
        link: LinkPlan::Clear,
        delivery,
        publish: false,
        remove_credentials: false,
        unpublish: false,
        next_refresh_at: None,
        requeue_after: None,
    };
    if o.account.spec.disconnected == Some(true) {
        plan.state = AccountState::Disconnected;
        plan.remove_credentials = true;
        plan.conditions.push(not_ready(
            Reason::Disconnected,
            "spec.disconnected is true; credentials were removed",
        ));
        return plan;
    }
    let conn = match o.connection {
        Ok(c) => c,
        Err(issue) => {
            plan.state = AccountState::Error;
            plan.conditions.push(not_ready(issue.reason, &issue.message));
            return plan;
        }
    };
    if o.secret == Ownership::Foreign && delivery.writes_secret() {
        plan.state = AccountState::Error;
        plan.conditions.push(not_ready(
            Reason::SecretConflict,
            "a Secret with the name in spec.secretName exists and was not created by the operator for this account; \
             it is left untouched. Choose another spec.secretName or delete that Secret",
        ));
        return plan;
    }

    let tokens = usable_tokens(o.record);
    plan.unpublish = (o.record.tokens.is_none() || !delivery.writes_secret()) && o.secret == Ownership::Ours;
    // Compared with what was asked for when the user authorized: providers legitimately grant
    // fewer (or drop meta scopes such as `offline_access`), which must not loop re-authorizations.
    let asked = |t: &'_ crate::store::TokenSet| -> Vec<String> {
        match &o.record.grant {
            Some(g) if !g.requested_scopes.is_empty() => g.requested_scopes.clone(),
            _ => t.scopes.clone(),
        }
    };
    let missing_scopes: Vec<&str> = match tokens {
        Some(t) => {
            let asked = asked(t);
            conn.scopes
                .iter()
                .filter(|s| !asked.contains(s))
                .map(String::as_str)
                .collect()
        }
        None => Vec::new(),
    };
    let moved = tokens.is_some() && grant_moved(conn, o.record);
    let stranded = tokens.is_some() && o.attempt.stranded(conn.rotation, o.now);
    let interactive = conn.source == Source::Link;
    let pending = o.record.pending.as_ref().filter(|p| p.expires_at > o.now);
    let reauthorize = interactive && reauthorize_requested(o.account);
    let outstanding = o
        .link
        .filter(|l| o.record.completed_link.as_deref() != Some(l.nonce.as_str()));
    // While the platform verifies a user there is nothing for a link to do.
    let wanted = interactive
        && pending.is_none()
        && (tokens.is_none()
            || moved
            || stranded
            || !missing_scopes.is_empty()
            || reauthorize
            // A link handed out for a re-authorization request stays until it is used; one issued
            // for a reason that has gone (a late refresh answer arrived) is withdrawn.
            || (outstanding.is_some() && reauthorize_acted(o.account)));
    plan.link = match outstanding {
        _ if !wanted => LinkPlan::Clear,
        Some(l) if !reauthorize && l.exp > o.now.as_second() => LinkPlan::Keep,
        _ => LinkPlan::Issue {
            expires_at: o.now + conn.link_ttl,
        },
    };
    let link_expiry = match &plan.link {
        LinkPlan::Keep => outstanding.map(|l| l.exp),
        LinkPlan::Issue { expires_at } => Some(expires_at.as_second()),
        LinkPlan::Clear => None,
    };

    match tokens {
        None if pending.is_some() => {
            plan.state = AccountState::PendingVerification;
            plan.conditions.push(not_ready(
                Reason::AwaitingVerification,
                "the user authorized; waiting for the platform to confirm the user at POST /verify",
            ));
        }
        None if !interactive => {
            plan.state = AccountState::Error;
            plan.conditions.push(match o.refresh_failure {
                Some(f) => not_ready_owned(
                    Reason::CredentialUnavailable,
                    format!(
                        "{} (attempt {}, retrying at {})",
                        f.message, f.attempts, f.retry_at
                    ),
                ),
                None => not_ready(
                    Reason::CredentialUnavailable,
                    "the credential has not been obtained yet",
                ),
            });
        }
        None if o.record.rejected => {
            plan.state = AccountState::Expired;
            plan.conditions.push(not_ready(
                Reason::RefreshRejected,
                "the provider rejected the refresh token; the user must authorize again through the new link",
            ));
        }
        None => {
            plan.state = AccountState::PendingAuth;
            let err = o.record.flow_error.as_ref().filter(|e| {
                outstanding.is_some_and(|l| l.nonce == e.link)
                    || o.record.completed_link.as_deref() == Some(e.link.as_str())
            });
            plan.conditions.push(match err {
                Some(e) => Cond {
                    type_: crate::api::conditions::READY,
                    ok: false,
                    reason: e.reason,
                    message: e.message.clone(),
                },
                None => not_ready(
                    Reason::AwaitingAuthorization,
                    "waiting for the user to open status.authorizationLink",
                ),
            });
        }
        Some(t) => {
            let expired = t.expires_at.is_some_and(|e| e <= o.now);
            plan.state = match expired {
                false => AccountState::Active,
                // No user can renew a machine credential: the Connection needs fixing.
                true if !interactive => AccountState::Error,
                true => AccountState::Expired,
            };
            plan.publish = delivery.writes_secret() && !o.secret_current;
            let retry_at = o.refresh_failure.map(|f| f.retry_at);
            plan.next_refresh_at = renewal_at(conn, t, o.account)
                .filter(|_| !client_moved(conn, o.record) && !stranded && !o.attempt.busy())
                // While retries back off, the next attempt is what is shown.
                .map(|at| at.max(retry_at.unwrap_or(at)));
            plan.conditions.push(if stranded {
                not_ready_owned(Reason::RefreshOutcomeUnknown, stranded_message(t, expired))
            } else if expired && !interactive {
                not_ready_owned(
                    Reason::CredentialUnavailable,
                    match o.refresh_failure {
                        Some(f) => format!(
                            "the credential expired and could not be renewed: {} (attempt {}, retrying at {})",
                            f.message, f.attempts, f.retry_at
                        ),
                        None => "the credential expired and is being renewed".to_owned(),
                    },
                )
            } else if expired && o.attempt.busy() {
                not_ready(Reason::TokenExpired, "the access token expired while its renewal is still in progress")
            } else if expired {
                not_ready(Reason::TokenExpired, "the access token expired and could not be renewed yet")
            } else if moved {
                not_ready(
                    Reason::ConnectionChanged,
                    "the Connection's endpoints or client id changed since the user authorized; the existing \
                     grant is renewed and revoked only where it was obtained (not at all under a new client id), \
                     and a new link waits for the user",
                )
            } else if !missing_scopes.is_empty() {
                not_ready_owned(
                    Reason::ScopesChanged,
                    format!(
                        "the Connection now asks for scopes the grant lacks ({}); the current token keeps working \
                         until the user authorizes again through the new link",
                        missing_scopes.join(", ")
                    ),
                )
            } else if plan.link != LinkPlan::Clear {
                ready(Reason::Active, "credentials are valid; a re-authorization link is waiting for the user")
            } else if delivery.writes_secret() {
                ready(Reason::Active, "credentials are valid and published")
            } else {
                ready(Reason::Active, "credentials are valid and served by the token broker")
            });
            let renews = plan.next_refresh_at.is_some() || o.refresh_failure.is_some() || stranded;
            plan.conditions
                .extend(renews.then_some(()).map(|()| match o.refresh_failure {
                    _ if stranded => Cond {
                        type_: TOKEN_REFRESH,
                        ok: false,
                        reason: Reason::RefreshOutcomeUnknown,
                        message: "a refresh got no answer; its refresh token is not sent again".into(),
                    },
                    Some(f) => Cond {
                        type_: TOKEN_REFRESH,
                        ok: false,
                        reason: Reason::RefreshFailing,
                        message: format!(
                            "{} (attempt {}, retrying at {})",
                            f.message, f.attempts, f.retry_at
                        ),
                    },
                    None => Cond {
                        type_: TOKEN_REFRESH,
                        ok: true,
                        reason: Reason::Refreshed,
                        message: "token renewal is on schedule".into(),
                    },
                }));
        }
    }

    let retry_at = o.refresh_failure.map(|f| f.retry_at);
    let waiting_until = match o.attempt {
        AttemptState::Waiting { until } => Some(until),
        _ => None,
    };
    let recheck = (conn.source == Source::SecretRef)
        .then(|| o.now + SignedDuration::try_from(SECRET_REF_RECHECK).unwrap_or_default());
    let next = [
        plan.next_refresh_at.map(|t| t.max(retry_at.unwrap_or(t))),
        // The state turns EXPIRED exactly when the access token does.
        tokens.and_then(|t| t.expires_at).filter(|e| *e > o.now),
        link_expiry.and_then(|s| Timestamp::from_second(s).ok()),
        pending.map(|p| p.expires_at),
        // A refresh in flight turns unknown at its timeout.
        waiting_until,
        // An operator-obtained credential that failed is retried at the backoff time.
        retry_at.filter(|_| tokens.is_none() && !interactive),
        recheck,
    ]
    .into_iter()
    .flatten()
    .min();
    plan.requeue_after = next.map(|t| {
        let d = t.duration_since(o.now).max(SignedDuration::from_millis(100));
        Duration::try_from(d).unwrap_or(Duration::from_secs(1))
    });
    plan
}

fn stranded_message(t: &crate::store::TokenSet, expired: bool) -> String {
    let until = match (t.expires_at, expired) {
        (_, true) => "the access token has expired".to_owned(),
        (Some(e), false) => format!("the access token keeps working until {e}"),
        (None, false) => "the access token keeps working".to_owned(),
    };
    format!(
        "a refresh got no answer (timeout, restart or failover) and the provider may have rotated the refresh token; \
         it is not sent again, since this provider revokes the grant when a used token comes back. {until}; \
         the user must authorize again through the new link"
    )
}

fn usable_tokens(record: &Record) -> Option<&crate::store::TokenSet> {
    record.tokens.as_ref().filter(|_| !record.rejected)
}

fn uid(account: &ConnectedAccount) -> String {
    account.metadata.uid.clone().unwrap_or_default()
}

/// The operator acted on the account's re-authorization request (issued a link for it).
fn reauthorize_acted(account: &ConnectedAccount) -> bool {
    let wanted = account
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REAUTHORIZE_ANNOTATION));
    wanted.is_some()
        && wanted
            == account
                .status
                .as_ref()
                .and_then(|s| s.reauthorize_request.as_ref())
}

/// The annotation carries a value the operator has not acted on yet.
pub fn reauthorize_requested(account: &ConnectedAccount) -> bool {
    let wanted = account
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REAUTHORIZE_ANNOTATION));
    let seen = account
        .status
        .as_ref()
        .and_then(|s| s.reauthorize_request.as_ref());
    wanted.is_some() && wanted != seen
}

fn ready(reason: Reason, message: &str) -> Cond {
    Cond {
        type_: crate::api::conditions::READY,
        ok: true,
        reason,
        message: message.to_owned(),
    }
}

fn not_ready(reason: Reason, message: &str) -> Cond {
    not_ready_owned(reason, message.to_owned())
}

fn not_ready_owned(reason: Reason, message: String) -> Cond {
    Cond {
        type_: crate::api::conditions::READY,
        ok: false,
        reason,
        message,
    }
}

mod plan;
pub use plan::{Cond, LinkPlan, Plan};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod attempt_tests;
