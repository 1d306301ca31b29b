//! The operator's record of one account: its tokens and the outcome of its authorization flows.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Everything the operator keeps about one account's credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The current tokens, if the user has authorized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenSet>,
    /// Nonce of the last link through which an authorization completed; that link is spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_link: Option<String>,
    /// The provider rejected the refresh token (`invalid_grant`, revoked): the user must authorize
    /// again.
    #[serde(default)]
    pub rejected: bool,
    /// The last failed authorization attempt (user declined, exchange failed), shown as a condition
    /// until the next attempt succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_error: Option<FlowError>,
    /// A credential obtained through a link, held back until the platform confirms the user
    /// (`spec.verification`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingVerification>,
    /// `resourceVersion` of the account's `spec.credentialsRef` Secret the tokens were copied from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
}

/// A credential waiting for the platform to confirm who authorized it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PendingVerification {
    /// Nonce of the one-time request id given to the platform.
    pub request: String,
    pub tokens: TokenSet,
    /// After this the credential is discarded and a new link issued.
    pub expires_at: Timestamp,
}

/// A failed authorization attempt, in words safe for status and logs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FlowError {
    /// CamelCase reason, e.g. `AccessDenied`, `ExchangeFailed`.
    pub reason: String,
    pub message: String,
    /// Nonce of the link the attempt came through.
    pub link: String,
}

/// Tokens from the provider. `Debug` never prints token values.
#[derive(Serialize, Deserialize, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TokenSet {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// As the provider spelled it, e.g. `Bearer`.
    pub token_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    pub obtained_at: Timestamp,
    /// Other fields of the token response that agents may need (e.g. Salesforce `instance_url`,
    /// Slack `team`). Credential-bearing fields such as `id_token` are not kept.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// Values of a hosted form (`api_key`, `subdomain`), published under their own names.
    /// Empty for token types.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
    /// The header agents send, when it is not `Authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_name: Option<String>,
    /// The whole header value, when it is not `<token_type> <access_token>` (API keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_value: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .field("header_name", &self.header_name)
            .finish_non_exhaustive()
    }
}

impl TokenSet {
    /// The value of the auth header: `Bearer <token>` (the type normalised to `Bearer` for the
    /// common lowercase spelling).
    pub fn authorization(&self) -> String {
        if let Some(v) = &self.header_value {
            return v.clone();
        }
        let kind = if self.token_type.eq_ignore_ascii_case("bearer") {
            "Bearer"
        } else {
            &self.token_type
        };
        format!("{kind} {}", self.access_token)
    }

    /// Keeps the refresh token of `self` when the provider did not rotate it.
    pub fn renewed_by(&self, mut new: TokenSet) -> TokenSet {
        if new.refresh_token.is_none() {
            new.refresh_token = self.refresh_token.clone();
        }
        if new.scopes.is_empty() {
            new.scopes = self.scopes.clone();
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_tokens() {
        let t = TokenSet {
            access_token: "at-secret".into(),
            refresh_token: Some("rt-secret".into()),
            token_type: "bearer".into(),
            ..Default::default()
        };
        let shown = format!(
            "{t:?} {:?}",
            Record {
                tokens: Some(t.clone()),
                ..Default::default()
            }
        );
        assert!(
            !shown.contains("at-secret") && !shown.contains("rt-secret"),
            "{shown}"
        );
        assert_eq!(t.authorization(), "Bearer at-secret");
    }

    #[test]
    fn renewal_keeps_a_refresh_token_the_provider_did_not_rotate() {
        let old = TokenSet {
            refresh_token: Some("r1".into()),
            scopes: vec!["a".into()],
            ..Default::default()
        };
        let new = old.renewed_by(TokenSet {
            access_token: "x".into(),
            ..Default::default()
        });
        assert_eq!(new.refresh_token.as_deref(), Some("r1"));
        assert_eq!(new.scopes, vec!["a".to_owned()]);
        let rotated = old.renewed_by(TokenSet {
            refresh_token: Some("r2".into()),
            ..Default::default()
        });
        assert_eq!(rotated.refresh_token.as_deref(), Some("r2"));
    }
}
