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
    /// Where the OAuth 2.0 grant in `tokens` was obtained: refresh and revocation go only there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
    /// A grant replaced by a new authorization, still to be revoked at its own pinned endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded: Option<Superseded>,
    /// A refresh whose refresh token is being (or was) spent and whose outcome is not recorded:
    /// written before the token is sent, cleared with the outcome. Found after a restart, failover
    /// or timeout, it means the provider may have rotated the token (see `controller::refresh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<RefreshAttempt>,
}

/// The intent of one refresh, recorded before its refresh token leaves the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RefreshAttempt {
    /// Random; the outcome is applied only while the record still names this attempt.
    pub id: String,
    pub started_at: Timestamp,
    /// SHA-256 (hex) of the refresh token spent, never the token: tells a replay of the same
    /// token from a refresh of a newer one.
    pub token_sha256: String,
    /// This attempt already replays the token of an earlier one whose outcome was unknown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
}

impl RefreshAttempt {
    /// A new attempt to spend `refresh_token`.
    pub fn new(refresh_token: &str, started_at: Timestamp, replay: bool) -> RefreshAttempt {
        RefreshAttempt {
            id: crate::signer::random_id(),
            started_at,
            token_sha256: token_sha256(refresh_token),
            replay,
        }
    }
}

/// Hex SHA-256 of a token: safe to store and compare, reveals nothing usable.
pub fn token_sha256(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The endpoints and client an OAuth 2.0 grant belongs to. A refresh token is only ever sent to
/// the endpoint it came from, with the client it was issued to: editing a Connection's endpoints
/// or client id cannot redirect an existing grant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    pub client_id: String,
    pub token_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_url: Option<String>,
    /// The scopes asked for when the user authorized (providers may grant fewer, or drop meta
    /// scopes such as `offline_access`); a Connection asking for more needs re-authorization.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requested_scopes: Vec<String>,
}

impl Grant {
    /// Same endpoints and client (the requested scopes may differ).
    pub fn same_place(&self, other: &Grant) -> bool {
        self.client_id == other.client_id
            && self.token_url == other.token_url
            && self.refresh_url == other.refresh_url
            && self.revocation_url == other.revocation_url
    }
}

/// A replaced grant awaiting revocation. `Debug` never prints the token.
#[derive(Serialize, Deserialize, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Superseded {
    pub tokens: TokenSet,
    pub grant: Grant,
}

impl std::fmt::Debug for Superseded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Superseded")
            .field("tokens", &self.tokens)
            .field("grant", &self.grant)
            .finish()
    }
}

impl Record {
    /// Puts a newly authorized credential in place. A previous grant obtained somewhere else (the
    /// Connection's endpoints or client changed) is kept aside for revocation at its own pinned
    /// endpoint; one at the same place is not revoked, since providers such as Google revoke every
    /// token of the client and user together.
    pub fn install(&mut self, tokens: TokenSet, grant: Option<Grant>) {
        let old_tokens = self.tokens.take().filter(|_| !self.rejected);
        if let (Some(old), Some(old_grant)) = (old_tokens, self.grant.take())
            && grant.as_ref().is_none_or(|g| !g.same_place(&old_grant))
        {
            self.superseded = Some(Superseded {
                tokens: old,
                grant: old_grant,
            });
        }
        self.tokens = Some(tokens);
        self.grant = grant;
        self.rejected = false;
        self.attempt = None;
    }
}

/// A credential waiting for the platform to confirm who authorized it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PendingVerification {
    /// Nonce of the one-time request id given to the platform.
    pub request: String,
    pub tokens: TokenSet,
    /// Where `tokens` were obtained (OAuth 2.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
    /// After this the credential is discarded and a new link issued.
    pub expires_at: Timestamp,
    /// The platform confirmed the user (`POST /verify`); the credential is published once the
    /// browser that started the flow comes back to `/verify/return`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirmed: bool,
}

/// A failed authorization attempt, in words safe for status and logs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FlowError {
    /// Why it failed: `AccessDenied`, `AuthorizationFailed`, `ExchangeFailed` or
    /// `VerificationFailed`. A record written with another name reads as `AuthorizationFailed`.
    #[serde(deserialize_with = "flow_reason")]
    pub reason: crate::api::Reason,
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
    /// Who authorized, as the provider said (OpenID Connect); never published to agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<crate::api::ProviderIdentity>,
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
        if new.identity.is_none() {
            new.identity = self.identity.clone();
        }
        new
    }
}

/// A flow error's reason as stored; names this release does not know (or that are not flow
/// reasons) read as `AuthorizationFailed`, so an old or hand-edited record never fails to parse.
fn flow_reason<'de, D: serde::Deserializer<'de>>(d: D) -> Result<crate::api::Reason, D::Error> {
    use crate::api::Reason;
    let name = String::deserialize(d)?;
    Ok(match name.parse() {
        Ok(r @ (Reason::AccessDenied | Reason::ExchangeFailed | Reason::VerificationFailed)) => r,
        _ => Reason::AuthorizationFailed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_flow_reason_outside_the_flow_set_reads_as_authorization_failed() {
        let read = |name: &str| {
            serde_json::from_value::<FlowError>(
                serde_json::json!({"reason": name, "message": "m", "link": "n"}),
            )
            .unwrap()
            .reason
        };
        assert_eq!(read("AccessDenied"), crate::api::Reason::AccessDenied);
        assert_eq!(read("ExchangeFailed"), crate::api::Reason::ExchangeFailed);
        assert_eq!(read("Active"), crate::api::Reason::AuthorizationFailed);
        assert_eq!(read("SomethingNew"), crate::api::Reason::AuthorizationFailed);
    }

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
