//! The `oauth2` crate's client for one Connection and the flows on it: the authorization URL, the
//! code exchange, refresh, the client credentials grant and RFC 7009 revocation.

use std::time::Duration;

use jiff::Timestamp;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, StandardRevocableToken,
    TokenResponse, TokenUrl,
};

use super::classify::TokenEndpointError;
use super::identity;
use super::transport::{ProviderHttp, Response};
use crate::api::TokenEndpointAuthMethod;
use crate::auth::error::ConfigError;
use crate::auth::fields::is_credential;
use crate::auth::quirks;
use crate::auth::settings::Settings;
use crate::egress::EgressClient;
use crate::store::TokenSet;

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

/// Most of a revocation endpoint's error answer read (for its `error` code).
const REVOCATION_ERROR_MAX: usize = 4096;

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
        let resp = provider.outcome(result, &self.secrets(&[code, pkce_verifier]))?;
        let mut tokens = self.token_set(resp, now);
        tokens.identity = self.identity(http, provider.id_token(), &tokens, now).await?;
        Ok(tokens)
    }

    /// Who authorized: the `id_token`'s claims (one that fails its checks fails the exchange,
    /// since it names another issuer or client), else the userinfo endpoint's answer (a failure
    /// there only leaves the identity unknown).
    async fn identity(
        &self,
        http: &EgressClient,
        id_token: Option<String>,
        tokens: &TokenSet,
        now: Timestamp,
    ) -> Result<Option<crate::api::ProviderIdentity>, TokenEndpointError> {
        if let Some(raw) = id_token {
            return identity::from_id_token(&raw, &self.settings, now)
                .map(Some)
                .map_err(|e| TokenEndpointError::Rejected {
                    code: "invalid_id_token".into(),
                    description: Some(e.to_string()),
                });
        }
        let Some(url) = &self.settings.userinfo_url else {
            return Ok(None);
        };
        match identity::from_userinfo(http, url, &tokens.authorization(), &self.settings).await {
            Ok(id) => Ok(Some(id)),
            Err(e) => {
                tracing::warn!(error = %e, "provider identity unknown");
                Ok(None)
            }
        }
    }

    /// Every secret a request to the provider may carry, for scrubbing its answer.
    fn secrets(&self, carried: &[&str]) -> Vec<String> {
        carried
            .iter()
            .map(|s| (*s).to_owned())
            .chain(self.client_secret.clone())
            .filter(|s| !s.is_empty())
            .collect()
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
        let secrets = self.secrets(&[refresh.as_str()]);
        let token = RefreshToken::new(refresh);
        let provider = ProviderHttp::new(http, self.settings.quirks.clone(), now, Some(timeout));
        let result = self
            .refresh_client
            .as_ref()
            .unwrap_or(&self.client)
            .exchange_refresh_token(&token)
            .request_async(&provider)
            .await;
        let resp = provider.outcome(result, &secrets)?;
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
        let resp = provider.outcome(result, &self.secrets(&[]))?;
        Ok(self.token_set(resp, now))
    }

    fn provider_http(&self, http: &EgressClient, now: Timestamp) -> ProviderHttp {
        ProviderHttp::new(http, self.settings.quirks.clone(), now, None)
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
        // RFC 7009 2.2: 200 means revoked (or already invalid). Of a refusal only the status and
        // the RFC 6749 code are kept, never the endpoint's own words.
        let status = resp.status();
        if status.is_success() {
            return Ok(true);
        }
        let code = crate::http::read_limited(resp, REVOCATION_ERROR_MAX)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("error")?.as_str().map(super::classify::error_code));
        Err(match code {
            Some(code) => format!("revocation refused with HTTP {} ({code})", status.as_u16()),
            None => format!("revocation refused with HTTP {}", status.as_u16()),
        })
    }

    pub(super) fn token_set(&self, resp: Response, now: Timestamp) -> TokenSet {
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
            .filter(|(k, _)| !is_credential(k) && wanted(k))
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

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::api::AuthType;

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
                prop_assert!(t.metadata.keys().all(|k| !is_credential(k)));
            }
        }
    }
}
