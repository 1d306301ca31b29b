//! The gateway's side of the intake over the network: one JSON POST per step to the controller's
//! intake listener, authenticated by the gateway's projected ServiceAccount token.
//!
//! The token file is read on every call, so the kubelet's rotation of the projected token is
//! picked up without a restart. The intake URL is the operator's own setting, never a tenant's,
//! so the egress policy does not apply. Failures are logged and become "unavailable" pages.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// How long one intake call may take: a code exchange includes the provider's token endpoint.
/// With the bounded wait for the Connection's verdict (10 s) it stays inside the gateway's 20 s
/// per request; a slower exchange still completes at the desk, the user reopens the link.
const TIMEOUT: Duration = Duration::from_secs(9);

/// The intake's steps, by path.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    Spent,
    Declined,
    Exchange,
    Submit,
    Verify,
    Inspect,
    Return,
}

impl Op {
    pub fn path(self) -> &'static str {
        match self {
            Op::Spent => "/v1/spent",
            Op::Declined => "/v1/declined",
            Op::Exchange => "/v1/exchange",
            Op::Submit => "/v1/submit",
            Op::Verify => "/v1/verify",
            Op::Inspect => "/v1/inspect",
            Op::Return => "/v1/return",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot build the intake client: {0}")]
    Client(reqwest::Error),
    #[error("cannot read the intake token file {0}: {1}")]
    Token(String, std::io::Error),
}

/// A client of the controller's intake.
pub struct Remote {
    http: reqwest::Client,
    base: url::Url,
    token_file: PathBuf,
}

impl Remote {
    /// A client of the intake at `base`, authenticating with the token in `token_file`. Fails
    /// when the file cannot be read now: a gateway that cannot reach its controller should not
    /// start.
    pub fn new(base: url::Url, token_file: PathBuf) -> Result<Remote, RemoteError> {
        std::fs::metadata(&token_file)
            .map_err(|e| RemoteError::Token(token_file.display().to_string(), e))?;
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(RemoteError::Client)?;
        Ok(Remote {
            http,
            base,
            token_file,
        })
    }

    /// Calls `op` with `body`; `None` (logged) when the intake cannot be reached or answers
    /// anything but its JSON.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(&self, op: Op, body: &Req) -> Option<Resp> {
        // A small file on a tmpfs (the projected token): read in place.
        let token = match std::fs::read_to_string(&self.token_file) {
            Ok(t) => t.trim().to_owned(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the intake token file");
                return None;
            }
        };
        let url = match self.base.join(op.path()) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "bad intake URL");
                return None;
            }
        };
        let sent = self.http.post(url).bearer_auth(token).json(body).send().await;
        match sent {
            Ok(resp) if resp.status().is_success() => match resp.json().await {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(op = ?op, error = %e.without_url(), "unreadable intake answer");
                    None
                }
            },
            Ok(resp) => {
                tracing::warn!(op = ?op, status = resp.status().as_u16(), "the intake refused the gateway");
                None
            }
            Err(e) => {
                tracing::warn!(op = ?op, error = %e.without_url(), "cannot reach the intake");
                None
            }
        }
    }
}
