//! What the gateway and the controller's intake say to each other: one request type per step of
//! an interactive flow, and the outcomes the gateway turns into pages.
//!
//! Guarantees: a request carries the signed link, state or request id it acts on, never a bare
//! account name, so the controller re-verifies what it is asked to do; no outcome carries a token,
//! a key or remote error text (a form check's refusal is the operator's own sentence).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::onward::Onward;

/// What the user sees after a stored credential.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "next")]
pub enum Next {
    /// Stored; then the success page, or the allowed `successRedirectUrl`.
    Done { onward: Onward },
    /// Held back: the platform's verify page (allowed) with the one-time request id.
    Verify { url: url::Url },
}

/// Why nothing (new) was stored.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "refused")]
pub enum Completion {
    /// An authorization already completed through this link.
    AlreadyDone,
    /// The link or state no longer names a live account and its current link.
    Spent,
    /// The Kubernetes API could not be read or written, or the intake could not be reached.
    Unavailable,
    /// The Connection is being edited and its new form is not validated yet.
    Updating,
    /// The Connection cannot be used (bad settings, missing client secret).
    Unconfigured,
    /// The provider did not accept the authorization code.
    ExchangeFailed,
    /// The app did not accept the submitted credential; the sentence is shown on the form.
    CheckFailed { message: String },
    /// This link has used up its credential checks for now.
    TooManyChecks,
    /// The Connection's verification page is not on the allowlist (its origin, for the page);
    /// nothing was stored.
    VerifyNotAllowed { origin: String },
}

/// The end of a flow as the intake reports it.
pub type Completed = Result<Next, Completion>;

/// Exchange the authorization code of the attempt `state` and store the credential. No `Debug`:
/// the code is a credential.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exchange {
    pub state: String,
    pub code: String,
}

/// The provider answered the attempt `state` with an OAuth `error` code instead of a code.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Declined {
    pub state: String,
    pub error: String,
}

/// Whether an authorization already completed through the link nonce `link` of the account
/// `uid`.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpentQuery {
    pub uid: String,
    pub link: String,
}

/// The platform inspects a verification request (after the gateway authenticated and authorized
/// it): whose account, and who the provider says signed in.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inspection {
    pub request_id: String,
}

/// What the platform learns from an [`Inspection`]. Never a credential.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "request")]
pub enum Inspected {
    Pending {
        /// The account's `spec.identifier`.
        identifier: String,
        /// Who signed in, as the provider said (OpenID Connect), when known.
        provider_identity: Option<crate::api::ProviderIdentity>,
        /// The platform already confirmed the user.
        confirmed: bool,
    },
    /// Already answered, expired, or the account is gone.
    Gone,
    Unavailable,
}

/// The browser that started the flow came back with the request id (the gateway checked its
/// cookie): publish the held-back credential if the platform confirmed it.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Return {
    pub request_id: String,
}

/// What became of a [`Return`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "returned")]
pub enum Returned {
    /// Published; then the success page, or the allowed `successRedirectUrl`.
    Published {
        onward: Onward,
    },
    /// The platform has not confirmed the user (yet).
    NotConfirmed,
    /// Already published or discarded, expired, or the account is gone.
    Gone,
    Unavailable,
}

/// Check (when the Connection asks) and store what the user typed into the hosted form of `link`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Submission {
    /// The link token the form was opened through.
    pub link: String,
    /// The form's values, already validated by the gateway; validated again by the intake.
    pub values: BTreeMap<String, String>,
}

/// The RBAC verb a platform needs on `connectedaccounts` to confirm users.
pub const VERIFY_VERB: &str = "verify";

/// The platform's answer for a verification request. No `Debug`: it carries the platform's token,
/// which the desk authenticates and authorizes again.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Confirmation {
    pub request_id: String,
    /// The platform's bearer token (audience `--verify-audience`).
    pub platform: String,
    /// The platform's user; ignored with `refuse`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    /// The platform refuses the user (e.g. the provider's identity is not its user's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refuse: bool,
}

/// What became of a [`Confirmation`].
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Verified {
    /// The identifier matched: the held-back credential is confirmed, published when the browser
    /// that started the flow returns ([`Return`]).
    Confirmed,
    /// Another identifier: the held-back credential is discarded.
    Mismatch,
    /// The platform refused the user: the held-back credential is discarded.
    Refused,
    /// Already answered or expired.
    Gone,
    /// The account the request names no longer exists.
    Unknown,
    /// The platform's token is not accepted, or its identity may not `verify` this account.
    Forbidden,
    /// Try again in a moment.
    Unavailable,
}
