//! Built-in provider presets: endpoints and quirks of popular apps, so that a Connection can say
//! `provider: google` instead of spelling out URLs. Anything set explicitly on the Connection wins.

use std::collections::BTreeMap;

use crate::api::TokenEndpointAuthMethod;

/// Endpoints and defaults of one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub authorization_url: &'static str,
    pub token_url: &'static str,
    pub revocation_url: Option<&'static str>,
    pub extra_authorization_params: &'static [(&'static str, &'static str)],
    pub token_endpoint_auth_method: TokenEndpointAuthMethod,
}

const PRESETS: &[Preset] = &[
    Preset {
        name: "google",
        authorization_url: "https://accounts.google.com/o/oauth2/v2/auth",
        token_url: "https://oauth2.googleapis.com/token",
        revocation_url: Some("https://oauth2.googleapis.com/revoke"),
        // Without these Google issues no refresh token on re-consent.
        extra_authorization_params: &[("access_type", "offline"), ("prompt", "consent")],
        token_endpoint_auth_method: TokenEndpointAuthMethod::ClientSecretPost,
    },
    Preset {
        name: "github",
        authorization_url: "https://github.com/login/oauth/authorize",
        token_url: "https://github.com/login/oauth/access_token",
        revocation_url: None,
        extra_authorization_params: &[],
        token_endpoint_auth_method: TokenEndpointAuthMethod::ClientSecretPost,
    },
    Preset {
        name: "slack",
        authorization_url: "https://slack.com/oauth/v2/authorize",
        token_url: "https://slack.com/api/oauth.v2.access",
        revocation_url: None,
        extra_authorization_params: &[],
        token_endpoint_auth_method: TokenEndpointAuthMethod::ClientSecretPost,
    },
    Preset {
        name: "microsoft",
        authorization_url: "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
        token_url: "https://login.microsoftonline.com/common/oauth2/v2.0/token",
        revocation_url: None,
        extra_authorization_params: &[],
        token_endpoint_auth_method: TokenEndpointAuthMethod::ClientSecretPost,
    },
    Preset {
        name: "notion",
        authorization_url: "https://api.notion.com/v1/oauth/authorize",
        token_url: "https://api.notion.com/v1/oauth/token",
        revocation_url: None,
        extra_authorization_params: &[("owner", "user")],
        token_endpoint_auth_method: TokenEndpointAuthMethod::ClientSecretBasic,
    },
    Preset {
        name: "hubspot",
        authorization_url: "https://app.hubspot.com/oauth/authorize",
        token_url: "https://api.hubapi.com/oauth/v1/token",
        revocation_url: None,
        extra_authorization_params: &[],
        token_endpoint_auth_method: TokenEndpointAuthMethod::ClientSecretPost,
    },
    Preset {
        name: "salesforce",
        authorization_url: "https://login.salesforce.com/services/oauth2/authorize",
        token_url: "https://login.salesforce.com/services/oauth2/token",
        revocation_url: Some("https://login.salesforce.com/services/oauth2/revoke"),
        extra_authorization_params: &[],
        token_endpoint_auth_method: TokenEndpointAuthMethod::ClientSecretPost,
    },
];

/// The preset of that name, if the catalog has one.
pub fn lookup(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// Names of every preset, for error messages.
pub fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name).collect()
}

impl Preset {
    pub fn extra_params(&self) -> BTreeMap<String, String> {
        self.extra_authorization_params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn presets_have_https_endpoints_and_unique_names() {
        let names = super::names();
        let mut sorted = names.clone();
        sorted.dedup();
        assert_eq!(names.len(), sorted.len());
        for p in super::PRESETS {
            assert!(p.authorization_url.starts_with("https://") && p.token_url.starts_with("https://"));
        }
        assert_eq!(super::lookup("google").map(|p| p.name), Some("google"));
        assert!(super::lookup("nope").is_none());
    }
}
