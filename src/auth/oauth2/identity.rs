//! Who authorized: the provider's identity of the user after a code exchange, from the OpenID
//! Connect `id_token` of the token response or, without one, from the userinfo endpoint.
//!
//! The `id_token` came straight from the token endpoint over the egress client, so its signature
//! is not checked (OpenID Connect Core 3.1.3.7, item 6: TLS from the token endpoint authenticates
//! it); its `iss` must still be the Connection's `issuer` when one is set, its `aud` must name the
//! Connection's client, and it must not have expired. The identity is informational (the
//! platform compares it with its own user at the verification step): never a credential.

use jiff::Timestamp;
use serde::Deserialize;

use crate::api::ProviderIdentity;
use crate::auth::settings::Settings;
use crate::egress::EgressClient;

/// Why no identity could be read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The `id_token` is not a JWT or its claims do not parse.
    #[error("the id_token is malformed")]
    Malformed,
    /// The `id_token` names another issuer than the Connection's `issuer`.
    #[error("the id_token was issued by another issuer")]
    WrongIssuer,
    /// The `id_token` was issued to another client.
    #[error("the id_token was issued to another client")]
    WrongAudience,
    /// The `id_token` has expired.
    #[error("the id_token has expired")]
    Expired,
    /// The userinfo endpoint could not be asked or did not answer a JSON object.
    #[error("the userinfo endpoint failed: {0}")]
    Userinfo(String),
}

/// Clock skew accepted on `exp`.
const LEEWAY_SECS: i64 = 60;
/// Longest userinfo answer read.
const MAX_USERINFO: usize = 64 * 1024;

#[derive(Deserialize)]
struct IdClaims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    aud: Audience,
    #[serde(default)]
    exp: Option<i64>,
}

/// `aud` is one string or a list (RFC 7519 4.1.3).
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
    #[default]
    None,
}

impl Audience {
    fn contains(&self, client: &str) -> bool {
        match self {
            Audience::One(a) => a == client,
            Audience::Many(all) => all.iter().any(|a| a == client),
            Audience::None => false,
        }
    }
}

/// The identity an `id_token` states, checked against `settings` (issuer, client) at `now`.
pub fn from_id_token(
    raw: &str,
    settings: &Settings,
    now: Timestamp,
) -> Result<ProviderIdentity, IdentityError> {
    let claims: IdClaims =
        jsonwebtoken::dangerous::insecure_decode_claims(raw).map_err(|_| IdentityError::Malformed)?;
    if let Some(expected) = &settings.issuer
        && claims.iss.as_deref().map(|i| i.trim_end_matches('/')) != Some(expected.trim_end_matches('/'))
    {
        return Err(IdentityError::WrongIssuer);
    }
    if !claims.aud.contains(&settings.client_id) {
        return Err(IdentityError::WrongAudience);
    }
    if claims.exp.is_some_and(|exp| exp + LEEWAY_SECS < now.as_second()) {
        return Err(IdentityError::Expired);
    }
    Ok(ProviderIdentity {
        subject: claims.sub.map(|s| bounded(&s)),
        email: claims.email.map(|s| bounded(&s)),
        issuer: claims.iss.map(|s| bounded(&s)),
    })
}

/// The identity the userinfo endpoint `url` states for `authorization` (`Bearer <token>`), asked
/// through the egress client. `sub` (or a numeric/string `id`, as GitHub's `/user` has) and
/// `email`; the issuer is the Connection's, when set.
pub async fn from_userinfo(
    http: &EgressClient,
    url: &str,
    authorization: &str,
    settings: &Settings,
) -> Result<ProviderIdentity, IdentityError> {
    let failed = |what: &str| IdentityError::Userinfo(what.to_owned());
    let resp = http
        .get(url)
        .map_err(|e| IdentityError::Userinfo(e.to_string()))?
        .header(reqwest::header::AUTHORIZATION, authorization)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| IdentityError::Userinfo(crate::egress::phrase(&e)))?;
    if !resp.status().is_success() {
        return Err(IdentityError::Userinfo(format!(
            "HTTP {}",
            resp.status().as_u16()
        )));
    }
    let body = crate::http::read_capped(resp, MAX_USERINFO)
        .await
        .map_err(|_| failed("the answer could not be read"))?;
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice(&body.body) else {
        return Err(failed("the answer is not a JSON object"));
    };
    let text = |k: &str| match obj.get(k) {
        Some(serde_json::Value::String(s)) => Some(bounded(s)),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    Ok(ProviderIdentity {
        subject: text("sub").or_else(|| text("id")),
        email: text("email"),
        issuer: settings.issuer.clone(),
    })
}

/// Identity values are shown in status: at most 256 characters, no control characters.
fn bounded(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(256).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AuthType;
    use base64::Engine;

    fn settings(issuer: Option<&str>) -> Settings {
        let mut spec = serde_json::json!({"clientId": "app", "authorizationUrl": "https://idp.example/auth", "tokenUrl": "https://idp.example/token"});
        if let Some(i) = issuer {
            spec["issuer"] = i.into();
        }
        Settings::resolve(AuthType::OAuth2, None, &serde_json::from_value(spec).unwrap()).unwrap()
    }

    fn jwt(claims: serde_json::Value) -> String {
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
        };
        format!(
            "{}.{}.sig",
            b64(&serde_json::json!({"alg": "RS256"})),
            b64(&claims)
        )
    }

    #[test]
    fn an_id_token_for_this_client_and_issuer_names_the_user() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let token = jwt(serde_json::json!({
            "iss": "https://idp.example/", "sub": "u-1", "email": "ann@example.com",
            "aud": ["other", "app"], "exp": 1_000_100
        }));
        let id = from_id_token(&token, &settings(Some("https://idp.example")), now).unwrap();
        assert_eq!(id.subject.as_deref(), Some("u-1"));
        assert_eq!(id.email.as_deref(), Some("ann@example.com"));
        assert_eq!(id.issuer.as_deref(), Some("https://idp.example/"));
        // Without a configured issuer any issuer is accepted, but the audience still counts.
        assert!(from_id_token(&token, &settings(None), now).is_ok());
    }

    #[test]
    fn an_id_token_of_another_issuer_client_or_time_is_refused() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let s = settings(Some("https://idp.example"));
        let with = |claims| from_id_token(&jwt(claims), &s, now);
        assert!(matches!(
            with(serde_json::json!({"iss": "https://evil.example", "aud": "app"})),
            Err(IdentityError::WrongIssuer)
        ));
        assert!(matches!(
            with(serde_json::json!({"iss": "https://idp.example", "aud": "other"})),
            Err(IdentityError::WrongAudience)
        ));
        assert!(matches!(
            with(serde_json::json!({"iss": "https://idp.example", "aud": "app", "exp": 1})),
            Err(IdentityError::Expired)
        ));
        assert!(matches!(
            from_id_token("not-a-jwt", &s, now),
            Err(IdentityError::Malformed)
        ));
    }
}
