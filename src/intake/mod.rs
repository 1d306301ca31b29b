//! The intake: how the public gateway hands the results of interactive flows (an authorization
//! code, a typed API key, the platform's verification answer) to the controller, which alone
//! holds the rights on credentials.
//!
//! With `run --role=gateway` the internet-facing process has no Secret rights at all: it parses
//! and checks requests, renders pages, and calls the controller's intake listener
//! ([`server`], `--intake-addr`) over the cluster network with its projected ServiceAccount token
//! ([`remote`]). With `--role=all` the same [`Desk`] is called in process. Either way the
//! controller-side [`Desk`] re-verifies every signed token it is handed.

pub mod desk;
pub mod onward;
pub mod remote;
pub mod server;
pub mod wire;

use std::sync::Arc;

pub use desk::Desk;
use wire::{
    Completed, Completion, Confirmation, Declined, Exchange, Inspected, Inspection, Return, Returned,
    SpentQuery, Submission, Verified,
};

/// The default audience of the gateway's tokens at the intake.
pub const DEFAULT_AUDIENCE: &str = "agentauth.dev/intake";

/// Where the gateway sends flow results: the desk in this process, or the controller's intake.
#[derive(Clone)]
pub enum Intake {
    Local(Arc<Desk>),
    Remote(Arc<remote::Remote>),
}

impl Intake {
    /// Whether the link nonce `q.link` of the account `q.uid` is spent; `false` when unknown.
    pub async fn spent(&self, q: SpentQuery) -> bool {
        match self {
            Intake::Local(d) => d.spent(&q).await,
            Intake::Remote(r) => r.call(remote::Op::Spent, &q).await.unwrap_or(false),
        }
    }

    /// Records that the provider declined the attempt; best effort.
    pub async fn declined(&self, d: Declined) {
        match self {
            Intake::Local(desk) => desk.declined(&d).await,
            Intake::Remote(r) => {
                let _: Option<()> = r.call(remote::Op::Declined, &d).await;
            }
        }
    }

    /// Exchanges an authorization code and stores the credential.
    pub async fn exchange(&self, x: Exchange) -> Completed {
        match self {
            Intake::Local(d) => d.exchange(&x).await,
            Intake::Remote(r) => r
                .call(remote::Op::Exchange, &x)
                .await
                .unwrap_or(Err(Completion::Unavailable)),
        }
    }

    /// Checks and stores a hosted-form credential.
    pub async fn submit(&self, s: Submission) -> Completed {
        match self {
            Intake::Local(d) => d.submit(&s).await,
            Intake::Remote(r) => r
                .call(remote::Op::Submit, &s)
                .await
                .unwrap_or(Err(Completion::Unavailable)),
        }
    }

    /// Applies the platform's verification answer.
    pub async fn verify(&self, c: Confirmation) -> Verified {
        match self {
            Intake::Local(d) => d.verify(&c).await,
            Intake::Remote(r) => r
                .call(remote::Op::Verify, &c)
                .await
                .unwrap_or(Verified::Unavailable),
        }
    }

    /// What the platform may see of a verification request.
    pub async fn inspect(&self, i: Inspection) -> Inspected {
        match self {
            Intake::Local(d) => d.inspect(&i).await,
            Intake::Remote(r) => r
                .call(remote::Op::Inspect, &i)
                .await
                .unwrap_or(Inspected::Unavailable),
        }
    }

    /// Publishes a confirmed held-back credential once its browser is back.
    pub async fn returned(&self, b: Return) -> Returned {
        match self {
            Intake::Local(d) => d.returned(&b).await,
            Intake::Remote(r) => r
                .call(remote::Op::Return, &b)
                .await
                .unwrap_or(Returned::Unavailable),
        }
    }
}
