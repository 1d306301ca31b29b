//! Built-in provider presets: endpoints and quirks of popular apps, so that a Connection can say
//! `provider: google` instead of spelling out URLs. Anything set explicitly on the Connection wins.
//!
//! The presets are data, in `catalog.yaml` next to this file, compiled into the binary and parsed
//! once on first use. A unit test parses and checks every entry, so a broken file never ships; if it
//! somehow did, the catalog is empty (and the error logged) rather than the operator crashing.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::Deserialize;

use crate::api::{AuthType, CredentialForm, TokenEndpointAuthMethod};
use crate::auth::quirks::TokenQuirks;

const SOURCE: &str = include_str!("catalog.yaml");

/// Endpoints, defaults and quirks of one provider, as written in `catalog.yaml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Preset {
    pub name: String,
    pub display_name: String,
    /// `OAuth2` presets fill `spec.oauth2`; `APIKey` presets bring a hosted form.
    pub auth_type: AuthType,
    #[serde(default)]
    pub authorization_url: Option<String>,
    #[serde(default)]
    pub token_url: Option<String>,
    /// Where refresh grants go when the provider has a separate endpoint for them (Figma).
    #[serde(default)]
    pub refresh_url: Option<String>,
    /// An RFC 7009 endpoint; providers with a non-standard revocation API have none here.
    #[serde(default)]
    pub revocation_url: Option<String>,
    /// An OpenID Connect userinfo endpoint, asked who the user is when no `id_token` comes.
    #[serde(default)]
    pub userinfo_url: Option<String>,
    /// Requested when the Connection lists no scopes.
    #[serde(default)]
    pub default_scopes: Vec<String>,
    /// Always requested in user flows (Microsoft's `offline_access`: no refresh token without it).
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Granted but never listed in token responses.
    #[serde(default)]
    pub unlisted_scopes: Vec<String>,
    /// Requested scope name -> the name the provider lists it under when granted.
    #[serde(default)]
    pub scope_aliases: BTreeMap<String, String>,
    #[serde(default = "default_separator")]
    pub scope_separator: String,
    /// The authorization URL parameter that carries the scopes (Slack user tokens: `user_scope`).
    #[serde(default = "default_scope_param")]
    pub scope_param: String,
    #[serde(default)]
    pub token_endpoint_auth_method: Option<TokenEndpointAuthMethod>,
    #[serde(default)]
    pub extra_authorization_params: BTreeMap<String, String>,
    #[serde(default = "default_pkce")]
    pub pkce: bool,
    /// The object in the token response that holds the user's token (Slack `authed_user`).
    #[serde(default)]
    pub token_path: Option<String>,
    /// Flat metadata key -> dotted path in the token response, kept for agents.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Token lifetime assumed when the response has no `expires_in` (Salesforce).
    #[serde(default)]
    pub default_expires_in: Option<u64>,
    /// The REST base agents call (a later sidecar uses it).
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// The provider's OAuth documentation.
    #[serde(default)]
    pub docs: Option<String>,
    /// The hosted form of an `APIKey` preset.
    #[serde(default)]
    pub form: Option<CredentialForm>,
    /// What the provider does with a used refresh token; unset means `Strict`.
    #[serde(default)]
    pub rotation: Option<crate::api::RotationSettings>,
}

fn default_separator() -> String {
    " ".to_owned()
}

fn default_scope_param() -> String {
    "scope".to_owned()
}

fn default_pkce() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    providers: Vec<Preset>,
}

/// Why the catalog file is unusable. Only ever seen by the unit test or in a log line.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog.yaml does not parse: {0}")]
    Parse(#[from] serde_saphyr::Error),
    #[error("preset {name}: {problem}")]
    Invalid { name: String, problem: String },
}

static CATALOG: LazyLock<Vec<Preset>> = LazyLock::new(|| match parse(SOURCE) {
    Ok(presets) => presets,
    Err(e) => {
        tracing::error!(error = %e, "the built-in provider catalog is broken; no presets are available");
        Vec::new()
    }
});

fn parse(source: &str) -> Result<Vec<Preset>, CatalogError> {
    let file: CatalogFile = serde_saphyr::from_str(source)?;
    validate(&file.providers)?;
    Ok(file.providers)
}

/// Every rule the rest of the code relies on: unique names, https URLs, endpoints for OAuth2
/// presets, a form for APIKey presets, no credential among the metadata keys.
fn validate(presets: &[Preset]) -> Result<(), CatalogError> {
    let invalid = |p: &Preset, problem: String| CatalogError::Invalid {
        name: p.name.clone(),
        problem,
    };
    let mut seen = std::collections::BTreeSet::new();
    for p in presets {
        if p.name.is_empty() || !seen.insert(p.name.as_str()) {
            return Err(invalid(p, "name is empty or not unique".into()));
        }
        for (what, url) in [
            ("authorizationUrl", &p.authorization_url),
            ("tokenUrl", &p.token_url),
            ("refreshUrl", &p.refresh_url),
            ("revocationUrl", &p.revocation_url),
            ("userinfoUrl", &p.userinfo_url),
            ("apiBaseUrl", &p.api_base_url),
            ("docs", &p.docs),
        ] {
            if let Some(url) = url {
                // `{subdomain}` stands for a per-customer host label.
                let concrete = url.replace("{subdomain}", "example");
                let parsed = url::Url::parse(&concrete).map_err(|e| invalid(p, format!("{what}: {e}")))?;
                if parsed.scheme() != "https" {
                    return Err(invalid(p, format!("{what} is not https")));
                }
            }
        }
        match p.auth_type {
            AuthType::OAuth2 => {
                if p.authorization_url.is_none() || p.token_url.is_none() {
                    return Err(invalid(
                        p,
                        "OAuth2 presets need authorizationUrl and tokenUrl".into(),
                    ));
                }
                if p.token_endpoint_auth_method.is_none() {
                    return Err(invalid(p, "OAuth2 presets state tokenEndpointAuthMethod".into()));
                }
            }
            AuthType::APIKey => {
                if p.form.is_none() {
                    return Err(invalid(p, "APIKey presets need a form".into()));
                }
            }
            other => return Err(invalid(p, format!("authType {other:?} has no presets"))),
        }
        if p.scope_separator.is_empty() || p.scope_param.is_empty() {
            return Err(invalid(p, "scopeSeparator and scopeParam cannot be empty".into()));
        }
        if let Some(bad) = p.metadata.keys().find(|k| crate::auth::fields::is_reserved(k)) {
            return Err(invalid(
                p,
                format!("metadata key {bad:?} is a credential or a token field"),
            ));
        }
        if let Some(bad) = p
            .metadata
            .values()
            .find(|path| path.split('.').any(crate::auth::fields::is_credential))
        {
            return Err(invalid(
                p,
                format!("metadata path {bad:?} points at a credential"),
            ));
        }
    }
    Ok(())
}

/// The preset of that name, if the catalog has one.
pub fn lookup(name: &str) -> Option<&'static Preset> {
    CATALOG.iter().find(|p| p.name == name)
}

/// The preset a Connection's `spec.provider` names: none without one, an error naming the known
/// presets for an unknown name.
pub fn resolve(provider: Option<&str>) -> Result<Option<&'static Preset>, crate::auth::error::ConfigError> {
    provider
        .map(|name| {
            lookup(name).ok_or_else(|| {
                crate::auth::error::ConfigError(format!(
                    "unknown provider {name:?}; known: {}",
                    names().join(", ")
                ))
            })
        })
        .transpose()
}

/// Names of every preset, for error messages.
pub fn names() -> Vec<&'static str> {
    CATALOG.iter().map(|p| p.name.as_str()).collect()
}

/// Every preset, in catalog order.
pub fn presets() -> &'static [Preset] {
    &CATALOG
}

impl Preset {
    pub fn extra_params(&self) -> BTreeMap<String, String> {
        self.extra_authorization_params.clone()
    }

    /// How the token responses of this provider are normalised.
    pub fn token_quirks(&self) -> TokenQuirks {
        TokenQuirks {
            token_path: self.token_path.clone(),
            metadata: Some(self.metadata.clone()),
            scope_separator: self.scope_separator.clone(),
            default_expires_in: self.default_expires_in,
            scope_aliases: self.scope_aliases.clone(),
            unlisted_scopes: self.unlisted_scopes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_parses_and_every_entry_is_valid() {
        let presets = parse(SOURCE).unwrap();
        assert_eq!(presets.len(), 20);
        assert_eq!(
            super::presets(),
            presets.as_slice(),
            "the runtime catalog is the file"
        );
        for name in [
            "google",
            "slack",
            "notion",
            "hubspot",
            "github",
            "microsoft",
            "salesforce",
            "linear",
            "atlassian",
            "zoom",
            "dropbox",
            "asana",
            "gitlab",
            "discord",
            "zendesk",
            "box",
            "figma",
            "airtable",
            "intercom",
            "stripe",
        ] {
            assert!(lookup(name).is_some(), "{name} is missing");
        }
        assert!(lookup("nope").is_none());
        assert_eq!(names().len(), presets.len());
    }

    #[test]
    fn validation_catches_broken_entries() {
        let base = lookup("google").unwrap().clone();
        let check = |mutate: &dyn Fn(&mut Preset)| {
            let mut p = base.clone();
            mutate(&mut p);
            validate(&[p]).unwrap_err().to_string()
        };
        assert!(check(&|p| p.token_url = Some("http://x.test/token".into())).contains("https"));
        assert!(check(&|p| p.authorization_url = None).contains("authorizationUrl"));
        assert!(check(&|p| p.auth_type = AuthType::APIKey).contains("form"));
        assert!(
            check(&|p| {
                p.metadata.insert("refresh_token".into(), "x".into());
            })
            .contains("credential")
        );
        assert!(
            check(&|p| {
                p.metadata
                    .insert("user".into(), "authed_user.access_token".into());
            })
            .contains("credential")
        );
        let dup = validate(&[base.clone(), base.clone()]).unwrap_err().to_string();
        assert!(dup.contains("unique"), "{dup}");
        assert!(
            parse("providers: [{name: x, displayName: X, authType: OAuth2, tokenUrll: y}]").is_err(),
            "typos in field names are caught"
        );
    }

    #[test]
    fn the_presets_carry_the_documented_quirks() {
        let google = lookup("google").unwrap();
        assert_eq!(google.extra_params()["access_type"], "offline");
        assert_eq!(google.extra_params()["prompt"], "consent");
        let ms = lookup("microsoft").unwrap();
        assert!(ms.default_scopes.contains(&"offline_access".to_owned()));
        assert!(ms.required_scopes.contains(&"offline_access".to_owned()));
        let slack = lookup("slack").unwrap();
        assert_eq!(
            (slack.scope_separator.as_str(), slack.scope_param.as_str()),
            (",", "user_scope")
        );
        assert_eq!(slack.token_path.as_deref(), Some("authed_user"));
        let sf = lookup("salesforce").unwrap();
        assert_eq!(sf.metadata["instance_url"], "instance_url");
        assert!(sf.revocation_url.is_some());
        let stripe = lookup("stripe").unwrap();
        assert_eq!(stripe.auth_type, AuthType::APIKey);
        let form = stripe.form.as_ref().unwrap();
        assert_eq!(form.fields[0].name, "api_key");
        assert_eq!(
            form.fields[0].pattern.as_deref(),
            Some("^(sk|rk)_(live|test)_[A-Za-z0-9]+$")
        );
        assert_eq!(
            form.header.as_ref().and_then(|h| h.prefix.as_deref()),
            Some("Bearer ")
        );
        assert_eq!(
            form.verify.as_ref().map(|v| v.url.as_str()),
            Some("https://api.stripe.com/v1/balance")
        );
        assert_eq!(
            lookup("figma").unwrap().refresh_url.as_deref(),
            Some("https://api.figma.com/v1/oauth/refresh")
        );
    }

    #[test]
    fn the_docs_page_lists_every_preset() {
        let page = include_str!("../../docs/providers.md");
        for p in presets() {
            assert!(
                page.contains(&format!("`{}`", p.name)),
                "docs/providers.md misses {}",
                p.name
            );
        }
        assert!(page.contains("src/auth/catalog.yaml"));
    }
}
