//! Where credentials live.
//!
//! - [`operator_copy`]: the operator's own copy, one Secret per account in the operator's namespace,
//!   out of reach of agent pods. It holds refresh tokens and is the source of truth: it is written
//!   first, with optimistic concurrency, so a crash never loses a rotated refresh token.
//! - [`agent_secret`]: the Secret agent pods mount, in the account's namespace, rebuilt from the
//!   operator's copy whenever it differs or is deleted.
//! - [`seal`]: the operator's copies sealed at rest under the operator's own keys.

pub mod agent_secret;
pub mod finalizer;
pub mod operator_copy;
mod record;
pub mod seal;
pub mod secret_ref;
pub mod signing_key;

pub use record::{
    FlowError, Grant, PendingVerification, Record, RefreshAttempt, Superseded, TokenSet, token_sha256,
};

/// Label on every Secret the operator creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "agent-auth-operator");
/// Label that says what a managed Secret is for (`credentials` or `agent`).
pub const ROLE_LABEL: &str = "agentauth.dev/role";
/// Label naming the account a Secret belongs to.
pub const ACCOUNT_LABEL: &str = "agentauth.dev/account";
/// Label naming the account's namespace (on the operator's copy, which lives elsewhere).
pub const ACCOUNT_NAMESPACE_LABEL: &str = "agentauth.dev/account-namespace";
/// Label with the account's UID (on the operator's copy).
pub const ACCOUNT_UID_LABEL: &str = "agentauth.dev/account-uid";
/// Field manager for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "agent-auth-operator";
