//! Where a call goes: the API base URL of an account, from the pod spec (`--api-base`), the
//! credential's metadata, the tool catalog or the operator's provider catalog, in that order.
//!
//! Guarantees: a base that comes from data (catalog files, credential metadata) is https (or http
//! on loopback) and carries no credentials, query or fragment ([`checked_base`]); a metadata base is
//! used only as [`super::trust`] allows; an account without a usable base fails the call with
//! `no_api_base` instead of falling back to a guess. The HTTP call itself is [`super::upstream`].

use std::collections::BTreeMap;

use url::Url;

use super::credentials::Credential;
use super::error::ApiError;

/// The `--api-base` overrides by provider; everything else is looked up per call.
pub struct Routes {
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

impl Routes {
    pub fn new(overrides: BTreeMap<String, Url>) -> Routes {
        Routes { overrides }
    }

    /// The API base of `account`: `--api-base` for its provider, else the base its credential's
    /// metadata names (`instance_url`, `api_url`) when [`super::trust::metadata_base`] accepts it
    /// (a refused one fails the call), else `catalog_base`, the tool catalog's `baseUrl` for the
    /// provider (only providers the sidecar does not know have one), else the operator's provider
    /// catalog (with `{subdomain}` from the credential).
    pub fn base_url(
        &self,
        account: &str,
        provider: Option<&str>,
        cred: &Credential,
        catalog_base: Option<&str>,
    ) -> Result<Url, ApiError> {
        if let Some(u) = provider.and_then(|p| self.overrides.get(p)) {
            return Ok(u.clone());
        }
        if let Some(found) = super::trust::metadata_base(provider, cred) {
            return found.map_err(|problem| {
                tracing::warn!(account, %problem, "refused the API base in the credential's metadata");
                ApiError::UntrustedBase {
                    account: account.to_owned(),
                    problem,
                }
            });
        }
        let Some(provider) = provider else {
            return Err(ApiError::NoBase(account.to_owned()));
        };
        if let Some(b) = catalog_base {
            return checked_base(b).map_err(|_| ApiError::NoBase(account.to_owned()));
        }
        let preset = crate::auth::catalog::lookup(provider).and_then(|p| p.api_base_url.clone());
        let Some(mut base) = preset else {
            return Err(ApiError::NoBase(account.to_owned()));
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
                .ok_or_else(|| ApiError::NoBase(account.to_owned()))?;
            base = base.replace("{subdomain}", &sub);
        }
        checked_base(&base).map_err(|_| ApiError::NoBase(account.to_owned()))
    }
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
