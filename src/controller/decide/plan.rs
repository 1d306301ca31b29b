//! What `decide` returns: the plan for one account (state, conditions, link, writes, timing).

use std::time::Duration;

use jiff::Timestamp;

use crate::api::{AccountState, Delivery, Reason};

/// What to do with the authorization link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkPlan {
    Keep,
    /// Issue a new link valid until the given time.
    Issue {
        expires_at: Timestamp,
    },
    Clear,
}

/// A condition to set: type, status, reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub type_: &'static str,
    pub ok: bool,
    pub reason: Reason,
    pub message: String,
}

/// The outcome of `decide`.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub state: AccountState,
    pub conditions: Vec<Cond>,
    pub link: LinkPlan,
    /// How the credential reaches agents; an agent Secret exists only when it `writes_secret`.
    pub delivery: Delivery,
    /// Write the agent Secret from the record's tokens.
    pub publish: bool,
    /// `spec.disconnected`: revoke and delete every copy of the credentials.
    pub remove_credentials: bool,
    /// The agent Secret is ours but the operator's copy holds no credential (deleted by hand), or
    /// delivery no longer writes one: delete it, so that status and Secret agree.
    pub unpublish: bool,
    pub next_refresh_at: Option<Timestamp>,
    /// Reconcile again after this long (timed work: refresh, link expiry, retry).
    pub requeue_after: Option<Duration>,
}
