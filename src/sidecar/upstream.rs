//! Calls to provider APIs: where an account's API lives, the credential in its header, and one
//! retry after a rejected credential when the mounted files have changed since they were read.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use super::Account;
use super::credentials::Credential;
use super::error::ApiError;
use super::loader::Catalog;

/// A provider's answer, read whole (up to a limit), and the credential that got it.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub credential: Credential,
}

pub struct Upstream {
    http: reqwest::Client,
    overrides: BTreeMap<String, Url>,
}

/// A base URL from data (catalog files, credential metadata): https, or http on a loopback host;
/// no credentials, query or fragment.
pub fn checked_base(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| e.to_string())?;
    let loopback = url.host_str().is_some_and(crate::http::is_loopback_host);
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    if !scheme_ok || url.host().is_none() {
        return Err("must be an https URL (or http on a loopback address)".into());
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err("must not carry credentials, a query or a fragment".into());
    }
    Ok(url)
}

impl Upstream {
    pub fn new(overrides: BTreeMap<String, Url>) -> Result<Upstream, reqwest::Error> {
        // No redirects: they are the agent's business (the proxy passes them on); never carry the header along.
        let http = crate::http::client_builder(
            concat!("agent-auth-operator-sidecar/", env!("CARGO_PKG_VERSION")),
            Duration::from_secs(10),
            Duration::from_secs(60),
        )
        .build()?;
        Ok(Upstream { http, overrides })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The API base of an account: `--api-base` for its provider, else the base its credential's
    /// metadata names (`instance_url`, `api_url`) when [`super::trust::metadata_base`] accepts it
    /// (a refused one fails the call), else the tool catalog's `baseUrl` for the provider (only
    /// providers the sidecar does not know have one), else the operator's provider catalog (with
    /// `{subdomain}` from the credential).
    pub fn base_url(
        &self,
        account: &Account,
        provider: Option<&str>,
        cred: &Credential,
        catalog: &Catalog,
    ) -> Result<Url, ApiError> {
        if let Some(u) = provider.and_then(|p| self.overrides.get(p)) {
            return Ok(u.clone());
        }
        if let Some(found) = super::trust::metadata_base(provider, cred) {
            return found.map_err(|problem| {
                tracing::warn!(account = %account.name, %problem, "refused the API base in the credential's metadata");
                ApiError::UntrustedBase {
                    account: account.name.clone(),
                    problem,
                }
            });
        }
        let Some(provider) = provider else {
            return Err(ApiError::NoBase(account.name.clone()));
        };
        if let Some(b) = catalog
            .providers
            .get(provider)
            .and_then(|p| p.base_url.as_deref())
        {
            return checked_base(b).map_err(|_| ApiError::NoBase(account.name.clone()));
        }
        let preset = crate::auth::catalog::lookup(provider).and_then(|p| p.api_base_url.clone());
        let Some(mut base) = preset else {
            return Err(ApiError::NoBase(account.name.clone()));
        };
        if base.contains("{subdomain}") {
            let sub = cred
                .fields
                .get("subdomain")
                .cloned()
                .or_else(|| {
                    cred.metadata
                        .get("subdomain")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned)
                })
                .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
                .ok_or_else(|| ApiError::NoBase(account.name.clone()))?;
            base = base.replace("{subdomain}", &sub);
        }
        checked_base(&base).map_err(|_| ApiError::NoBase(account.name.clone()))
    }

    /// Sends the request `build` makes for the current credential, with the credential's header
    /// set (replacing any such header of the request). When `auth_failed` says the provider rejected
    /// the credential and the mounted files now hold another one, builds and sends once more.
    pub async fn send(
        &self,
        account: &Account,
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
                    account: account.name.clone(),
                    source: super::credentials::CredentialError::Empty,
                })?;
            let mut value = HeaderValue::from_str(&cred.header_value).map_err(|_| ApiError::Credential {
                account: account.name.clone(),
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
            if !retried && auth_failed(status, &body) {
                let fresh = account.credential()?;
                if !fresh.same_as(&cred) {
                    tracing::info!(account = %account.name, "credential rejected and rotated meanwhile; retrying with the new one");
                    cred = fresh;
                    retried = true;
                    continue;
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_from_data_must_be_https_or_loopback() {
        assert!(checked_base("https://x.my.salesforce.com").is_ok());
        assert!(checked_base("http://127.0.0.1:8080/api").is_ok());
        assert!(checked_base("http://localhost:1").is_ok());
        for bad in [
            "http://evil.example.com",
            "https://u:p@x.com",
            "https://x.com/?a=1",
            "file:///etc",
            "nonsense",
        ] {
            assert!(checked_base(bad).is_err(), "{bad}");
        }
    }
}
