//! The effective OAuth 2.0 settings of a Connection: its explicit fields over the catalog preset,
//! checked once so that every flow can trust them.

use std::collections::BTreeMap;

use crate::api::{AuthType, OAuth2Settings, TokenEndpointAuthMethod};
use crate::auth::catalog;
use crate::auth::error::ConfigError;
use crate::auth::quirks::TokenQuirks;

/// The effective OAuth 2.0 settings of a Connection: explicit fields over the catalog preset.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub client_id: String,
    /// `None` for `ClientCredentials`, which sends no user anywhere.
    pub authorization_url: Option<String>,
    pub token_url: String,
    /// Where refresh grants go when not to `token_url` (Figma).
    pub refresh_url: Option<String>,
    pub revocation_url: Option<String>,
    /// Where to ask who the user is when the token response has no `id_token`.
    pub userinfo_url: Option<String>,
    /// The authorization server's issuer (the Connection's `issuer`): an `id_token` must name it.
    pub issuer: Option<String>,
    /// The scopes requested: the Connection's, else the preset's defaults, plus the preset's
    /// required ones (user flows only). The controller compares grants with these.
    pub scopes: Vec<String>,
    /// Joins scopes in the authorization URL (`,` for Slack).
    pub scope_separator: String,
    /// The authorization URL parameter for the scopes (`user_scope` for Slack user tokens).
    pub scope_param: String,
    pub extra_authorization_params: BTreeMap<String, String>,
    pub auth_method: TokenEndpointAuthMethod,
    pub pkce: bool,
    /// How token responses of this provider are normalised.
    pub quirks: TokenQuirks,
}

impl Settings {
    /// The grant a user authorizing now would give: these endpoints, this client.
    pub fn grant(&self) -> crate::store::Grant {
        crate::store::Grant {
            client_id: self.client_id.clone(),
            token_url: self.token_url.clone(),
            refresh_url: self.refresh_url.clone(),
            revocation_url: self.revocation_url.clone(),
            requested_scopes: self.scopes.clone(),
        }
    }

    /// These settings aimed at the endpoints and client of `grant`, for refreshing and revoking it.
    pub fn pinned_to(mut self, grant: &crate::store::Grant) -> Settings {
        self.client_id = grant.client_id.clone();
        self.token_url = grant.token_url.clone();
        self.refresh_url = grant.refresh_url.clone();
        self.revocation_url = grant.revocation_url.clone();
        self
    }

    /// Merges `spec` over the preset named by `provider`, and checks that every URL parses.
    /// `ClientCredentials` needs only a token URL and gets no default scopes (those are for users).
    pub fn resolve(
        auth_type: AuthType,
        provider: Option<&str>,
        spec: &OAuth2Settings,
    ) -> Result<Settings, ConfigError> {
        let user_flow = match auth_type {
            AuthType::OAuth2 => true,
            AuthType::ClientCredentials => false,
            other => {
                return Err(ConfigError(format!(
                    "authType {other:?} does not use OAuth 2.0 settings"
                )));
            }
        };
        let preset = catalog::resolve(provider)?;
        if let Some(p) = preset
            && p.auth_type != AuthType::OAuth2
        {
            return Err(ConfigError(format!(
                "provider {:?} is an {:?} preset and has no OAuth 2.0 endpoints",
                p.name, p.auth_type
            )));
        }
        let pick = |explicit: &Option<String>, preset_value: Option<&String>, what: &str| {
            explicit
                .clone()
                .or(preset_value.cloned())
                .ok_or_else(|| ConfigError(format!("{what} is required")))
        };
        let authorization_url = if user_flow {
            Some(pick(
                &spec.authorization_url,
                preset.and_then(|p| p.authorization_url.as_ref()),
                "authorizationUrl",
            )?)
        } else {
            None
        };
        let mut scopes = spec.scopes.clone();
        if user_flow && let Some(p) = preset {
            if scopes.is_empty() {
                scopes = p.default_scopes.clone();
            }
            for required in &p.required_scopes {
                if !scopes.contains(required) {
                    scopes.push(required.clone());
                }
            }
        }
        let mut extra = preset.map(catalog::Preset::extra_params).unwrap_or_default();
        extra.extend(spec.extra_authorization_params.clone());
        let settings = Settings {
            client_id: spec.client_id.clone(),
            authorization_url,
            token_url: pick(
                &spec.token_url,
                preset.and_then(|p| p.token_url.as_ref()),
                "tokenUrl",
            )?,
            // A preset's separate refresh endpoint only belongs with the preset's token endpoint.
            refresh_url: preset
                .filter(|_| spec.token_url.is_none())
                .and_then(|p| p.refresh_url.clone()),
            revocation_url: spec
                .revocation_url
                .clone()
                .or(preset.and_then(|p| p.revocation_url.clone())),
            userinfo_url: spec
                .userinfo_url
                .clone()
                .or(preset.and_then(|p| p.userinfo_url.clone())),
            issuer: spec.issuer.clone(),
            scopes,
            scope_separator: preset.map_or_else(|| " ".to_owned(), |p| p.scope_separator.clone()),
            scope_param: preset.map_or_else(|| "scope".to_owned(), |p| p.scope_param.clone()),
            extra_authorization_params: extra,
            auth_method: spec
                .token_endpoint_auth_method
                .or(preset.and_then(|p| p.token_endpoint_auth_method))
                .unwrap_or_default(),
            pkce: spec.pkce.or(preset.map(|p| p.pkce)).unwrap_or(true),
            quirks: preset.map(catalog::Preset::token_quirks).unwrap_or_default(),
        };
        for (what, url) in [
            ("authorizationUrl", settings.authorization_url.as_ref()),
            ("tokenUrl", Some(&settings.token_url)),
            ("refreshUrl", settings.refresh_url.as_ref()),
            ("revocationUrl", settings.revocation_url.as_ref()),
            ("userinfoUrl", settings.userinfo_url.as_ref()),
        ] {
            let Some(url) = url else { continue };
            if url.contains("{subdomain}") {
                return Err(ConfigError(format!(
                    "{what} {url} depends on your account: set spec.oauth2.{what} with your \
                     subdomain in place of {{subdomain}}"
                )));
            }
            url::Url::parse(url).map_err(|e| ConfigError(format!("{what} is not a valid URL: {e}")))?;
        }
        let separator = settings.scope_separator.trim();
        if let Some(bad) = settings.scopes.iter().find(|s| {
            s.is_empty()
                || s.contains(char::is_whitespace)
                || (!separator.is_empty() && s.contains(separator))
        }) {
            return Err(ConfigError(format!(
                "scope {bad:?} is empty or contains whitespace or the provider's scope separator"
            )));
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> OAuth2Settings {
        serde_json::from_value(serde_json::json!({"clientId": "c", "scopes": ["openid", "email"]})).unwrap()
    }

    fn bare() -> OAuth2Settings {
        serde_json::from_value(serde_json::json!({"clientId": "c"})).unwrap()
    }

    #[test]
    fn explicit_settings_win_over_the_preset() {
        let mut s = spec();
        s.token_url = Some("https://example.test/token".into());
        s.extra_authorization_params
            .insert("prompt".into(), "select_account".into());
        let r = Settings::resolve(AuthType::OAuth2, Some("google"), &s).unwrap();
        assert_eq!(r.token_url, "https://example.test/token");
        assert_eq!(
            r.authorization_url.as_deref(),
            Some("https://accounts.google.com/o/oauth2/v2/auth")
        );
        assert_eq!(r.extra_authorization_params["prompt"], "select_account");
        assert_eq!(r.extra_authorization_params["access_type"], "offline");
        assert!(r.pkce);
    }

    #[test]
    fn missing_endpoints_and_unknown_providers_are_config_errors() {
        assert!(
            Settings::resolve(AuthType::OAuth2, None, &spec())
                .unwrap_err()
                .0
                .contains("authorizationUrl")
        );
        assert!(
            Settings::resolve(AuthType::OAuth2, Some("myspace"), &spec())
                .unwrap_err()
                .0
                .contains("unknown provider")
        );
    }

    #[test]
    fn preset_defaults_fill_scopes_and_required_scopes_are_always_asked() {
        let google = Settings::resolve(AuthType::OAuth2, Some("google"), &bare()).unwrap();
        assert_eq!(google.scopes, ["openid", "email"]);
        let mut s = bare();
        s.scopes = vec!["Mail.Read".into()];
        let ms = Settings::resolve(AuthType::OAuth2, Some("microsoft"), &s).unwrap();
        assert_eq!(ms.scopes, ["Mail.Read", "offline_access"]);
        let none = Settings::resolve(AuthType::OAuth2, Some("notion"), &bare()).unwrap();
        assert!(none.scopes.is_empty());
        assert_eq!(none.auth_method, TokenEndpointAuthMethod::ClientSecretBasic);
    }

    #[test]
    fn pkce_defaults_to_the_preset_and_the_spec_wins() {
        let mut s = bare();
        assert!(
            Settings::resolve(AuthType::OAuth2, Some("airtable"), &s)
                .unwrap()
                .pkce
        );
        s.pkce = Some(false);
        assert!(
            !Settings::resolve(AuthType::OAuth2, Some("airtable"), &s)
                .unwrap()
                .pkce
        );
    }

    #[test]
    fn placeholders_and_api_key_presets_are_config_errors() {
        let err = Settings::resolve(AuthType::OAuth2, Some("zendesk"), &bare()).unwrap_err();
        assert!(
            err.0.contains("subdomain") && err.0.contains("authorizationUrl"),
            "{err}"
        );
        let mut s = bare();
        s.authorization_url = Some("https://acme.zendesk.com/oauth/authorizations/new".into());
        s.token_url = Some("https://acme.zendesk.com/oauth/tokens".into());
        let z = Settings::resolve(AuthType::OAuth2, Some("zendesk"), &s).unwrap();
        assert_eq!(z.scopes, ["read"]);
        let err = Settings::resolve(AuthType::OAuth2, Some("stripe"), &bare()).unwrap_err();
        assert!(err.0.contains("APIKey"), "{err}");
    }

    #[test]
    fn a_separate_refresh_endpoint_only_comes_with_the_presets_token_endpoint() {
        let figma = Settings::resolve(AuthType::OAuth2, Some("figma"), &bare()).unwrap();
        assert_eq!(
            figma.refresh_url.as_deref(),
            Some("https://api.figma.com/v1/oauth/refresh")
        );
        let mut s = bare();
        s.token_url = Some("https://proxy.example.test/token".into());
        let proxied = Settings::resolve(AuthType::OAuth2, Some("figma"), &s).unwrap();
        assert_eq!(proxied.refresh_url, None);
    }
}
