//! The HTTP call to a provider's API: the credential in its header, the answer read up to a limit,
//! and one retry after a rejected credential when another one is there now (the mounted files
//! changed since they were read, or the broker, asked again, has a new token). Where the call goes is [`super::routing`].

use std::time::Duration;

use axum::body::Bytes;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::credentials::Credential;
use super::error::ApiError;
use super::target::Target;

/// A provider's answer, read whole (up to a limit), and the credential that got it.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub credential: Credential,
}

pub struct Upstream {
    http: reqwest::Client,
}

impl Upstream {
    pub fn new() -> Result<Upstream, reqwest::Error> {
        // No redirects: they are the agent's business (the proxy passes them on); never carry the header along.
        let http = crate::http::client_builder(
            concat!("agent-auth-operator-sidecar/", env!("CARGO_PKG_VERSION")),
            Duration::from_secs(10),
            Duration::from_secs(60),
        )
        .build()?;
        Ok(Upstream { http })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends the request `build` makes for the current credential, with the credential's header
    /// set (replacing any such header of the request). When `auth_failed` says the provider rejected
    /// the credential and the account has another one now, builds and sends once more.
    pub async fn send(
        &self,
        account: &Target<'_>,
        limit: usize,
        auth_failed: &(dyn Fn(StatusCode, &[u8]) -> bool + Sync),
        build: &(dyn Fn(&Credential) -> Result<reqwest::RequestBuilder, ApiError> + Sync),
    ) -> Result<Answer, ApiError> {
        let mut cred = account.credential()?;
        let mut retried = false;
        loop {
            let mut req = build(&cred)?
                .build()
                .map_err(|e| ApiError::ToolDefinition(e.without_url().to_string()))?;
            let name =
                HeaderName::from_bytes(cred.header_name.as_bytes()).map_err(|_| ApiError::Credential {
                    account: account.name().to_owned(),
                    source: super::credentials::CredentialError::Empty,
                })?;
            let mut value = HeaderValue::from_str(&cred.header_value).map_err(|_| ApiError::Credential {
                account: account.name().to_owned(),
                source: super::credentials::CredentialError::Empty,
            })?;
            value.set_sensitive(true);
            req.headers_mut().insert(name, value);
            let resp = self
                .http
                .execute(req)
                .await
                .map_err(|e| ApiError::Unreachable(describe(e)))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = read_limited(resp, limit).await?;
            if !retried
                && auth_failed(status, &body)
                && let Some(fresh) = account.after_rejection(&cred).await?
            {
                tracing::info!(account = %account.name(), "credential rejected and replaced meanwhile; retrying with the new one");
                cred = fresh;
                retried = true;
                continue;
            }
            return Ok(Answer {
                status,
                headers,
                body,
                credential: cred,
            });
        }
    }
}

/// The error and its causes, without the URL (it may carry the agent's query).
fn describe(e: reqwest::Error) -> String {
    crate::http::describe_chain(&e.without_url())
}

async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<Bytes, ApiError> {
    crate::http::read_limited(resp, limit).await.map_err(|e| match e {
        crate::http::ReadError::TooLarge(n) => ApiError::TooLarge(n),
        crate::http::ReadError::Read(e) => ApiError::Unreachable(describe(e)),
    })
}
