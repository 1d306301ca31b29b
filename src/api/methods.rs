//! Settings of the auth methods other than the OAuth 2.0 code flow: hosted forms for API keys and
//! bearer tokens, custom JWTs, and user verification.

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::{Duration, SecretKeyRef};

/// A field name: also the key it gets in the agent Secret.
const FIELD_NAME_PATTERN: &str = r"^[a-z][a-z0-9_]{0,62}$";

/// What the hosted form collects from the user and how the result is sent to the app's API.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CredentialForm {
    /// The form's fields, in order. Default: one secret field, `api_key` for `APIKey` and `token`
    /// for `BearerToken`. Each value becomes a key of the agent Secret under the field's name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    // A list-map: the API server itself refuses two fields with one name.
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub fields: Vec<FormField>,

    /// Text shown above the form, for example where in the app the user finds their key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2000))]
    pub instructions: Option<String>,

    /// How agents present the credential: the header and its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderSettings>,

    /// Optional check on submit: the gateway calls this URL with the new credential in its header,
    /// and only a 2xx answer stores it. Otherwise the form shows the error and the account stays
    /// `PENDING_AUTH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyRequest>,
}

/// One input of the hosted form.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(self.name in ['authorization', 'header_name', 'access_token', 'token_type', 'expires_at', 'scope', 'metadata', 'provider'])").message("this field name is reserved for the agent Secret"))]
pub struct FormField {
    /// Key of the value in the agent Secret (`api_key`, `subdomain`).
    #[schemars(regex(pattern = FIELD_NAME_PATTERN), length(min = 1, max = 63))]
    pub name: String,
    /// The label shown next to the input. Default: the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub label: Option<String>,
    /// Help text shown under the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub help: Option<String>,
    /// A secret is typed into a password input and never shown again. Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<bool>,
    /// The user may leave it empty. Default `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// A regular expression the whole value must match (for example `^sk_(live|test)_[A-Za-z0-9]+$`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 500))]
    pub pattern: Option<String>,
}

/// How the credential is presented to the app's API.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HeaderSettings {
    /// The header name. Default `Authorization`; when it is another header the agent Secret also
    /// has `header_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), regex(pattern = r"^[A-Za-z0-9-]+$"))]
    #[x_kube(validation = Rule::new("!(self.lowerAscii() in ['host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'te', 'trailer', 'upgrade', 'cookie', 'proxy-authorization', 'proxy-connection', 'forwarded', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-real-ip'])").message("this header is managed by HTTP itself or by proxies and cannot carry the credential"))]
    pub name: Option<String>,
    /// Written before the value, for example `Bearer ` or `Token `. Default: `Bearer ` for
    /// `BearerToken`, nothing for `APIKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100), regex(pattern = r"^[ -~]*$"))]
    pub prefix: Option<String>,
    /// The field whose value goes into the header. Default: the first secret field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = FIELD_NAME_PATTERN))]
    pub field: Option<String>,
}

/// A request that proves a submitted credential works.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VerifyRequest {
    /// The URL to call, with the credential in its header. `{{field}}` placeholders take
    /// non-secret form values (for example `https://{{subdomain}}.example.com/api/me`).
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// `GET` (default) or `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
}

/// HTTP method of a verification request.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum HttpMethod {
    #[default]
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "POST")]
    Post,
}

/// A JWT the operator mints itself, without a user.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomJwtSettings {
    /// Secret in this namespace holding the signing key: a PEM private key for RS256, ES256 and
    /// EdDSA, the shared secret for HS256.
    pub signing_key_ref: SecretKeyRef,
    /// Signature algorithm.
    pub algorithm: JwtAlgorithm,
    /// `kid` header, so the receiver can pick the right public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub key_id: Option<String>,
    /// `iss` claim. Templates: `{{identifier}}`, `{{name}}`, `{{namespace}}` of the account.
    #[schemars(length(min = 1, max = 1024))]
    pub issuer: String,
    /// `sub` claim (templates allowed). Default `{{identifier}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub subject: Option<String>,
    /// `aud` claim (templates allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub audience: Option<String>,
    /// More claims, as strings (templates allowed); a value that is valid JSON (a number, `true`,
    /// an array) is put in as that JSON. Registered claims (`iss`, `sub`, `aud`, `iat`, `exp`,
    /// `nbf`, `jti`) cannot be set here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("!self.exists(k, k in ['iss', 'sub', 'aud', 'iat', 'exp', 'nbf', 'jti'])").message("registered claims are set by issuer, subject, audience and lifetime"))]
    #[schemars(extend("maxProperties" = 32))]
    pub claims: BTreeMap<String, String>,
    /// How long each JWT is valid (`10m`, `1h`). Default `1h`. It is re-minted when a third of
    /// this is left (or at `spec.refresh.before`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<Duration>,
    /// Optionally trade the JWT for an access token and publish that instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<JwtExchange>,
}

/// JWT signature algorithms.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum JwtAlgorithm {
    RS256,
    ES256,
    EdDSA,
    HS256,
}

/// Where and how a minted JWT is traded for an access token.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JwtExchange {
    /// The token endpoint (templates allowed, for example
    /// `https://api.github.com/app/installations/{{identifier}}/access_tokens`).
    #[schemars(length(min = 1, max = 2048))]
    pub token_url: String,
    /// `JwtBearer`: an RFC 7523 `jwt-bearer` grant (Google service accounts).
    /// `BearerCredential`: a POST with the JWT as its bearer token (GitHub App installation tokens).
    pub style: ExchangeStyle,
    /// Scopes to ask for (`JwtBearer` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub scopes: Vec<String>,
}

/// How a JWT is presented at the token endpoint.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ExchangeStyle {
    JwtBearer,
    BearerCredential,
}

/// Confirmation by the platform that the person who authorized is the account's user, before the
/// credential is published (against account-linking attacks).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VerificationSettings {
    /// The platform's page the user is sent to after authorizing, with `?request_id=...`. The
    /// platform checks who is logged in and calls the gateway's `POST /verify`.
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https']").message("must be an http(s) URL"))]
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// How long the platform has to confirm (`10m`). Default `15m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
}
