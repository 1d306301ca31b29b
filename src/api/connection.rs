//! `Connection`: one third-party app configuration shared by many accounts.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::methods::{CredentialForm, CustomJwtSettings, VerificationSettings};
use super::{Duration, SecretKeyRef};

/// How to reach one third-party app (like a cert-manager Issuer): the OAuth 2.0 client, its
/// endpoints and scopes, and how long authorization links live. Many ConnectedAccounts in the same
/// namespace refer to one Connection.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "agentauth.dev",
    version = "v1alpha1",
    kind = "Connection",
    namespaced,
    status = "ConnectionStatus",
    shortname = "aconn",
    category = "agentauth",
    printcolumn = r#"{"name":"Auth","type":"string","jsonPath":".spec.authType"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Redirect URI","type":"string","jsonPath":".status.redirectUri","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = spec_rule(0),
    validation = spec_rule(1),
    validation = spec_rule(2),
    validation = spec_rule(3),
    validation = spec_rule(4),
    validation = spec_rule(5),
    validation = spec_rule(6),
)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSpec {
    /// How the credential is obtained: `OAuth2` (the user authorizes; code flow with PKCE),
    /// `APIKey` or `BearerToken` (the user types it into a hosted form), `CustomJWT` (the operator
    /// mints it), `ClientCredentials` (the operator fetches it; no user). The block of the same
    /// name configures it (`oauth2` also serves `ClientCredentials`).
    pub auth_type: AuthType,

    /// Optional name from the built-in provider catalog (for example `google`, `github`) that fills
    /// in endpoints; anything set explicitly in `oauth2` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub provider: Option<String>,

    /// OAuth 2.0 client settings; required when `authType` is `OAuth2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2Settings>,

    /// The hosted form for `authType: APIKey`. Optional with a catalog `provider` that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<CredentialForm>,

    /// The hosted form for `authType: BearerToken`. Default: one secret field `token`, sent as
    /// `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<CredentialForm>,

    /// How the operator mints JWTs for `authType: CustomJWT`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "customJWT")]
    pub custom_jwt: Option<CustomJwtSettings>,

    /// Ask the platform to confirm the user's identity before a credential is published: accounts
    /// wait in `PENDING_VERIFICATION` until the platform calls the gateway's `POST /verify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationSettings>,

    /// How long authorization links stay valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_link: Option<LinkSettings>,

    /// When tokens are renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshSettings>,

    /// Where to send the user after a successful authorization. Without it the gateway shows a
    /// plain success page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https']").message("must be an http(s) URL"))]
    #[schemars(length(max = 2048))]
    pub success_redirect_url: Option<String>,

    /// How agent pods get the credentials of this Connection's accounts: `Secret` (default; a
    /// Secret per account to mount), `Broker` (no Secret; pods exchange their ServiceAccount token at
    /// the operator's token broker, authorized by RBAC verb `use` on `connectedaccounts`) or
    /// `SecretAndBroker`. An account's own `spec.delivery` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<super::Delivery>,
}

/// The rules every Connection-like kind (Connection, ClusterConnection) checks at admission: the
/// auth-method blocks that must be present or absent together.
pub(crate) fn spec_rule(i: usize) -> kube::core::Rule {
    use kube::core::Rule;
    let rules = [
        Rule::new("has(self.spec.oauth2) == (self.spec.authType in ['OAuth2', 'ClientCredentials'])")
            .message("spec.oauth2 must be set exactly when spec.authType is OAuth2 or ClientCredentials")
            .field_path(".spec.oauth2"),
        Rule::new("!has(self.spec.oauth2) || has(self.spec.provider) || self.spec.authType != 'OAuth2' || (has(self.spec.oauth2.authorizationUrl) && has(self.spec.oauth2.tokenUrl))")
            .message("spec.oauth2.authorizationUrl and tokenUrl are required unless spec.provider names a catalog entry")
            .field_path(".spec.oauth2"),
        Rule::new("!has(self.spec.oauth2) || has(self.spec.provider) || self.spec.authType != 'ClientCredentials' || has(self.spec.oauth2.tokenUrl)")
            .message("spec.oauth2.tokenUrl is required for ClientCredentials unless spec.provider names a catalog entry")
            .field_path(".spec.oauth2"),
        Rule::new("!has(self.spec.apiKey) || self.spec.authType == 'APIKey'")
            .message("spec.apiKey is only for authType APIKey")
            .field_path(".spec.apiKey"),
        Rule::new("!has(self.spec.bearerToken) || self.spec.authType == 'BearerToken'")
            .message("spec.bearerToken is only for authType BearerToken")
            .field_path(".spec.bearerToken"),
        Rule::new("has(self.spec.customJWT) == (self.spec.authType == 'CustomJWT')")
            .message("spec.customJWT must be set exactly when spec.authType is CustomJWT")
            .field_path(".spec.customJWT"),
        Rule::new("!has(self.spec.verification) || self.spec.authType in ['OAuth2', 'APIKey', 'BearerToken']")
            .message("spec.verification needs a user: authType OAuth2, APIKey or BearerToken")
            .field_path(".spec.verification"),
    ];
    rules.into_iter().nth(i).unwrap_or_else(|| Rule::new("true"))
}

/// The ways a credential is obtained.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum AuthType {
    /// OAuth 2.0 authorization code flow with PKCE and refresh tokens.
    OAuth2,
    /// An API key (and any other fields) typed by the user into a hosted form.
    APIKey,
    /// A bearer token typed by the user into a hosted form.
    BearerToken,
    /// A JWT minted and re-minted by the operator, optionally traded for an access token.
    CustomJWT,
    /// OAuth 2.0 client credentials grant: a machine token, no user.
    ClientCredentials,
}

impl AuthType {
    /// A user takes part (through an authorization link); otherwise the operator obtains the
    /// credential on its own.
    pub fn interactive(self) -> bool {
        matches!(self, AuthType::OAuth2 | AuthType::APIKey | AuthType::BearerToken)
    }

    /// The user fills in a hosted form.
    pub fn form(self) -> bool {
        matches!(self, AuthType::APIKey | AuthType::BearerToken)
    }
}

/// An OAuth 2.0 client registered at the provider.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2Settings {
    /// The client ID issued by the provider.
    #[schemars(length(min = 1, max = 1024))]
    pub client_id: String,

    /// Secret in this namespace holding the client secret. Omit for public clients (PKCE only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretKeyRef>,

    /// The provider's authorization endpoint, where users are sent to consent. Defaults to the
    /// catalog entry named by `spec.provider`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https']").message("must be an http(s) URL"))]
    #[schemars(length(min = 1, max = 2048))]
    pub authorization_url: Option<String>,

    /// The provider's token endpoint, used to exchange codes and refresh tokens. Defaults to the
    /// catalog entry named by `spec.provider`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https']").message("must be an http(s) URL"))]
    #[schemars(length(min = 1, max = 2048))]
    pub token_url: Option<String>,

    /// The provider's RFC 7009 revocation endpoint; tokens are revoked there when an account is
    /// deleted or disconnected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https']").message("must be an http(s) URL"))]
    #[schemars(length(max = 2048))]
    pub revocation_url: Option<String>,

    /// The provider's OpenID Connect userinfo endpoint. When the token response carries no
    /// `id_token`, the operator asks here (with the new access token, through the egress policy)
    /// who the user is, and records it as `status.providerIdentity`. Never a credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https']").message("must be an http(s) URL"))]
    #[schemars(length(max = 2048))]
    pub userinfo_url: Option<String>,

    /// Scopes to request (space-free strings). Adding a scope marks existing accounts `ScopesChanged` and issues them a
    /// new link; their old token keeps working until the user re-authorizes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 100),
        inner(length(min = 1, max = 256), regex(pattern = r"^[!-~]+$"))
    )]
    pub scopes: Vec<String>,

    /// Extra query parameters for the authorization URL (for example `access_type: offline` and
    /// `prompt: consent` for Google).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 20, "additionalProperties" = {"type": "string", "maxLength": 512}))]
    #[x_kube(validation = Rule::new("self.all(k, k.size() >= 1 && k.size() <= 64 && !(k in ['redirect_uri', 'state', 'response_type', 'client_id', 'code_challenge', 'code_challenge_method', 'scope', 'user_scope', 'nonce', 'request', 'request_uri']))").message("keys are 1 to 64 characters and cannot be a parameter the operator sets itself (redirect_uri, state, response_type, client_id, code_challenge, code_challenge_method, scope, ...)"))]
    pub extra_authorization_params: BTreeMap<String, String>,

    /// How the client authenticates at the token endpoint. Default `ClientSecretBasic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_method: Option<TokenEndpointAuthMethod>,

    /// Use PKCE (S256). On by default; turn off only for providers that reject it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkce: Option<bool>,

    /// Keep the shared redirect URI `<gateway>/oauth/callback` of earlier releases instead of this
    /// Connection's own (`status.redirectUri`), for registrations made before the upgrade. Weaker
    /// against mix-up attacks between Connections; accepted for one release, then removed.
    /// Register the new URI at the provider and drop this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_redirect_uri: Option<bool>,

    /// The authorization server's issuer identifier. When the provider sends `iss` with the
    /// authorization response (RFC 9207) it must equal this; without it, `iss` must have the
    /// origin of the authorization URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https']").message("must be an http(s) URL"))]
    #[schemars(length(min = 1, max = 2048))]
    pub issuer: Option<String>,
}

/// How the client authenticates at the token endpoint.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum TokenEndpointAuthMethod {
    /// HTTP Basic authentication with client ID and secret.
    #[default]
    ClientSecretBasic,
    /// Client ID and secret in the form body.
    ClientSecretPost,
    /// Client ID only (public client).
    None,
}

/// Authorization link settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct LinkSettings {
    /// How long a link stays valid, as a duration (`30m`, `24h`), at most `168h` (7 days: a
    /// retired signing key verifies for that long). Default `24h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) <= duration('168h')").message("a link lives at most 168h (7 days)"))]
    pub ttl: Option<Duration>,
}

/// Refresh settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct RefreshSettings {
    /// Renew this long before the access token expires (`10m`). Default: a third of the token's
    /// lifetime, at least one minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Duration>,
    /// How long a refresh may take before its outcome counts as unknown (`60s`, at most `10m`).
    /// Default `60s`. Under `rotation.policy: Strict` the answer is still read and kept when it
    /// comes later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('10m')").message("refresh.timeout must be between 1s and 10m"))]
    pub timeout: Option<Duration>,
    /// What the provider does with a refresh token once it is used. Default: the provider preset's
    /// behaviour, else `Strict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationSettings>,
}

/// How the provider treats a refresh token that was already used. It decides what the operator
/// does when a refresh was sent but its answer never arrived (timeout, restart, failover).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("self.policy == 'Grace' ? has(self.window) : !has(self.window)").message("rotation.window is set exactly when policy is Grace"))]
pub struct RotationSettings {
    pub policy: RotationPolicy,
    /// For `Grace`: how long after its first use a refresh token is still accepted once more
    /// (`10m`, at most `24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) <= duration('24h')").message("rotation.window is at most 24h"))]
    pub window: Option<Duration>,
}

/// See [`RotationSettings`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum RotationPolicy {
    /// Rotates on every refresh and revokes the grant when a used token comes back (RFC 9700
    /// §4.14): a refresh whose outcome is unknown is never replayed; the user re-authorizes.
    #[default]
    Strict,
    /// Rotates, but accepts a used token again within `window`: replayed once inside it.
    Grace,
    /// Does not rotate (or old tokens stay valid): replayed freely.
    None,
}

/// Observed state of a Connection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// `Ready` tells whether accounts can use this Connection (client secret found, settings valid).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The callback URL to register at the provider for this client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
