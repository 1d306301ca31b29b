//! OAuth 2.0 authorization code flow with PKCE, refresh, the client credentials grant and RFC 7009
//! revocation, on the `oauth2` crate. Token endpoint answers pass through [`quirks::normalise`]
//! first, so that providers that bend RFC 6749 parse like the rest. Errors are classified for the
//! controller: a rejected grant needs the user again, a bad client needs the Connection fixed,
//! anything else is transient and retried with backoff.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, ExtraTokenFields, HttpClientError, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RefreshToken, RequestTokenError, StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use crate::api::{AuthType, OAuth2Settings, TokenEndpointAuthMethod};
use crate::auth::catalog;
use crate::auth::quirks::{self, TokenQuirks};
use crate::egress::{EgressClient, SendError};
use crate::store::TokenSet;

/// Token response fields beyond the standard ones, kept as provider metadata.
#[derive(Clone, Debug, Deserialize, Serialize, Default)]
pub struct Extra {
    #[serde(flatten)]
    fields: BTreeMap<String, serde_json::Value>,
}
impl ExtraTokenFields for Extra {}

/// Fields of a token response that are credentials themselves and never become metadata.
const NOT_METADATA: &[&str] = quirks::CREDENTIAL_FIELDS;

type Response = StandardTokenResponse<Extra, BasicTokenType>;
type Client = oauth2::Client<
    BasicErrorResponse,
    Response,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointMaybeSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// A Connection whose OAuth 2.0 settings cannot be used. The message is shown in its status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Why a call to the token endpoint failed. Messages contain no token material and no remote
/// text: only the RFC 6749 error code (restricted to its alphabet) or a fixed phrase.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenEndpointError {
    /// The grant is no longer valid (`invalid_grant`, revoked, expired): the user must authorize again.
    #[error("the provider rejected the grant ({code})")]
    Rejected {
        code: String,
        /// The provider's `error_description`, for debug logs only; never shown.
        description: Option<String>,
    },
    /// The provider refused the client itself (`invalid_client`): the Connection needs fixing.
    #[error("the provider rejected the client ({code})")]
    ClientRejected {
        code: String,
        /// The provider's `error_description`, for debug logs only; never shown.
        description: Option<String>,
    },
    /// The Connection or a Secret it names cannot be used; our own words, safe to show.
    #[error("{0}")]
    Misconfigured(String),
    /// Network trouble, 5xx, malformed responses: worth retrying. `delivery` tells whether the
    /// provider may have acted on the request (and rotated a refresh token) all the same.
    #[error("token endpoint unavailable: {message}")]
    Transient { message: String, delivery: Delivery },
    /// 429/503 with `Retry-After`: retry, but not before the provider asked.
    #[error("token endpoint asked to retry after {}s: {message}", retry_after.as_secs())]
    RetryAfter { message: String, retry_after: Duration },
}

/// What became of a request that failed transiently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// It provably never reached the endpoint (refused connect, DNS, TLS, egress policy, shutdown).
    NotSent,
    /// The endpoint answered with an error: the grant was not used.
    Answered,
    /// Sent, and no usable answer came (timeout after sending, reset while reading, an
    /// unreadable success): the provider may have rotated the refresh token.
    NoAnswer,
}

impl TokenEndpointError {
    /// A transient failure in our own words, known not to have used the grant.
    pub fn transient(message: impl Into<String>) -> Self {
        TokenEndpointError::Transient {
            message: message.into(),
            delivery: Delivery::Answered,
        }
    }

    /// The request may have been acted upon although no usable answer came.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            TokenEndpointError::Transient {
                delivery: Delivery::NoAnswer,
                ..
            }
        )
    }
}

/// An RFC 6749 error code as shown: its own alphabet only, short, else a neutral word.
pub fn error_code(raw: &str) -> String {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok { raw.to_owned() } else { "error".to_owned() }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

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

/// An OAuth 2.0 client for one Connection, ready to talk to its provider.
pub struct OAuthClient {
    client: Client,
    /// The same client aimed at the preset's separate refresh endpoint, when it has one.
    refresh_client: Option<Client>,
    settings: Settings,
    client_secret: Option<String>,
    redirect_uri: url::Url,
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
        let auth_url = settings
            .authorization_url
            .clone()
            .map(AuthUrl::new)
            .transpose()
            .map_err(bad("authorizationUrl"))?;
        let redirect = url::Url::parse(redirect_uri).map_err(bad("redirect URI"))?;
        let mut client = oauth2::Client::new(ClientId::new(settings.client_id.clone()))
            .set_auth_uri_option(auth_url)
            .set_token_uri(TokenUrl::new(settings.token_url.clone()).map_err(bad("tokenUrl"))?)
            // The exact string, as registered at the provider (no re-serialisation).
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
        let refresh_client = match &settings.refresh_url {
            Some(u) => Some(
                client
                    .clone()
                    .set_token_uri(TokenUrl::new(u.clone()).map_err(bad("refreshUrl"))?),
            ),
            None => None,
        };
        Ok(Self {
            client,
            refresh_client,
            settings,
            client_secret,
            redirect_uri: redirect,
        })
    }

    /// The grant an authorization through this client gives (pinned in the operator's copy).
    pub fn grant(&self) -> crate::store::Grant {
        self.settings.grant()
    }

    /// The provider URL to send the user to, for `state` and the session's PKCE verifier. Scopes
    /// are joined and named as the provider expects (Slack: `user_scope=a,b`).
    ///
    /// A Connection without an authorization endpoint (`ClientCredentials`) has no user flow; the
    /// gateway never asks, but should it, the answer is our own callback with the RFC 6749
    /// `unsupported_response_type` error, so the user sees an error page rather than a dead link.
    pub fn authorize_url(&self, state: &str, pkce_verifier: &str) -> url::Url {
        let owned_state = state.to_owned();
        let Ok(mut req) = self.client.authorize_url(move || CsrfToken::new(owned_state)) else {
            let mut url = self.redirect_uri.clone();
            url.query_pairs_mut()
                .append_pair("error", "unsupported_response_type")
                .append_pair("state", state);
            return url;
        };
        if !self.settings.scopes.is_empty() {
            req = req.add_extra_param(
                self.settings.scope_param.clone(),
                self.settings.scopes.join(&self.settings.scope_separator),
            );
        }
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
        http: &EgressClient,
        code: &str,
        pkce_verifier: &str,
        now: Timestamp,
    ) -> Result<TokenSet, TokenEndpointError> {
        let mut req = self.client.exchange_code(AuthorizationCode::new(code.to_owned()));
        if self.settings.pkce {
            req = req.set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()));
        }
        let provider = self.provider_http(http, now);
        let result = req.request_async(&provider).await;
        let resp = provider.outcome(result)?;
        Ok(self.token_set(resp, now))
    }

    /// Uses a refresh token. The result keeps the old refresh token when the provider sends none,
    /// and the old metadata where the refresh response does not repeat it (Salesforce, Slack).
    /// `timeout` bounds the whole exchange (sending, waiting, reading the answer).
    pub async fn refresh(
        &self,
        http: &EgressClient,
        current: &TokenSet,
        now: Timestamp,
        timeout: Duration,
    ) -> Result<TokenSet, TokenEndpointError> {
        let Some(refresh) = current.refresh_token.clone() else {
            return Err(TokenEndpointError::Rejected {
                code: "no_refresh_token".into(),
                description: Some("the provider issued no refresh token".into()),
            });
        };
        let token = RefreshToken::new(refresh);
        let provider = ProviderHttp {
            timeout: Some(timeout),
            ..self.provider_http(http, now)
        };
        let result = self
            .refresh_client
            .as_ref()
            .unwrap_or(&self.client)
            .exchange_refresh_token(&token)
            .request_async(&provider)
            .await;
        let resp = provider.outcome(result)?;
        let mut renewed = current.renewed_by(self.token_set(resp, now));
        for (k, v) in &current.metadata {
            renewed.metadata.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Ok(renewed)
    }

    /// Fetches a token with the client credentials grant (RFC 6749 4.4): no user, no refresh
    /// token; call again before it expires. `invalid_client` means the Connection needs fixing.
    pub async fn client_credentials(
        &self,
        http: &EgressClient,
        now: Timestamp,
    ) -> Result<TokenSet, TokenEndpointError> {
        let mut req = self.client.exchange_client_credentials();
        if !self.settings.scopes.is_empty() {
            req = req.add_extra_param("scope", self.settings.scopes.join(&self.settings.scope_separator));
        }
        let provider = self.provider_http(http, now);
        let result = req.request_async(&provider).await;
        let resp = provider.outcome(result)?;
        Ok(self.token_set(resp, now))
    }

    fn provider_http(&self, http: &EgressClient, now: Timestamp) -> ProviderHttp {
        ProviderHttp {
            http: http.clone(),
            quirks: self.settings.quirks.clone(),
            now,
            timeout: None,
            retry_after: Default::default(),
            status: Default::default(),
        }
    }

    /// Revokes the refresh token (or else the access token) at the RFC 7009 endpoint, if the
    /// Connection has one. Returns `Ok(false)` when there is nothing to call. The endpoint goes
    /// through the egress policy like every other tenant-set URL; the error is a fixed phrase.
    ///
    /// Done here rather than by the `oauth2` crate, which refuses plain-HTTP endpoints outright
    /// (the egress policy allows them for allowlisted hosts).
    pub async fn revoke(&self, http: &EgressClient, tokens: &TokenSet) -> Result<bool, String> {
        let Some(endpoint) = &self.settings.revocation_url else {
            return Ok(false);
        };
        let (token, hint) = match &tokens.refresh_token {
            Some(r) => (r.as_str(), "refresh_token"),
            None => (tokens.access_token.as_str(), "access_token"),
        };
        let mut form = vec![("token", token), ("token_type_hint", hint)];
        let client_id = self.settings.client_id.as_str();
        let mut req = http
            .post(endpoint)
            .map_err(|e| format!("revocationUrl refused: {e}"))?;
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
            .map_err(|e| format!("revocation failed: {}", crate::egress::phrase(&e)))?;
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
            Some(s) => quirks::granted_scopes(
                &self.settings.scopes,
                s.iter().map(|s| s.to_string()).collect(),
                &self.settings.quirks,
            ),
            // RFC 6749 5.1: an omitted scope means the requested scopes were granted.
            None => self.settings.scopes.clone(),
        };
        // Only allowlisted keys: the preset's metadata fields (and the refresh token's expiry).
        // A Connection without a preset stores none, so an endpoint's unknown fields never reach
        // the agent Secret.
        let wanted = |k: &str| {
            k == quirks::REFRESH_EXPIRES_AT
                || self
                    .settings
                    .quirks
                    .metadata
                    .as_ref()
                    .is_some_and(|m| m.contains_key(k))
        };
        let metadata = resp
            .extra_fields()
            .fields
            .iter()
            .filter(|(k, _)| !NOT_METADATA.contains(&k.as_str()) && wanted(k))
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

fn classify(e: RequestTokenError<HttpClientError<SendError>, BasicErrorResponse>) -> TokenEndpointError {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let code = error_code(r.error().as_ref());
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
                    TokenEndpointError::transient(format!("the endpoint answered error {code}"))
                }
            }
        }
        RequestTokenError::Request(HttpClientError::Reqwest(e)) => TokenEndpointError::Transient {
            message: e.to_string(),
            delivery: match *e {
                SendError::NotSent(_) | SendError::Refused(_) => Delivery::NotSent,
                SendError::Timeout(_) | SendError::NoAnswer(_) => Delivery::NoAnswer,
            },
        },
        RequestTokenError::Request(HttpClientError::Http(_)) => TokenEndpointError::Transient {
            message: "the request could not be built".into(),
            delivery: Delivery::NotSent,
        },
        RequestTokenError::Request(_) => TokenEndpointError::Transient {
            message: "the endpoint's answer could not be read".into(),
            delivery: Delivery::NoAnswer,
        },
        RequestTokenError::Parse(..) => TokenEndpointError::transient("malformed token response"),
        RequestTokenError::Other(s) => match s.strip_prefix("HTTP ") {
            // The crate words unexpected statuses itself; keep only the status.
            Some(rest) => TokenEndpointError::transient(format!(
                "the endpoint answered HTTP {}",
                rest.chars().take_while(char::is_ascii_digit).collect::<String>()
            )),
            None => TokenEndpointError::transient("unexpected answer from the endpoint"),
        },
    }
}

/// The HTTP client the `oauth2` crate talks through: it rewrites provider quirks into RFC 6749
/// shape ([`quirks::normalise`]) before the crate parses the answer, and remembers the
/// `Retry-After` of a 429/503 answer (the crate's errors do not carry headers).
struct ProviderHttp {
    http: EgressClient,
    quirks: TokenQuirks,
    now: Timestamp,
    /// Longest wait for the whole answer, when not the client's default.
    timeout: Option<Duration>,
    retry_after: std::sync::Arc<std::sync::Mutex<Option<Duration>>>,
    /// The status of the answer, after quirks: a success that does not parse may have rotated.
    status: std::sync::Arc<std::sync::Mutex<Option<u16>>>,
}

impl ProviderHttp {
    /// Classifies the result of a request made through `self`; a transient failure the provider
    /// asked us to retry later becomes `RetryAfter`.
    fn outcome(
        &self,
        result: Result<Response, RequestTokenError<HttpClientError<SendError>, BasicErrorResponse>>,
    ) -> Result<Response, TokenEndpointError> {
        let waited = self.retry_after.lock().ok().and_then(|s| *s);
        let success = self
            .status
            .lock()
            .ok()
            .and_then(|s| *s)
            .is_some_and(|s| (200..300).contains(&s));
        match (result.map_err(classify), waited) {
            (Err(TokenEndpointError::Transient { message, .. }), Some(retry_after)) => {
                Err(TokenEndpointError::RetryAfter { message, retry_after })
            }
            // The provider said yes in a way we cannot read: it may have rotated.
            (Err(TokenEndpointError::Transient { message, .. }), None) if success => {
                Err(TokenEndpointError::Transient {
                    message,
                    delivery: Delivery::NoAnswer,
                })
            }
            (other, _) => other,
        }
    }
}

type HttpFuture<'c> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<oauth2::HttpResponse, HttpClientError<SendError>>>
            + Send
            + Sync
            + 'c,
    >,
>;

impl<'c> oauth2::AsyncHttpClient<'c> for ProviderHttp {
    type Error = HttpClientError<SendError>;
    type Future = HttpFuture<'c>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let resp = send(&self.http, request, self.timeout).await?;
            let (mut parts, mut body) = resp.into_parts();
            if let Some(rewritten) = quirks::normalise(parts.status.as_u16(), &body, &self.quirks, self.now)
                && let Ok(status) = oauth2::http::StatusCode::from_u16(rewritten.status)
            {
                parts.status = status;
                parts.headers.insert(
                    oauth2::http::header::CONTENT_TYPE,
                    oauth2::http::HeaderValue::from_static("application/json"),
                );
                parts.headers.remove(oauth2::http::header::CONTENT_LENGTH);
                body = rewritten.body;
            }
            if let Ok(mut slot) = self.status.lock() {
                *slot = Some(parts.status.as_u16());
            }
            if matches!(parts.status.as_u16(), 429 | 503)
                && let Some(d) = crate::http::retry_after(&parts.headers)
                && let Ok(mut slot) = self.retry_after.lock()
            {
                *slot = Some(d);
            }
            Ok(oauth2::http::Response::from_parts(parts, body))
        })
    }
}

/// Longest token endpoint answer read; more is cut off (and then fails to parse).
const MAX_ANSWER: usize = 64 * 1024;

/// Sends one request of the `oauth2` crate through the egress client and reads a bounded answer.
async fn send(
    http: &EgressClient,
    request: oauth2::HttpRequest,
    timeout: Option<Duration>,
) -> Result<oauth2::HttpResponse, HttpClientError<SendError>> {
    let mut request = reqwest::Request::try_from(request)
        .map_err(|e| HttpClientError::Reqwest(Box::new(SendError::NotSent(e))))?;
    if timeout.is_some() {
        *request.timeout_mut() = timeout;
    }
    let resp = http
        .execute(request)
        .await
        .map_err(|e| HttpClientError::Reqwest(Box::new(e)))?;
    let mut builder = oauth2::http::Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        builder = builder.header(k, v);
    }
    let read = crate::http::read_capped(resp, MAX_ANSWER)
        .await
        .map_err(|e| HttpClientError::Reqwest(Box::new(SendError::NoAnswer(e))))?;
    builder.body(read.body.to_vec()).map_err(HttpClientError::Http)
}

/// The HTTP client for token endpoints: the egress policy, no redirects (the oauth2 crate requires
/// it, against SSRF), bounded timeouts.
pub fn http_client(policy: crate::egress::EgressPolicy) -> Result<EgressClient, reqwest::Error> {
    EgressClient::new(policy, Duration::from_secs(15))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> OAuth2Settings {
        serde_json::from_value(serde_json::json!({"clientId": "c", "scopes": ["openid", "email"]})).unwrap()
    }

    #[test]
    fn a_configuration_problem_never_reads_as_a_provider_refusal() {
        // Nothing reached the provider: the message is ours alone (issue #14, defect 3).
        let e = TokenEndpointError::Misconfigured("Secret cc-secret has no key \"key\"".into());
        assert_eq!(e.to_string(), "Secret cc-secret has no key \"key\"");
        assert!(!e.to_string().contains("rejected"));
        assert!(!e.outcome_unknown());
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

    #[tokio::test]
    async fn revocation_goes_through_the_egress_policy() {
        let mut s = spec();
        s.revocation_url = Some("http://provider.example.test/revoke".into());
        let settings = Settings::resolve(AuthType::OAuth2, Some("google"), &s).unwrap();
        let c = OAuthClient::new(settings, None, "https://gw.test/oauth/callback").unwrap();
        let err = c.revoke(&test_http(), &TokenSet::default()).await.unwrap_err();
        assert!(err.contains("https"), "{err}");
        let mut s = spec();
        s.revocation_url = Some("https://169.254.169.254/revoke".into());
        let settings = Settings::resolve(AuthType::OAuth2, Some("google"), &s).unwrap();
        let c = OAuthClient::new(settings, None, "https://gw.test/oauth/callback").unwrap();
        let err = c.revoke(&test_http(), &TokenSet::default()).await.unwrap_err();
        assert!(err.contains("egress policy"), "{err}");
    }

    /// An egress client that allows the loopback test servers.
    fn test_http() -> EgressClient {
        http_client(crate::egress::EgressPolicy::new(vec![
            "127.0.0.1/32".parse().unwrap(),
        ]))
        .unwrap()
    }

    #[test]
    fn authorize_url_carries_state_pkce_scopes_and_extra_params() {
        let settings = Settings::resolve(AuthType::OAuth2, Some("google"), &spec()).unwrap();
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

    fn bare() -> OAuth2Settings {
        serde_json::from_value(serde_json::json!({"clientId": "c"})).unwrap()
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
    fn slack_scopes_go_in_user_scope_joined_by_commas() {
        let mut s = bare();
        s.scopes = vec!["chat:write".into(), "channels:read".into()];
        let settings = Settings::resolve(AuthType::OAuth2, Some("slack"), &s).unwrap();
        let c = OAuthClient::new(settings, Some("s".into()), "https://gw.test/oauth/callback").unwrap();
        let q: BTreeMap<String, String> = c
            .authorize_url("st", &"v".repeat(43))
            .query_pairs()
            .into_owned()
            .collect();
        assert_eq!(q["user_scope"], "chat:write,channels:read");
        assert!(!q.contains_key("scope"));
        s.scopes = vec!["a,b".into()];
        assert!(
            Settings::resolve(AuthType::OAuth2, Some("slack"), &s).is_err(),
            "a comma inside a scope"
        );
    }

    #[test]
    fn client_credentials_needs_only_a_token_url() {
        let mut s = bare();
        s.token_url = Some("https://idp.example.test/token".into());
        s.scopes = vec!["api".into()];
        let r = Settings::resolve(AuthType::ClientCredentials, None, &s).unwrap();
        assert_eq!(r.authorization_url, None);
        assert_eq!(r.scopes, ["api"]);
        // No user: the preset's user-flow scopes are not added.
        s.token_url = None;
        s.scopes = vec!["https://graph.microsoft.com/.default".into()];
        let ms = Settings::resolve(AuthType::ClientCredentials, Some("microsoft"), &s).unwrap();
        assert_eq!(ms.scopes, ["https://graph.microsoft.com/.default"]);
        assert!(
            Settings::resolve(AuthType::ClientCredentials, None, &bare())
                .unwrap_err()
                .0
                .contains("tokenUrl")
        );
        assert!(Settings::resolve(AuthType::APIKey, None, &bare()).is_err());
        // Asked for a user flow anyway, the client sends the user back to our own callback.
        let c = OAuthClient::new(r, None, "https://gw.test/oauth/callback").unwrap();
        let url = c.authorize_url("st", "v");
        assert_eq!(
            url.as_str(),
            "https://gw.test/oauth/callback?error=unsupported_response_type&state=st"
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

    /// What a fake token endpoint saw.
    #[derive(Debug, Clone)]
    struct Seen {
        path: String,
        form: BTreeMap<String, String>,
        basic_auth: bool,
    }

    type Responder = fn(&str, &BTreeMap<String, String>) -> (u16, serde_json::Value);

    /// A token endpoint on loopback answering recorded provider bodies.
    async fn provider(respond: Responder) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Seen>>>) {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| {
                let log = log.clone();
                async move {
                    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
                        .into_owned()
                        .collect();
                    let (status, json) = respond(uri.path(), &form);
                    log.lock().unwrap().push(Seen {
                        path: uri.path().to_owned(),
                        form,
                        basic_auth: headers.contains_key("authorization"),
                    });
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        json.to_string(),
                    )
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), seen)
    }

    fn client_for(provider: &str, auth_type: AuthType, base: &str, scopes: &[&str]) -> OAuthClient {
        let mut s = bare();
        s.token_url = Some(format!("{base}/token"));
        s.scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        let settings = Settings::resolve(auth_type, Some(provider), &s).unwrap();
        OAuthClient::new(
            settings,
            Some("client-secret".into()),
            "https://gw.test/oauth/callback",
        )
        .unwrap()
    }

    #[tokio::test]
    async fn slack_exchange_yields_the_user_token_and_its_metadata() {
        let (base, _) = provider(|_, _| {
            (
                200,
                serde_json::json!({
                    "ok": true, "app_id": "A0KRD7HC3",
                    "authed_user": {"id": "U1234", "scope": "users:read,chat:write", "access_token": "xoxp-user", "token_type": "user"},
                    "access_token": "xoxb-bot", "token_type": "bot", "scope": "commands",
                    "team": {"id": "T9TK3CUKW", "name": "Slack Softworks"}, "enterprise": null
                }),
            )
        })
        .await;
        let c = client_for("slack", AuthType::OAuth2, &base, &[]);
        let t = c
            .exchange_code(&test_http(), "code", &"v".repeat(43), Timestamp::UNIX_EPOCH)
            .await
            .unwrap();
        assert_eq!(t.access_token, "xoxp-user");
        assert_eq!(t.authorization(), "Bearer xoxp-user");
        assert_eq!(t.scopes, ["users:read", "chat:write"]);
        assert_eq!(t.metadata["team_id"], "T9TK3CUKW");
        assert_eq!(t.metadata["user_id"], "U1234");
        assert!(!serde_json::to_string(&t.metadata).unwrap().contains("xox"));
    }

    #[tokio::test]
    async fn errors_sent_with_200_are_classified_like_real_ones() {
        let (base, _) = provider(|_, form| match form.get("grant_type").map(String::as_str) {
            Some("refresh_token") => (
                200,
                serde_json::json!({"ok": false, "error": "invalid_refresh_token"}),
            ),
            _ => (
                200,
                serde_json::json!({"ok": false, "error": "bad_client_secret"}),
            ),
        })
        .await;
        let c = client_for("slack", AuthType::OAuth2, &base, &[]);
        let http = test_http();
        let current = TokenSet {
            refresh_token: Some("xoxe-1-old".into()),
            ..Default::default()
        };
        let err = c
            .refresh(&http, &current, Timestamp::UNIX_EPOCH, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            TokenEndpointError::Rejected {
                code: "invalid_grant".into(),
                description: Some("invalid_refresh_token".into())
            }
        );
        let err = c
            .exchange_code(&http, "code", &"v".repeat(43), Timestamp::UNIX_EPOCH)
            .await
            .unwrap_err();
        assert!(
            matches!(err, TokenEndpointError::ClientRejected { .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn client_credentials_fetches_a_token_with_the_scopes() {
        let (base, seen) = provider(|_, form| {
            if form.get("client_secret").map(String::as_str) == Some("client-secret") {
                (
                    200,
                    serde_json::json!({"access_token": "m2m", "token_type": "Bearer", "expires_in": 3600}),
                )
            } else {
                (401, serde_json::json!({"error": "invalid_client"}))
            }
        })
        .await;
        let c = client_for(
            "microsoft",
            AuthType::ClientCredentials,
            &base,
            &["https://graph.microsoft.com/.default"],
        );
        let now = Timestamp::UNIX_EPOCH;
        let t = c.client_credentials(&test_http(), now).await.unwrap();
        assert_eq!(t.access_token, "m2m");
        assert_eq!(t.refresh_token, None);
        assert_eq!(t.expires_at, Some(now + jiff::SignedDuration::from_secs(3600)));
        assert_eq!(t.scopes, ["https://graph.microsoft.com/.default"]);
        let req = seen.lock().unwrap()[0].clone();
        assert_eq!(req.form["grant_type"], "client_credentials");
        assert_eq!(req.form["scope"], "https://graph.microsoft.com/.default");

        let mut s = bare();
        s.token_url = Some(format!("{base}/token"));
        let settings = Settings::resolve(AuthType::ClientCredentials, None, &s).unwrap();
        let wrong = OAuthClient::new(settings, Some("wrong".into()), "https://gw.test/cb").unwrap();
        let err = wrong.client_credentials(&test_http(), now).await.unwrap_err();
        assert!(
            matches!(err, TokenEndpointError::ClientRejected { ref code, .. } if code == "invalid_client"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn figma_refreshes_at_its_refresh_endpoint_and_keeps_what_it_does_not_resend() {
        let (base, seen) = provider(|path, _| match path {
            "/refresh" => (
                200,
                serde_json::json!({"access_token": "figu_new", "expires_in": 7776000}),
            ),
            _ => (404, serde_json::json!({"error": "not_found"})),
        })
        .await;
        let mut settings = Settings::resolve(AuthType::OAuth2, Some("figma"), &bare()).unwrap();
        settings.token_url = format!("{base}/token");
        settings.refresh_url = Some(format!("{base}/refresh"));
        let c = OAuthClient::new(settings, Some("client-secret".into()), "https://gw.test/cb").unwrap();
        let current = TokenSet {
            access_token: "figu_old".into(),
            refresh_token: Some("figr_keep".into()),
            scopes: vec!["current_user:read".into()],
            metadata: [("user_id".to_owned(), serde_json::json!("1234"))].into(),
            ..Default::default()
        };
        let t = c
            .refresh(
                &test_http(),
                &current,
                Timestamp::UNIX_EPOCH,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(t.access_token, "figu_new");
        assert_eq!(t.token_type, "Bearer");
        assert_eq!(t.refresh_token.as_deref(), Some("figr_keep"));
        assert_eq!(t.metadata["user_id"], "1234");
        let req = seen.lock().unwrap()[0].clone();
        assert_eq!(req.path, "/refresh");
        assert!(req.basic_auth, "Figma authenticates the client with HTTP Basic");
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
                let settings = Settings::resolve(AuthType::OAuth2, Some("google"), &serde_json::from_value(serde_json::json!({"clientId": "c"})).unwrap()).unwrap();
                let client = OAuthClient::new(settings, None, "https://gw.test/cb").unwrap();
                let t = client.token_set(resp, jiff::Timestamp::UNIX_EPOCH);
                prop_assert!(t.metadata.keys().all(|k| !NOT_METADATA.contains(&k.as_str())));
            }
        }
    }
}
