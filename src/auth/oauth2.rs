//! OAuth 2.0 authorization code flow with PKCE, refresh and RFC 7009 revocation, on the `oauth2`
//! crate. Errors are classified for the controller: a rejected grant needs the user again, a bad
//! client needs the Connection fixed, anything else is transient and retried with backoff.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError,
    Scope, StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use crate::api::{OAuth2Settings, TokenEndpointAuthMethod};
use crate::auth::catalog;
use crate::store::TokenSet;

/// Token response fields beyond the standard ones, kept as provider metadata.
#[derive(Clone, Debug, Deserialize, Serialize, Default)]
pub struct Extra {
    #[serde(flatten)]
    fields: BTreeMap<String, serde_json::Value>,
}
impl ExtraTokenFields for Extra {}

/// Fields of a token response that are credentials themselves and never become metadata.
const NOT_METADATA: &[&str] = &["id_token", "access_token", "refresh_token", "client_secret"];

type Response = StandardTokenResponse<Extra, BasicTokenType>;
type Client = oauth2::Client<
    BasicErrorResponse,
    Response,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// A Connection whose OAuth 2.0 settings cannot be used. The message is shown in its status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Why a call to the token endpoint failed. Messages contain no token material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenEndpointError {
    /// The grant is no longer valid (`invalid_grant`, revoked, expired): the user must authorize again.
    #[error("the provider rejected the grant ({code}{})", describe(.description))]
    Rejected {
        code: String,
        description: Option<String>,
    },
    /// The provider refused the client itself (`invalid_client`): the Connection needs fixing.
    #[error("the provider rejected the client ({code}{})", describe(.description))]
    ClientRejected {
        code: String,
        description: Option<String>,
    },
    /// Network trouble, 5xx, malformed responses: worth retrying.
    #[error("token endpoint unavailable: {0}")]
    Transient(String),
    /// 429/503 with `Retry-After`: retry, but not before the provider asked.
    #[error("token endpoint asked to retry after {}s: {message}", retry_after.as_secs())]
    RetryAfter { message: String, retry_after: Duration },
}

fn describe(d: &Option<String>) -> String {
    d.as_deref()
        .map(|d| format!(": {}", truncate(d, 200)))
        .unwrap_or_default()
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The effective OAuth 2.0 settings of a Connection: explicit fields over the catalog preset.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub client_id: String,
    pub authorization_url: String,
    pub token_url: String,
    pub revocation_url: Option<String>,
    pub scopes: Vec<String>,
    pub extra_authorization_params: BTreeMap<String, String>,
    pub auth_method: TokenEndpointAuthMethod,
    pub pkce: bool,
}

impl Settings {
    /// Merges `spec` over the preset named by `provider`, and checks that every URL parses.
    pub fn resolve(provider: Option<&str>, spec: &OAuth2Settings) -> Result<Settings, ConfigError> {
        let preset = match provider {
            Some(name) => Some(catalog::lookup(name).ok_or_else(|| {
                ConfigError(format!(
                    "unknown provider {name:?}; known: {}",
                    catalog::names().join(", ")
                ))
            })?),
            None => None,
        };
        let pick = |explicit: &Option<String>, preset_value: Option<&str>, what: &str| {
            explicit
                .clone()
                .or(preset_value.map(str::to_owned))
                .ok_or_else(|| ConfigError(format!("{what} is required")))
        };
        let mut extra = preset.map(catalog::Preset::extra_params).unwrap_or_default();
        extra.extend(spec.extra_authorization_params.clone());
        let settings = Settings {
            client_id: spec.client_id.clone(),
            authorization_url: pick(
                &spec.authorization_url,
                preset.map(|p| p.authorization_url),
                "authorizationUrl",
            )?,
            token_url: pick(&spec.token_url, preset.map(|p| p.token_url), "tokenUrl")?,
            revocation_url: spec
                .revocation_url
                .clone()
                .or(preset.and_then(|p| p.revocation_url).map(str::to_owned)),
            scopes: spec.scopes.clone(),
            extra_authorization_params: extra,
            auth_method: spec
                .token_endpoint_auth_method
                .or(preset.map(|p| p.token_endpoint_auth_method))
                .unwrap_or_default(),
            pkce: spec.pkce.unwrap_or(true),
        };
        for (what, url) in [
            ("authorizationUrl", Some(&settings.authorization_url)),
            ("tokenUrl", Some(&settings.token_url)),
        ]
        .into_iter()
        .chain([("revocationUrl", settings.revocation_url.as_ref())])
        {
            if let Some(url) = url {
                url::Url::parse(url).map_err(|e| ConfigError(format!("{what} is not a valid URL: {e}")))?;
            }
        }
        if let Some(bad) = settings
            .scopes
            .iter()
            .find(|s| s.is_empty() || s.contains(char::is_whitespace))
        {
            return Err(ConfigError(format!(
                "scope {bad:?} is empty or contains whitespace"
            )));
        }
        Ok(settings)
    }
}

/// An OAuth 2.0 client for one Connection, ready to talk to its provider.
pub struct OAuthClient {
    client: Client,
    settings: Settings,
    client_secret: Option<String>,
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

impl OAuthClient {
    pub fn new(
        settings: Settings,
        client_secret: Option<String>,
        redirect_uri: &str,
    ) -> Result<Self, ConfigError> {
        fn bad(what: &'static str) -> impl Fn(url::ParseError) -> ConfigError {
            move |e| ConfigError(format!("{what} is not a valid URL: {e}"))
        }
        let mut client = oauth2::Client::new(ClientId::new(settings.client_id.clone()))
            .set_auth_uri(AuthUrl::new(settings.authorization_url.clone()).map_err(bad("authorizationUrl"))?)
            .set_token_uri(TokenUrl::new(settings.token_url.clone()).map_err(bad("tokenUrl"))?)
            .set_redirect_uri(RedirectUrl::new(redirect_uri.to_owned()).map_err(bad("redirect URI"))?)
            .set_auth_type(match settings.auth_method {
                TokenEndpointAuthMethod::ClientSecretBasic => oauth2::AuthType::BasicAuth,
                TokenEndpointAuthMethod::ClientSecretPost | TokenEndpointAuthMethod::None => {
                    oauth2::AuthType::RequestBody
                }
            });
        let client_secret = client_secret.filter(|_| settings.auth_method != TokenEndpointAuthMethod::None);
        if let Some(secret) = &client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.clone()));
        }
        Ok(Self {
            client,
            settings,
            client_secret,
        })
    }

    /// The provider URL to send the user to, for `state` and the session's PKCE verifier.
    pub fn authorize_url(&self, state: &str, pkce_verifier: &str) -> url::Url {
        let state = state.to_owned();
        let mut req = self
            .client
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(self.settings.scopes.iter().cloned().map(Scope::new));
        if self.settings.pkce {
            let verifier = PkceCodeVerifier::new(pkce_verifier.to_owned());
            req = req.set_pkce_challenge(PkceCodeChallenge::from_code_verifier_sha256(&verifier));
        }
        for (k, v) in &self.settings.extra_authorization_params {
            req = req.add_extra_param(k.clone(), v.clone());
        }
        req.url().0
    }

    /// Exchanges an authorization code for tokens.
    pub async fn exchange_code(
        &self,
        http: &reqwest::Client,
        code: &str,
        pkce_verifier: &str,
        now: Timestamp,
    ) -> Result<TokenSet, TokenEndpointError> {
        let mut req = self.client.exchange_code(AuthorizationCode::new(code.to_owned()));
        if self.settings.pkce {
            req = req.set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()));
        }
        let resp = req.request_async(http).await.map_err(classify)?;
        Ok(self.token_set(resp, now))
    }

    /// Uses a refresh token. The result keeps the old refresh token when the provider sends none.
    pub async fn refresh(
        &self,
        http: &reqwest::Client,
        current: &TokenSet,
        now: Timestamp,
    ) -> Result<TokenSet, TokenEndpointError> {
        let Some(refresh) = current.refresh_token.clone() else {
            return Err(TokenEndpointError::Rejected {
                code: "no_refresh_token".into(),
                description: Some("the provider issued no refresh token".into()),
            });
        };
        let token = RefreshToken::new(refresh);
        let watching = RetryAfterWatch {
            http: http.clone(),
            retry_after: Default::default(),
        };
        let result = self
            .client
            .exchange_refresh_token(&token)
            .request_async(&watching)
            .await;
        let waited = watching.retry_after.lock().ok().and_then(|s| *s);
        match (result.map_err(classify), waited) {
            (Ok(resp), _) => Ok(current.renewed_by(self.token_set(resp, now))),
            (Err(TokenEndpointError::Transient(message)), Some(retry_after)) => {
                Err(TokenEndpointError::RetryAfter { message, retry_after })
            }
            (Err(e), _) => Err(e),
        }
    }

    /// Revokes the refresh token (or else the access token) at the RFC 7009 endpoint, if the
    /// Connection has one. Returns `Ok(false)` when there is nothing to call.
    ///
    /// Done here rather than by the `oauth2` crate, which refuses plain-HTTP endpoints outright: we
    /// require HTTPS too, except on loopback addresses (local providers, tests).
    pub async fn revoke(&self, http: &reqwest::Client, tokens: &TokenSet) -> Result<bool, String> {
        let Some(endpoint) = &self.settings.revocation_url else {
            return Ok(false);
        };
        let url = url::Url::parse(endpoint).map_err(|e| format!("revocationUrl is not a valid URL: {e}"))?;
        if url.scheme() != "https" && !is_loopback(&url) {
            return Err("revocationUrl must use https".to_owned());
        }
        let (token, hint) = match &tokens.refresh_token {
            Some(r) => (r.as_str(), "refresh_token"),
            None => (tokens.access_token.as_str(), "access_token"),
        };
        let mut form = vec![("token", token), ("token_type_hint", hint)];
        let client_id = self.settings.client_id.as_str();
        let mut req = http.post(url);
        match (&self.client_secret, self.settings.auth_method) {
            (Some(secret), TokenEndpointAuthMethod::ClientSecretBasic) => {
                req = req.basic_auth(client_id, Some(secret))
            }
            (Some(secret), TokenEndpointAuthMethod::ClientSecretPost) => {
                form.extend([("client_id", client_id), ("client_secret", secret.as_str())]);
            }
            _ => form.push(("client_id", client_id)),
        }
        let resp = req
            .form(&form)
            .send()
            .await
            .map_err(|e| format!("revocation endpoint unreachable: {}", chain(&e)))?;
        // RFC 7009 2.2: 200 means revoked (or already invalid).
        match resp.status() {
            s if s.is_success() => Ok(true),
            s => Err(format!("revocation refused with HTTP {}", s.as_u16())),
        }
    }

    fn token_set(&self, resp: Response, now: Timestamp) -> TokenSet {
        let expires_at = resp
            .expires_in()
            .and_then(|d| now.checked_add(jiff::SignedDuration::try_from(d).ok()?).ok());
        let scopes = match resp.scopes() {
            Some(s) => s.iter().map(|s| s.to_string()).collect(),
            // RFC 6749 5.1: an omitted scope means the requested scopes were granted.
            None => self.settings.scopes.clone(),
        };
        let metadata = resp
            .extra_fields()
            .fields
            .iter()
            .filter(|(k, _)| !NOT_METADATA.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        TokenSet {
            access_token: resp.access_token().secret().clone(),
            refresh_token: resp.refresh_token().map(|r| r.secret().clone()),
            token_type: token_type_name(resp.token_type()),
            expires_at,
            scopes,
            obtained_at: now,
            metadata,
            ..Default::default()
        }
    }
}

fn token_type_name(t: &BasicTokenType) -> String {
    match t {
        BasicTokenType::Bearer => "Bearer".to_owned(),
        BasicTokenType::Mac => "MAC".to_owned(),
        BasicTokenType::Extension(s) => s.clone(),
    }
}

fn classify<RE: std::error::Error>(e: RequestTokenError<RE, BasicErrorResponse>) -> TokenEndpointError {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let code = r.error().to_string();
            let description = r.error_description().map(|d| truncate(d, 200));
            match r.error() {
                BasicErrorResponseType::InvalidClient | BasicErrorResponseType::UnauthorizedClient => {
                    TokenEndpointError::ClientRejected { code, description }
                }
                // Dex answers `invalid_request` for refresh tokens it no longer knows.
                BasicErrorResponseType::InvalidGrant
                | BasicErrorResponseType::InvalidRequest
                | BasicErrorResponseType::InvalidScope => TokenEndpointError::Rejected { code, description },
                BasicErrorResponseType::UnsupportedGrantType => {
                    TokenEndpointError::ClientRejected { code, description }
                }
                BasicErrorResponseType::Extension(_) => {
                    TokenEndpointError::Transient(format!("error {code}{}", describe(&description)))
                }
            }
        }
        RequestTokenError::Request(e) => {
            TokenEndpointError::Transient(format!("request failed: {}", chain(&e)))
        }
        RequestTokenError::Parse(..) => TokenEndpointError::Transient("malformed token response".into()),
        RequestTokenError::Other(s) => TokenEndpointError::Transient(truncate(&s, 200)),
    }
}

/// An error and its sources, for messages (reqwest errors name the URL, never the body).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    truncate(&out, 300)
}

/// An HTTP client for the `oauth2` crate that remembers the `Retry-After` of a 429/503 answer
/// (the crate's errors do not carry headers).
struct RetryAfterWatch {
    http: reqwest::Client,
    retry_after: std::sync::Arc<std::sync::Mutex<Option<Duration>>>,
}

type HttpFuture<'c> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<oauth2::HttpResponse, oauth2::HttpClientError<reqwest::Error>>,
            > + Send
            + Sync
            + 'c,
    >,
>;

impl<'c> oauth2::AsyncHttpClient<'c> for RetryAfterWatch {
    type Error = oauth2::HttpClientError<reqwest::Error>;
    type Future = HttpFuture<'c>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let resp = oauth2::AsyncHttpClient::call(&self.http, request).await?;
            if matches!(resp.status().as_u16(), 429 | 503)
                && let Some(d) = parse_retry_after(resp.headers())
                && let Ok(mut slot) = self.retry_after.lock()
            {
                *slot = Some(d);
            }
            Ok(resp)
        })
    }
}

/// `Retry-After` in seconds (HTTP dates are rare at token endpoints and are ignored), capped at an
/// hour so a hostile provider cannot park an account forever.
fn parse_retry_after(headers: &oauth2::http::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get("retry-after")?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(3600)))
}

/// The HTTP client for token endpoints: no redirects (the oauth2 crate requires it, against SSRF),
/// bounded timeouts.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .user_agent(concat!("agent-auth-operator/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> OAuth2Settings {
        serde_json::from_value(serde_json::json!({"clientId": "c", "scopes": ["openid", "email"]})).unwrap()
    }

    #[test]
    fn explicit_settings_win_over_the_preset() {
        let mut s = spec();
        s.token_url = Some("https://example.test/token".into());
        s.extra_authorization_params
            .insert("prompt".into(), "select_account".into());
        let r = Settings::resolve(Some("google"), &s).unwrap();
        assert_eq!(r.token_url, "https://example.test/token");
        assert_eq!(
            r.authorization_url,
            "https://accounts.google.com/o/oauth2/v2/auth"
        );
        assert_eq!(r.extra_authorization_params["prompt"], "select_account");
        assert_eq!(r.extra_authorization_params["access_type"], "offline");
        assert!(r.pkce);
    }

    #[test]
    fn missing_endpoints_and_unknown_providers_are_config_errors() {
        assert!(
            Settings::resolve(None, &spec())
                .unwrap_err()
                .0
                .contains("authorizationUrl")
        );
        assert!(
            Settings::resolve(Some("myspace"), &spec())
                .unwrap_err()
                .0
                .contains("unknown provider")
        );
    }

    #[tokio::test]
    async fn revocation_needs_https_except_on_loopback() {
        let mut s = spec();
        s.revocation_url = Some("http://provider.example.test/revoke".into());
        let settings = Settings::resolve(Some("google"), &s).unwrap();
        let c = OAuthClient::new(settings, None, "https://gw.test/oauth/callback").unwrap();
        let err = c
            .revoke(&http_client().unwrap(), &TokenSet::default())
            .await
            .unwrap_err();
        assert!(err.contains("https"), "{err}");
        assert!(is_loopback(&url::Url::parse("http://127.0.0.1:8/x").unwrap()));
        assert!(is_loopback(&url::Url::parse("http://[::1]/x").unwrap()));
        assert!(!is_loopback(&url::Url::parse("http://10.0.0.1/x").unwrap()));
    }

    #[test]
    fn authorize_url_carries_state_pkce_scopes_and_extra_params() {
        let settings = Settings::resolve(Some("google"), &spec()).unwrap();
        let c = OAuthClient::new(settings, Some("s".into()), "https://gw.test/oauth/callback").unwrap();
        let url = c.authorize_url("the-state", "v".repeat(43).as_str());
        let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "the-state");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["scope"], "openid email");
        assert_eq!(q["access_type"], "offline");
        assert_eq!(q["redirect_uri"], "https://gw.test/oauth/callback");
        assert!(
            !url.as_str().contains(&"v".repeat(43)),
            "the verifier never leaves"
        );
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Token endpoint bodies of any shape parse to a token set or an error, never a panic.
        #[test]
        fn token_responses_of_any_shape_never_panic(body in prop_oneof![
            ".{0,300}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..300),
            (".{0,40}", "[a-zA-Z]{0,10}", any::<i64>(), ".{0,40}").prop_map(|(t, ty, e, sc)| {
                serde_json::json!({"access_token": t, "token_type": ty, "expires_in": e, "scope": sc}).to_string().into_bytes()
            }),
        ]) {
            if let Ok(resp) = serde_json::from_slice::<Response>(&body) {
                let settings = Settings::resolve(Some("google"), &serde_json::from_value(serde_json::json!({"clientId": "c"})).unwrap()).unwrap();
                let client = OAuthClient::new(settings, None, "https://gw.test/cb").unwrap();
                let t = client.token_set(resp, jiff::Timestamp::UNIX_EPOCH);
                prop_assert!(t.metadata.keys().all(|k| !NOT_METADATA.contains(&k.as_str())));
            }
        }
    }
}
