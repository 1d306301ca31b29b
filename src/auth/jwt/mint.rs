//! The claims of a JWT and its signature.

use jiff::{SignedDuration, Timestamp};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Map, Value};

use super::keys::signing_key;
use super::{DEFAULT_LIFETIME, DEFAULT_SUBJECT, JwtError, Template, config};
use crate::api::{CustomJwtSettings, ExchangeStyle, JwtAlgorithm};

/// How far `iat` is backdated, against clock drift between us and the receiver.
const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(60);
/// Claims set from `issuer`, `subject`, `audience` and `lifetime`, never from `claims`.
const REGISTERED: &[&str] = &["iss", "sub", "aud", "iat", "exp", "nbf", "jti"];
/// A claim value: JSON (with templates rendered inside its strings) when it parses as JSON,
/// otherwise the rendered string. Parsing before rendering means an identifier can never turn a
/// string into JSON or break a JSON value.
pub(super) fn claim_value(raw: &str, t: &Template) -> Value {
    fn render_json(v: Value, t: &Template) -> Value {
        match v {
            Value::String(s) => Value::String(t.render(&s)),
            Value::Array(items) => Value::Array(items.into_iter().map(|v| render_json(v, t)).collect()),
            Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, render_json(v, t))).collect()),
            other => other,
        }
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(v) => render_json(v, t),
        Err(_) => Value::String(t.render(raw)),
    }
}

/// The configured JWT lifetime (`exp - iat`), default one hour.
pub fn lifetime(settings: &CustomJwtSettings) -> Result<SignedDuration, JwtError> {
    let Some(lifetime) = &settings.lifetime else {
        return Ok(DEFAULT_LIFETIME);
    };
    let d = lifetime.get();
    if d < SignedDuration::from_secs(1) {
        return Err(config(format!(
            "lifetime {:?} must be at least 1s",
            lifetime.as_str()
        )));
    }
    Ok(d)
}

/// Mints a JWT for the account `t` at `now`: `iss`, `sub`, `aud` (when set), `iat`, `exp`, a
/// random `jti`, the extra claims, and a `kid` header when `keyId` is set. `key` is the Secret's
/// value: a PEM private key (PKCS#8; also PKCS#1 for RSA and SEC1 for EC), or the HS256 secret
/// byte for byte. Returns the JWT and its `exp`.
pub fn mint(
    settings: &CustomJwtSettings,
    key: &[u8],
    t: &Template,
    now: Timestamp,
) -> Result<(String, Timestamp), JwtError> {
    let lifetime = lifetime(settings)?;
    let signing_key = signing_key(settings.algorithm, key)?;
    let backdate = CLOCK_SKEW.min(lifetime / 2);
    let iat = now.as_second() - backdate.as_secs();
    let exp = iat
        .checked_add(lifetime.as_secs())
        .and_then(|s| Timestamp::from_second(s).ok())
        .ok_or_else(|| config("lifetime is too long"))?;

    let issuer = t.render(&settings.issuer);
    if issuer.is_empty() {
        return Err(config("issuer is empty"));
    }
    let mut claims = Map::new();
    claims.insert("iss".into(), Value::String(issuer));
    let subject = settings.subject.as_deref().unwrap_or(DEFAULT_SUBJECT);
    claims.insert("sub".into(), Value::String(t.render(subject)));
    if let Some(aud) = &settings.audience {
        claims.insert("aud".into(), Value::String(t.render(aud)));
    }
    claims.insert("iat".into(), Value::from(iat));
    claims.insert("exp".into(), Value::from(exp.as_second()));
    claims.insert("jti".into(), Value::String(crate::signer::random_id()));
    for (name, raw) in &settings.claims {
        if REGISTERED.contains(&name.as_str()) {
            return Err(config(format!(
                "claim {name:?} is set by issuer, subject, audience and lifetime, not by claims"
            )));
        }
        claims.insert(name.clone(), claim_value(raw, t));
    }
    // Google reads the scopes of a jwt-bearer grant from the assertion, not the form.
    if let Some(exchange) = &settings.exchange
        && exchange.style == ExchangeStyle::JwtBearer
        && !exchange.scopes.is_empty()
        && !claims.contains_key("scope")
    {
        claims.insert("scope".into(), Value::String(exchange.scopes.join(" ")));
    }

    let mut header = Header::new(algorithm(settings.algorithm));
    header.kid = settings.key_id.clone();
    let jwt = jsonwebtoken::encode(&header, &claims, &signing_key)
        .map_err(|e| signing_failed(settings.algorithm, e.kind()))?;
    Ok((jwt, exp))
}

pub(super) fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
        JwtAlgorithm::HS256 => Algorithm::HS256,
    }
}

/// A signing failure in words about the key (the library's own messages may quote key bytes).
fn signing_failed(a: JwtAlgorithm, kind: &ErrorKind) -> JwtError {
    config(match kind {
        ErrorKind::InvalidEcdsaKey => {
            "the signing key is not a valid P-256 (prime256v1) key, which ES256 needs".into()
        }
        ErrorKind::InvalidEddsaKey => "the signing key is not a valid Ed25519 key, which EdDSA needs".into(),
        ErrorKind::InvalidRsaKey(_) | ErrorKind::RsaFailedSigning => {
            "the signing key is not a valid RSA private key".into()
        }
        _ => format!("cannot sign a {a:?} JWT with the signing key"),
    })
}
