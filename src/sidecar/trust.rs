//! Where a token may go: the rules that keep data (tool files, credential metadata) from steering a
//! credential to another host.
//!
//! Guarantees:
//! - A tool file (a ConfigMap, editable by whoever may edit ConfigMaps in the namespace) may add
//!   providers and tools, but a provider the sidecar knows on its own (the operator's provider
//!   catalog or the built-in `tools.yaml`) keeps its base URL, and no file sets a header that carries
//!   or replaces credentials (`Authorization`, `Proxy-Authorization`, `Cookie`) for it, nor `Host` for
//!   any provider (a `Host` other than the URL's could route the request to another site on a shared
//!   front end). A file that tries is refused whole, see [`super::tool_catalog`].
//! - A base URL taken from a credential's metadata (Salesforce `instance_url`, Zoom `api_url`) is used
//!   only for the provider that documents it, only under that key, and only when it is `https` on a
//!   host below the provider's own domain, on the default port. Anything else is refused, never
//!   guessed around: the call fails with `untrusted_api_base`.
//!
//! The pod spec is trusted (whoever writes it can mount the Secret anyway): `--api-base` wins over
//! everything here.

use url::{Host, Url};

use super::credentials::Credential;

/// Headers that carry or replace a credential; never set by a tool file for a built-in provider.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// A base URL in a credential's metadata that a provider documents, and the domains it may name.
struct MetadataBase {
    provider: &'static str,
    key: &'static str,
    /// Host suffixes, each starting with a dot: the host must end with one of them.
    domains: &'static [&'static str],
}

/// The providers whose API lives at a per-customer host reported by the token response.
const METADATA_BASES: [MetadataBase; 2] = [
    // Orgs: `https://na1.salesforce.com`, My Domain `https://acme.my.salesforce.com`, sandboxes
    // `https://acme--dev.sandbox.my.salesforce.com`. Other hosts: `--api-base salesforce=URL`.
    MetadataBase {
        provider: "salesforce",
        key: "instance_url",
        domains: &[".salesforce.com"],
    },
    MetadataBase {
        provider: "zoom",
        key: "api_url",
        domains: &[".zoom.us"],
    },
];

/// The metadata keys that may name an API base at all.
const METADATA_KEYS: [&str; 2] = ["instance_url", "api_url"];

/// Whether `name` is a provider the sidecar knows without any tool file.
pub fn built_in_provider(name: &str, built_in_tools_providers: &[String]) -> bool {
    crate::auth::catalog::lookup(name).is_some() || built_in_tools_providers.iter().any(|p| p == name)
}

/// Why a tool file's provider entry is refused, if it is.
pub fn user_provider_problem(
    name: &str,
    base_url: Option<&str>,
    headers: impl IntoIterator<Item = impl AsRef<str>>,
    built_in: bool,
) -> Option<String> {
    if built_in && base_url.is_some() {
        return Some(format!(
            "provider {name} is built in: a tools file cannot change its baseUrl (its tokens would go \
             there); set `--api-base {name}=URL` in the pod spec instead"
        ));
    }
    for h in headers {
        let h = h.as_ref().to_ascii_lowercase();
        if h == "host" {
            return Some(format!(
                "provider {name}: a tools file cannot set the Host header"
            ));
        }
        if built_in && CREDENTIAL_HEADERS.contains(&h.as_str()) {
            return Some(format!(
                "provider {name} is built in: a tools file cannot set its {h} header (the mounted \
                 credential decides how it authenticates)"
            ));
        }
    }
    None
}

/// Why a metadata base URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UntrustedBase {
    #[error("the credential's {key} cannot be an API base for {provider} accounts")]
    NotDocumented { key: &'static str, provider: String },
    #[error("the credential's {key} is not an https URL on a host under {domains}")]
    WrongHost { key: &'static str, domains: String },
}

/// The API base a credential's metadata names, when it names one: `None` when it names none;
/// an error when it names one that the rules above refuse.
pub fn metadata_base(provider: Option<&str>, cred: &Credential) -> Option<Result<Url, UntrustedBase>> {
    let (key, value) = METADATA_KEYS
        .iter()
        .find_map(|k| Some((*k, cred.metadata.get(*k)?.as_str()?)))?;
    let Some(rule) = METADATA_BASES
        .iter()
        .find(|r| Some(r.provider) == provider && r.key == key)
    else {
        return Some(Err(UntrustedBase::NotDocumented {
            key,
            provider: provider.unwrap_or("unknown").to_owned(),
        }));
    };
    Some(
        checked(value, rule.domains).ok_or_else(|| UntrustedBase::WrongHost {
            key,
            domains: rule.domains.join(" or "),
        }),
    )
}

/// `value` as an https URL on the default port, a DNS host under one of `domains`, without
/// credentials, query or fragment.
fn checked(value: &str, domains: &[&str]) -> Option<Url> {
    let url = Url::parse(value).ok()?;
    let Some(Host::Domain(host)) = url.host() else {
        return None;
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let under = domains.iter().any(|d| host.len() > d.len() && host.ends_with(d));
    let clean = url.scheme() == "https"
        && url.port().is_none()
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    (under && clean).then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(metadata: serde_json::Value) -> Credential {
        let dir = std::env::temp_dir().join(format!(
            "sidecar-trust-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("authorization"), "Bearer t-0123456789").unwrap();
        std::fs::write(
            dir.join("credentials.json"),
            serde_json::json!({"metadata": metadata}).to_string(),
        )
        .unwrap();
        let c = Credential::read(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        c
    }

    #[test]
    fn salesforce_instance_urls_must_be_https_under_salesforce_com() {
        for good in [
            "https://na1.salesforce.com",
            "https://acme.my.salesforce.com",
            "https://acme--dev.sandbox.my.salesforce.com/",
        ] {
            let c = cred(serde_json::json!({"instance_url": good}));
            let got = metadata_base(Some("salesforce"), &c).unwrap().unwrap();
            assert_eq!(got.as_str().trim_end_matches('/'), good.trim_end_matches('/'));
        }
        for bad in [
            "http://acme.my.salesforce.com",
            "https://salesforce.com.evil.example",
            "https://evilsalesforce.com",
            "https://.salesforce.com",
            "https://acme.my.salesforce.com:8443",
            "https://u:p@acme.my.salesforce.com",
            "https://127.0.0.1",
            "http://127.0.0.1:8080/sfdc",
            "not a url",
        ] {
            let c = cred(serde_json::json!({"instance_url": bad}));
            assert!(
                matches!(
                    metadata_base(Some("salesforce"), &c),
                    Some(Err(UntrustedBase::WrongHost { .. }))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn metadata_bases_count_only_for_the_provider_that_documents_them() {
        let c = cred(serde_json::json!({"instance_url": "https://acme.my.salesforce.com"}));
        for other in [Some("github"), Some("zoom"), None] {
            assert!(
                matches!(
                    metadata_base(other, &c),
                    Some(Err(UntrustedBase::NotDocumented { .. }))
                ),
                "{other:?}"
            );
        }
        let zoom = cred(serde_json::json!({"api_url": "https://api.zoom.us"}));
        assert!(metadata_base(Some("zoom"), &zoom).unwrap().is_ok());
        let none = cred(serde_json::json!({"team_id": "T1"}));
        assert!(metadata_base(Some("slack"), &none).is_none());
    }

    #[test]
    fn tool_files_cannot_move_or_reauthenticate_built_in_providers() {
        let built_in = vec!["github".to_owned()];
        assert!(built_in_provider("github", &built_in));
        assert!(built_in_provider("salesforce", &[]));
        assert!(!built_in_provider("acme", &built_in));
        let none: [&str; 0] = [];
        assert!(
            user_provider_problem("github", Some("https://x.example"), none, true)
                .unwrap()
                .contains("cannot change its baseUrl")
        );
        assert!(user_provider_problem("acme", Some("https://x.example"), none, false).is_none());
        assert!(user_provider_problem("github", None, ["X-GitHub-Api-Version"], true).is_none());
        assert!(user_provider_problem("github", None, ["Authorization"], true).is_some());
        assert!(user_provider_problem("acme", None, ["Authorization"], false).is_none());
        assert!(user_provider_problem("acme", None, ["HOST"], false).is_some());
    }
}
