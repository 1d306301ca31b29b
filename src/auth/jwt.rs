//! Custom JWTs: the operator mints a signed JWT for an account (no user involved) and optionally
//! trades it at a token endpoint for an access token, either as an RFC 7523 `jwt-bearer` grant
//! (Google service accounts) or as the bearer credential of a POST (GitHub App installation
//! tokens).
//!
//! Errors are classified for the controller: [`JwtError::Config`] means the Connection (or its
//! key) must be fixed, [`JwtError::Rejected`] that the endpoint refused the JWT, anything else is
//! [`JwtError::Transient`] and worth retrying. No message ever contains the key, the JWT or a token.
//!
//! Claim choices: `iat` is backdated by a minute (at most half the lifetime) because receivers
//! such as GitHub refuse an `iat` in their future, and `exp - iat` is exactly the configured
//! lifetime because receivers cap it (Google 1h, GitHub 10m). No `nbf` is sent: it adds nothing
//! to `iat` and some servers reject tokens that carry it.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::{SignedDuration, Timestamp};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use crate::api::parse_duration;
use crate::api::{CustomJwtSettings, ExchangeStyle, JwtAlgorithm, JwtExchange};
use crate::store::TokenSet;

/// `lifetime` when the Connection sets none.
pub const DEFAULT_LIFETIME: &str = "1h";
/// The `sub` claim when the Connection sets none.
pub const DEFAULT_SUBJECT: &str = "{{identifier}}";
/// How far `iat` is backdated, against clock drift between us and the receiver.
const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(60);
/// Largest token endpoint response read; more is refused rather than buffered.
const MAX_RESPONSE: usize = 64 * 1024;
/// RFC 7523 grant type.
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Claims set from `issuer`, `subject`, `audience` and `lifetime`, never from `claims`.
const REGISTERED: &[&str] = &["iss", "sub", "aud", "iat", "exp", "nbf", "jti"];
/// The fields of an exchange answer kept as metadata: what GitHub's installation tokens say about
/// their reach. Everything else an endpoint sends is dropped.
const EXCHANGE_METADATA: &[&str] = &["permissions", "repository_selection", "repositories"];

/// Response fields that are credentials or already in the token set, never metadata.
const NOT_METADATA: &[&str] = &[
    "access_token",
    "token",
    "refresh_token",
    "id_token",
    "client_secret",
    "token_type",
    "expires_in",
    "expires_at",
    "scope",
];
const USER_AGENT: &str = concat!("agent-auth-operator/", env!("CARGO_PKG_VERSION"));

/// The account a JWT is minted for; its fields fill `{{identifier}}`, `{{name}}` and
/// `{{namespace}}` in the Connection's templates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template<'a> {
    /// `spec.identifier` of the ConnectedAccount.
    pub identifier: &'a str,
    /// `metadata.name` of the ConnectedAccount.
    pub name: &'a str,
    /// `metadata.namespace` of the ConnectedAccount.
    pub namespace: &'a str,
}

/// Replaces `{{identifier}}`, `{{name}}` and `{{namespace}}` in one pass, so a value that itself
/// contains a placeholder is never expanded again. Other `{{...}}` text is kept as it is.
pub fn render(s: &str, t: &Template) -> String {
    render_with(s, t, str::to_owned)
}

/// Like [`render`] for URLs: the values are percent-encoded so that an identifier cannot change
/// the URL's path, query or host.
fn render_url(s: &str, t: &Template) -> String {
    render_with(s, t, crate::percent::encode)
}

fn render_with(s: &str, t: &Template, escape: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let value = [
            ("{{identifier}}", t.identifier),
            ("{{name}}", t.name),
            ("{{namespace}}", t.namespace),
        ]
        .into_iter()
        .find(|(placeholder, _)| after.starts_with(placeholder));
        match value {
            Some((placeholder, value)) => {
                out.push_str(&escape(value));
                rest = &after[placeholder.len()..];
            }
            None => {
                out.push_str("{{");
                rest = &after[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A claim value: JSON (with templates rendered inside its strings) when it parses as JSON,
/// otherwise the rendered string. Parsing before rendering means an identifier can never turn a
/// string into JSON or break a JSON value.
fn claim_value(raw: &str, t: &Template) -> Value {
    fn render_json(v: Value, t: &Template) -> Value {
        match v {
            Value::String(s) => Value::String(render(&s, t)),
            Value::Array(items) => Value::Array(items.into_iter().map(|v| render_json(v, t)).collect()),
            Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, render_json(v, t))).collect()),
            other => other,
        }
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(v) => render_json(v, t),
        Err(_) => Value::String(render(raw, t)),
    }
}

/// Why a JWT could not be minted or exchanged. Messages never contain the key, the JWT or a token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// The Connection's settings or signing key cannot work; retrying will not help until they
    /// are fixed. The message is meant for the Connection's status.
    #[error("{0}")]
    Config(String),
    /// The token endpoint refused the JWT (a 4xx answer): wrong key, issuer or audience, app
    /// uninstalled, key revoked. `code` is the RFC 6749 `error` code when the endpoint sent one.
    #[error("the token endpoint rejected the JWT (HTTP {status}{})",
        code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
    Rejected {
        status: u16,
        code: Option<String>,
        /// The endpoint's own words, scrubbed of the JWT; for debug logs only, never shown.
        description: Option<String>,
    },
    /// Network trouble, 5xx, 429, malformed answers: retry with backoff, and not before
    /// `retry_after` when the endpoint said so.
    #[error("token endpoint unavailable: {message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
}

impl JwtError {
    /// A CamelCase reason for Events, conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtError::Config(_) => "InvalidJwtConfig",
            JwtError::Rejected { .. } => "JwtRejected",
            JwtError::Transient { .. } => "TokenEndpointUnavailable",
        }
    }

    /// How long the endpoint asked us to wait (`Retry-After` on 429/503).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            JwtError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn transient(message: impl Into<String>) -> Self {
        JwtError::Transient {
            message: message.into(),
            retry_after: None,
        }
    }
}

fn config(message: impl Into<String>) -> JwtError {
    JwtError::Config(message.into())
}

/// The configured JWT lifetime (`exp - iat`), default one hour.
pub fn lifetime(settings: &CustomJwtSettings) -> Result<SignedDuration, JwtError> {
    let raw = settings.lifetime.as_deref().unwrap_or(DEFAULT_LIFETIME);
    let d = parse_duration(raw).map_err(|e| config(format!("lifetime: {e}")))?;
    if d < SignedDuration::from_secs(1) {
        return Err(config(format!("lifetime {raw:?} must be at least 1s")));
    }
    Ok(d)
}

/// Checks what can be checked without an account: the lifetime, that the key suits the
/// algorithm, that it signs, and that the token URL is usable. For the Connection's Ready
/// condition.
pub fn check(settings: &CustomJwtSettings, key: &[u8]) -> Result<(), JwtError> {
    let t = Template {
        identifier: "identifier",
        name: "name",
        namespace: "namespace",
    };
    if let Some(exchange) = &settings.exchange {
        token_url(exchange, &t)?;
    }
    mint(settings, key, &t, Timestamp::now()).map(|_| ())
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

    let issuer = render(&settings.issuer, t);
    if issuer.is_empty() {
        return Err(config("issuer is empty"));
    }
    let mut claims = Map::new();
    claims.insert("iss".into(), Value::String(issuer));
    let subject = settings.subject.as_deref().unwrap_or(DEFAULT_SUBJECT);
    claims.insert("sub".into(), Value::String(render(subject, t)));
    if let Some(aud) = &settings.audience {
        claims.insert("aud".into(), Value::String(render(aud, t)));
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

fn algorithm(a: JwtAlgorithm) -> Algorithm {
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

/// The kind of a private key, by its PEM label or PKCS#8 algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    Ec,
    Ed,
}

impl KeyKind {
    fn describe(self) -> &'static str {
        match self {
            KeyKind::Rsa => "an RSA key",
            KeyKind::Ec => "an EC key",
            KeyKind::Ed => "an Ed25519 key",
        }
    }
}

/// The signing key for `algorithm` from the Secret's bytes, with a message a user can act on
/// when it is the wrong kind or format.
fn signing_key(alg: JwtAlgorithm, key: &[u8]) -> Result<EncodingKey, JwtError> {
    let looks_like_pem = String::from_utf8_lossy(key).contains("-----BEGIN");
    let wanted = match alg {
        JwtAlgorithm::HS256 => {
            if key.is_empty() {
                return Err(config("the HS256 secret is empty"));
            }
            if looks_like_pem {
                return Err(config(
                    "HS256 needs a shared secret, but the signing key Secret holds a PEM key",
                ));
            }
            return Ok(EncodingKey::from_secret(key));
        }
        JwtAlgorithm::RS256 => KeyKind::Rsa,
        JwtAlgorithm::ES256 => KeyKind::Ec,
        JwtAlgorithm::EdDSA => KeyKind::Ed,
    };
    let text = std::str::from_utf8(key)
        .ok()
        .filter(|_| looks_like_pem)
        .ok_or_else(|| {
            config(format!(
                "{alg:?} needs a PEM private key, but the signing key is not PEM"
            ))
        })?;
    let blocks = pem_blocks(text)?;
    let Some(block) = blocks.iter().find(|b| b.label.ends_with("PRIVATE KEY")) else {
        return Err(config(
            if blocks
                .iter()
                .any(|b| b.label.ends_with("PUBLIC KEY") || b.label == "CERTIFICATE")
            {
                "the signing key Secret holds a public key or certificate; it needs the private key"
            } else {
                "the signing key has no PEM private key block"
            },
        ));
    };
    let (kind, encoding_key) = match block.label.as_str() {
        "PRIVATE KEY" => {
            let pem = block.to_pem();
            if let Ok(k) = EncodingKey::from_rsa_pem(pem.as_bytes()) {
                (KeyKind::Rsa, k)
            } else if let Ok(k) = EncodingKey::from_ec_pem(pem.as_bytes()) {
                (KeyKind::Ec, k)
            } else if let Ok(k) = EncodingKey::from_ed_pem(pem.as_bytes()) {
                (KeyKind::Ed, k)
            } else {
                return Err(config(
                    "the signing key is not an RSA, EC or Ed25519 PKCS#8 private key",
                ));
            }
        }
        "RSA PRIVATE KEY" => {
            let k = EncodingKey::from_rsa_pem(block.to_pem().as_bytes())
                .map_err(|_| config("the signing key is not a valid RSA private key"))?;
            (KeyKind::Rsa, k)
        }
        "EC PRIVATE KEY" => (
            KeyKind::Ec,
            EncodingKey::from_ec_der(&sec1_to_pkcs8_p256(&block.der)),
        ),
        "ENCRYPTED PRIVATE KEY" => {
            return Err(config(
                "the signing key is encrypted; store it unencrypted (openssl pkcs8 -topk8 -nocrypt)",
            ));
        }
        other => {
            return Err(config(format!(
                "{} keys are not supported; use PKCS#8 (openssl pkcs8 -topk8 -nocrypt)",
                printable(other)
            )));
        }
    };
    if kind != wanted {
        return Err(config(format!(
            "the signing key is {}, but {alg:?} needs {}",
            kind.describe(),
            wanted.describe()
        )));
    }
    Ok(encoding_key)
}

/// One `-----BEGIN <label>-----` block of a PEM file.
struct PemBlock {
    label: String,
    der: Vec<u8>,
}

impl PemBlock {
    /// The block alone, as PEM again (the library reads only the first block of a file, which
    /// may be `EC PARAMETERS`).
    fn to_pem(&self) -> String {
        let b64 = STANDARD.encode(&self.der);
        let mut out = format!("-----BEGIN {}-----\n", self.label);
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str(&format!("-----END {}-----\n", self.label));
        out
    }
}

/// Every PEM block in `text`. A block with headers (`Proc-Type: 4,ENCRYPTED`) is an encrypted
/// legacy key, refused by name.
fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, JwtError> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String, bool)> = None;
    for line in text.lines().map(str::trim) {
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            current = Some((label.to_owned(), String::new(), false));
        } else if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            match current.take() {
                Some((begin, _, true)) if begin == label => {
                    return Err(config(
                        "the signing key is encrypted; store it unencrypted (openssl pkcs8 -topk8 -nocrypt)",
                    ));
                }
                Some((begin, body, false)) if begin == label => {
                    let der = STANDARD.decode(body.as_bytes()).map_err(|_| {
                        config(format!("the PEM block {} is not valid base64", printable(label)))
                    })?;
                    blocks.push(PemBlock { label: begin, der });
                }
                _ => return Err(config("the signing key is not well-formed PEM")),
            }
        } else if let Some((_, body, encrypted)) = current.as_mut() {
            if line.contains(':') {
                *encrypted = true;
            } else {
                body.push_str(line);
            }
        }
    }
    if current.is_some() {
        return Err(config("the signing key is not well-formed PEM (no END line)"));
    }
    Ok(blocks)
}

/// A PEM label for a message: user data, so only short, plain text.
fn printable(label: &str) -> String {
    if label.len() <= 40 && label.chars().all(|c| c.is_ascii_uppercase() || c == ' ') {
        label.to_owned()
    } else {
        "these".to_owned()
    }
}

/// Wraps a SEC1 `EC PRIVATE KEY` (what `openssl ecparam -genkey` prints) in the PKCS#8 envelope
/// the signer reads, naming P-256; a key on another curve then fails to sign, with a clear error.
fn sec1_to_pkcs8_p256(sec1: &[u8]) -> Vec<u8> {
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }
    // id-ecPublicKey (1.2.840.10045.2.1) and prime256v1 (1.2.840.10045.3.1.7).
    const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
    const PRIME256V1: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
    let algorithm = tlv(0x30, &[EC_PUBLIC_KEY, PRIME256V1].concat());
    let version = [0x02, 0x01, 0x00];
    tlv(0x30, &[&version[..], &algorithm, &tlv(0x04, sec1)].concat())
}

/// The rendered token URL; the egress policy decides whether it may be called.
fn token_url(exchange: &JwtExchange, t: &Template) -> Result<url::Url, JwtError> {
    url::Url::parse(&render_url(&exchange.token_url, t))
        .map_err(|e| config(format!("exchange.tokenUrl is not a valid URL: {e}")))
}

/// Mints a JWT and, when `exchange` is set, trades it at the token endpoint. Without exchange
/// the credential is the JWT itself (type `Bearer`, expiring at its `exp`). With exchange it is
/// the endpoint's access token; when the endpoint states no expiry the token is assumed to live
/// as long as the JWT, so it is renewed on the same schedule. `http` should not follow
/// redirects and should have timeouts (see [`crate::auth::oauth2::http_client`]).
pub async fn obtain(
    http: &crate::egress::EgressClient,
    settings: &CustomJwtSettings,
    key: &[u8],
    t: &Template<'_>,
    now: Timestamp,
) -> Result<TokenSet, JwtError> {
    let Some(exchange) = &settings.exchange else {
        let (jwt, exp) = mint(settings, key, t, now)?;
        return Ok(TokenSet {
            access_token: jwt,
            token_type: "Bearer".into(),
            expires_at: Some(exp),
            obtained_at: now,
            ..Default::default()
        });
    };
    let url = token_url(exchange, t)?;
    let (jwt, jwt_exp) = mint(settings, key, t, now)?;
    let request = match exchange.style {
        ExchangeStyle::JwtBearer => {
            let scope = exchange.scopes.join(" ");
            let mut form = vec![("grant_type", JWT_BEARER), ("assertion", jwt.as_str())];
            if !scope.is_empty() {
                form.push(("scope", scope.as_str()));
            }
            http.post(url.as_str())
                .map_err(|e| config(format!("exchange.tokenUrl refused: {e}")))?
                .header(reqwest::header::ACCEPT, "application/json")
                .form(&form)
        }
        ExchangeStyle::BearerCredential => http
            .post(url.as_str())
            .map_err(|e| config(format!("exchange.tokenUrl refused: {e}")))?
            .bearer_auth(&jwt)
            .header(
                reqwest::header::ACCEPT,
                "application/vnd.github+json, application/json",
            )
            .header(reqwest::header::USER_AGENT, USER_AGENT),
    };
    let response = request
        .send()
        .await
        .map_err(|e| JwtError::transient(crate::egress::phrase(&e)))?;
    let status = response.status();
    let retry_after = if matches!(status.as_u16(), 429 | 503) {
        crate::http::retry_after(response.headers())
    } else {
        None
    };
    let body = read_bounded(response).await;
    if status.is_success() {
        let body = body?;
        let fields = serde_json::from_slice::<Map<String, Value>>(&body).map_err(|_| {
            JwtError::transient(format!("malformed token response (HTTP {})", status.as_u16()))
        })?;
        let requested = match exchange.style {
            ExchangeStyle::JwtBearer => exchange.scopes.clone(),
            ExchangeStyle::BearerCredential => Vec::new(),
        };
        return token_set(fields, requested, jwt_exp, now);
    }
    let fields = body
        .ok()
        .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
        .unwrap_or_default();
    let code = fields
        .get("error")
        .and_then(Value::as_str)
        .filter(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        })
        .map(str::to_owned);
    let description = fields
        .get("error_description")
        .or_else(|| fields.get("message")) // GitHub's error shape
        .and_then(Value::as_str)
        .map(|d| scrub(d, &jwt))
        .filter(|d| !d.is_empty());
    let s = status.as_u16();
    match s {
        300..=399 => Err(config(format!(
            "exchange.tokenUrl answered with a redirect (HTTP {s}); set the final URL"
        ))),
        408 | 429 | 500..=599 => Err(JwtError::Transient {
            message: format!("HTTP {s}{}", code.map(|c| format!(", {c}")).unwrap_or_default()),
            retry_after,
        }),
        _ => Err(JwtError::Rejected {
            status: s,
            code,
            description,
        }),
    }
}

/// The credential from a successful answer: RFC 6749 (`access_token`, `expires_in`, `scope`) or
/// GitHub's (`token`, `expires_at`). The other fields are kept as metadata.
fn token_set(
    fields: Map<String, Value>,
    requested_scopes: Vec<String>,
    jwt_exp: Timestamp,
    now: Timestamp,
) -> Result<TokenSet, JwtError> {
    let access_token = fields
        .get("access_token")
        .or_else(|| fields.get("token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| JwtError::transient("the token response has no access_token or token"))?
        .to_owned();
    let expires_in = fields.get("expires_in").and_then(|v| match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<f64>().ok().map(|f| f as i64),
        _ => None,
    });
    let expires_at = match expires_in {
        // Capped at ten years so a silly value cannot overflow.
        Some(secs) => now
            .checked_add(SignedDuration::from_secs(secs.clamp(0, 315_360_000)))
            .ok(),
        None => fields
            .get("expires_at")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Timestamp>().ok()),
    }
    .unwrap_or(jwt_exp);
    let token_type = fields
        .get("token_type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(|t| {
            if t.eq_ignore_ascii_case("bearer") {
                "Bearer"
            } else {
                t
            }
        })
        .unwrap_or("Bearer")
        .to_owned();
    let scopes = match fields.get("scope").and_then(Value::as_str) {
        Some(s) => s.split_whitespace().map(str::to_owned).collect(),
        // RFC 6749 5.1: an omitted scope means the requested scopes were granted.
        None => requested_scopes,
    };
    // Only allowlisted fields: an endpoint's other answers never reach the agent Secret.
    let metadata: BTreeMap<String, Value> = fields
        .into_iter()
        .filter(|(k, _)| !NOT_METADATA.contains(&k.as_str()) && EXCHANGE_METADATA.contains(&k.as_str()))
        .collect();
    Ok(TokenSet {
        access_token,
        token_type,
        expires_at: Some(expires_at),
        scopes,
        obtained_at: now,
        metadata,
        ..Default::default()
    })
}

/// Reads at most [`MAX_RESPONSE`] bytes; a larger answer is an error, never buffered whole.
async fn read_bounded(response: reqwest::Response) -> Result<bytes::Bytes, JwtError> {
    crate::http::read_limited(response, MAX_RESPONSE)
        .await
        .map_err(|e| match e {
            crate::http::ReadError::TooLarge(_) => JwtError::transient("token response larger than 64 KiB"),
            crate::http::ReadError::Read(e) => JwtError::transient(crate::egress::phrase(&e)),
        })
}

/// An endpoint's error text, safe for status and logs: one line, at most 200 characters, with
/// anything that looks like a JWT (or is ours) removed, since some servers echo what they got.
fn scrub(text: &str, jwt: &str) -> String {
    let words: Vec<&str> = text
        .split_whitespace()
        .map(|w| {
            if w.contains("eyJ") || w.contains(jwt) || (w.len() >= 16 && jwt.contains(w)) {
                "<redacted>"
            } else {
                w
            }
        })
        .collect();
    words
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;

    const RSA: &str = include_str!("../../tests/fixtures/keys/rsa.pem");
    const RSA_PKCS1: &str = include_str!("../../tests/fixtures/keys/rsa.pkcs1.pem");
    const RSA_PUB: &str = include_str!("../../tests/fixtures/keys/rsa.pub.pem");
    const EC: &str = include_str!("../../tests/fixtures/keys/ec.pem");
    const EC_SEC1: &str = include_str!("../../tests/fixtures/keys/ec.sec1.pem");
    const EC_PUB: &str = include_str!("../../tests/fixtures/keys/ec.pub.pem");
    const ED: &str = include_str!("../../tests/fixtures/keys/ed25519.pem");
    const ED_PUB: &str = include_str!("../../tests/fixtures/keys/ed25519.pub.pem");
    const HS: &[u8] = b"a shared secret of at least thirty-two bytes";

    const ACCOUNT: Template<'static> = Template {
        identifier: "alice@example.com",
        name: "alice-gh",
        namespace: "agents",
    };

    fn settings(alg: JwtAlgorithm) -> CustomJwtSettings {
        serde_json::from_value(serde_json::json!({
            "signingKeyRef": {"name": "k", "key": "pem"},
            "algorithm": alg,
            "keyId": "key-1",
            "issuer": "https://issuer.example/{{namespace}}",
            "audience": "https://api.example/{{name}}",
            "claims": {
                "email": "{{identifier}}",
                "admin": "true",
                "level": "3",
                "groups": "[\"{{namespace}}\", \"dev\"]",
                "note": "not json {{name}}"
            },
            "lifetime": "10m"
        }))
        .unwrap()
    }

    fn public_key(alg: JwtAlgorithm) -> DecodingKey {
        match alg {
            JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(RSA_PUB.as_bytes()).unwrap(),
            JwtAlgorithm::ES256 => DecodingKey::from_ec_pem(EC_PUB.as_bytes()).unwrap(),
            JwtAlgorithm::EdDSA => DecodingKey::from_ed_pem(ED_PUB.as_bytes()).unwrap(),
            JwtAlgorithm::HS256 => DecodingKey::from_secret(HS),
        }
    }

    fn private_key(alg: JwtAlgorithm) -> &'static [u8] {
        match alg {
            JwtAlgorithm::RS256 => RSA.as_bytes(),
            JwtAlgorithm::ES256 => EC.as_bytes(),
            JwtAlgorithm::EdDSA => ED.as_bytes(),
            JwtAlgorithm::HS256 => HS,
        }
    }

    /// Verifies signature, issuer, audience and expiry with the public key; returns the claims.
    fn verify(jwt: &str, alg: JwtAlgorithm, audience: &str) -> (Header, Value) {
        let mut v = Validation::new(algorithm(alg));
        v.set_issuer(&["https://issuer.example/agents"]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["iss", "sub", "aud", "exp", "iat"]);
        let data = jsonwebtoken::decode::<Value>(jwt, &public_key(alg), &v).unwrap();
        (data.header, data.claims)
    }

    #[test]
    fn every_algorithm_signs_what_its_public_key_verifies() {
        let now = Timestamp::now();
        for alg in [
            JwtAlgorithm::RS256,
            JwtAlgorithm::ES256,
            JwtAlgorithm::EdDSA,
            JwtAlgorithm::HS256,
        ] {
            let (jwt, exp) = mint(&settings(alg), private_key(alg), &ACCOUNT, now).unwrap();
            let (header, claims) = verify(&jwt, alg, "https://api.example/alice-gh");
            assert_eq!(header.alg, algorithm(alg));
            assert_eq!(header.kid.as_deref(), Some("key-1"));
            assert_eq!(header.typ.as_deref(), Some("JWT"));
            assert_eq!(claims["sub"], "alice@example.com", "{alg:?}");
            assert_eq!(claims["email"], "alice@example.com");
            assert_eq!(claims["admin"], true);
            assert_eq!(claims["level"], 3);
            assert_eq!(claims["groups"], serde_json::json!(["agents", "dev"]));
            assert_eq!(claims["note"], "not json alice-gh");
            assert!(claims.get("nbf").is_none());
            assert!(claims.get("scope").is_none());
            let (iat, exp_claim) = (claims["iat"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
            assert_eq!(exp_claim, exp.as_second());
            assert_eq!(exp_claim - iat, 600, "exp - iat is the lifetime");
            assert_eq!(iat, now.as_second() - 60, "iat is backdated a minute");
            assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
        }
    }

    #[test]
    fn each_jwt_has_its_own_jti_and_defaults_apply() {
        let mut s = settings(JwtAlgorithm::HS256);
        s.lifetime = None;
        s.key_id = None;
        s.audience = None;
        s.claims.clear();
        let now = Timestamp::now();
        let (a, exp) = mint(&s, HS, &ACCOUNT, now).unwrap();
        let (b, _) = mint(&s, HS, &ACCOUNT, now).unwrap();
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_aud = false;
        let key = public_key(JwtAlgorithm::HS256);
        let a = jsonwebtoken::decode::<Value>(&a, &key, &v).unwrap();
        let b = jsonwebtoken::decode::<Value>(&b, &key, &v).unwrap();
        assert_ne!(a.claims["jti"], b.claims["jti"]);
        assert!(a.header.kid.is_none());
        assert!(a.claims.get("aud").is_none());
        assert_eq!(exp.as_second() - a.claims["iat"].as_i64().unwrap(), 3600);
    }

    #[test]
    fn pkcs1_rsa_and_sec1_ec_keys_are_accepted() {
        let now = Timestamp::now();
        let (jwt, _) = mint(
            &settings(JwtAlgorithm::RS256),
            RSA_PKCS1.as_bytes(),
            &ACCOUNT,
            now,
        )
        .unwrap();
        verify(&jwt, JwtAlgorithm::RS256, "https://api.example/alice-gh");
        let with_params = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{EC_SEC1}"
        );
        let (jwt, _) = mint(
            &settings(JwtAlgorithm::ES256),
            with_params.as_bytes(),
            &ACCOUNT,
            now,
        )
        .unwrap();
        verify(&jwt, JwtAlgorithm::ES256, "https://api.example/alice-gh");
    }

    fn config_error(alg: JwtAlgorithm, key: &[u8]) -> String {
        match mint(&settings(alg), key, &ACCOUNT, Timestamp::now()) {
            Err(JwtError::Config(m)) => m,
            other => panic!("{alg:?}: expected a Config error, got {other:?}"),
        }
    }

    #[test]
    fn a_key_of_the_wrong_kind_is_named() {
        assert_eq!(
            config_error(JwtAlgorithm::RS256, EC.as_bytes()),
            "the signing key is an EC key, but RS256 needs an RSA key"
        );
        assert_eq!(
            config_error(JwtAlgorithm::ES256, ED.as_bytes()),
            "the signing key is an Ed25519 key, but ES256 needs an EC key"
        );
        assert_eq!(
            config_error(JwtAlgorithm::EdDSA, RSA_PKCS1.as_bytes()),
            "the signing key is an RSA key, but EdDSA needs an Ed25519 key"
        );
        assert!(config_error(JwtAlgorithm::HS256, RSA.as_bytes()).contains("HS256 needs a shared secret"));
        assert!(config_error(JwtAlgorithm::RS256, RSA_PUB.as_bytes()).contains("public key"));
        assert!(config_error(JwtAlgorithm::RS256, HS).contains("not PEM"));
        assert!(config_error(JwtAlgorithm::HS256, b"").contains("empty"));
    }

    #[test]
    fn a_bad_pem_is_a_config_error_that_quotes_nothing() {
        let garbled = RSA.replacen("MII", "M!!", 1);
        let m = config_error(JwtAlgorithm::RS256, garbled.as_bytes());
        assert_eq!(m, "the PEM block PRIVATE KEY is not valid base64");
        let truncated = &RSA[..RSA.len() / 2];
        assert!(config_error(JwtAlgorithm::RS256, truncated.as_bytes()).contains("no END line"));
        let cut_body: String = {
            let lines: Vec<&str> = RSA.lines().collect();
            [&lines[..3], &lines[lines.len() - 1..]].concat().join("\n")
        };
        let m = config_error(JwtAlgorithm::RS256, cut_body.as_bytes());
        assert_eq!(
            m,
            "the signing key is not an RSA, EC or Ed25519 PKCS#8 private key"
        );
        let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(config_error(JwtAlgorithm::RS256, encrypted.as_bytes()).contains("encrypted"));
        let ssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        assert!(config_error(JwtAlgorithm::EdDSA, ssh.as_bytes()).starts_with("OPENSSH PRIVATE KEY keys"));
    }

    #[test]
    fn bad_settings_are_config_errors() {
        let mut s = settings(JwtAlgorithm::HS256);
        s.lifetime = Some("0s".into());
        assert!(matches!(
            mint(&s, HS, &ACCOUNT, Timestamp::now()),
            Err(JwtError::Config(_))
        ));
        s.lifetime = Some("soon".into());
        assert!(matches!(
            mint(&s, HS, &ACCOUNT, Timestamp::now()),
            Err(JwtError::Config(_))
        ));
        let mut s = settings(JwtAlgorithm::HS256);
        s.claims.insert("exp".into(), "1".into());
        assert!(matches!(
            mint(&s, HS, &ACCOUNT, Timestamp::now()),
            Err(JwtError::Config(_))
        ));
        // Plain http is the egress policy's to refuse (at the request and at Connection apply).
        let mut s = settings(JwtAlgorithm::HS256);
        s.exchange = Some(exchange(
            "https://token.example/t/{{identifier}}",
            ExchangeStyle::JwtBearer,
        ));
        assert_eq!(check(&s, HS), Ok(()));
    }

    #[test]
    fn templates_render_once_and_urls_escape_values() {
        let t = Template {
            identifier: "a/b?c@{{name}}",
            name: "n",
            namespace: "ns",
        };
        assert_eq!(
            render("{{identifier}}-{{name}}-{{other}}-{{", &t),
            "a/b?c@{{name}}-n-{{other}}-{{"
        );
        assert_eq!(
            render_url("https://x.example/i/{{identifier}}/t", &t),
            "https://x.example/i/a%2Fb%3Fc%40%7B%7Bname%7D%7D/t"
        );
        // An identifier cannot break out of a JSON claim.
        let t = Template {
            identifier: "\", \"admin\": true, \"x\": \"",
            ..ACCOUNT
        };
        assert_eq!(
            claim_value("{\"user\": \"{{identifier}}\"}", &t),
            serde_json::json!({"user": "\", \"admin\": true, \"x\": \""})
        );
    }

    fn exchange(url: &str, style: ExchangeStyle) -> JwtExchange {
        JwtExchange {
            token_url: url.into(),
            style,
            scopes: vec![],
        }
    }

    /// What the test endpoint received.
    #[derive(Default)]
    struct Received {
        form: Vec<(String, String)>,
        headers: Vec<HeaderMap>,
    }

    /// A token endpoint that verifies the ES256 JWT it gets, plus failure modes by path.
    async fn endpoint() -> (String, Arc<Mutex<Received>>) {
        use axum::routing::post;
        let seen = Arc::new(Mutex::new(Received::default()));
        let verified = |jwt: &str| {
            let mut v = Validation::new(Algorithm::ES256);
            v.set_issuer(&["https://issuer.example/agents"]);
            v.set_audience(&["https://api.example/alice-gh"]);
            jsonwebtoken::decode::<Value>(jwt, &public_key(JwtAlgorithm::ES256), &v).is_ok()
        };
        let s = seen.clone();
        let app = axum::Router::new()
            .route(
                "/token",
                post(
                    move |headers: HeaderMap, axum::Form(form): axum::Form<Vec<(String, String)>>| {
                        let s = s.clone();
                        async move {
                            let mut seen = s.lock().unwrap();
                            seen.headers.push(headers);
                            seen.form = form.clone();
                            let assertion = form
                                .iter()
                                .find(|(k, _)| k == "assertion")
                                .map(|(_, v)| v.as_str());
                            let grant = form
                                .iter()
                                .find(|(k, _)| k == "grant_type")
                                .map(|(_, v)| v.as_str());
                            if grant == Some(JWT_BEARER) && assertion.is_some_and(verified) {
                                axum::Json(serde_json::json!({
                                    "access_token": "ya29.token", "token_type": "bearer",
                                    "expires_in": "3599", "id_token": "secret-too"
                                }))
                                .into_response()
                            } else {
                                (
                                StatusCode::BAD_REQUEST,
                                axum::Json(serde_json::json!({
                                    "error": "invalid_grant",
                                    "error_description": format!("bad assertion {}", assertion.unwrap_or("-"))
                                })),
                            )
                                .into_response()
                            }
                        }
                    },
                ),
            )
            .route(
                "/app/installations/{id}/access_tokens",
                post({
                    let s = seen.clone();
                    move |axum::extract::Path(id): axum::extract::Path<String>, headers: HeaderMap| {
                        let s = s.clone();
                        async move {
                            let jwt = headers
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.strip_prefix("Bearer "))
                                .unwrap_or_default()
                                .to_owned();
                            s.lock().unwrap().headers.push(headers);
                            if id != "alice@example.com" || !verified(&jwt) {
                                let body = serde_json::json!({"message": "Bad credentials"});
                                return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
                            }
                            let body = serde_json::json!({
                                "token": "ghs_abc", "expires_at": "2030-01-01T00:00:00Z",
                                "permissions": {"issues": "write"}, "repository_selection": "all"
                            });
                            (StatusCode::CREATED, axum::Json(body)).into_response()
                        }
                    }
                }),
            )
            .route(
                "/busy",
                post(|| async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "slow down") }),
            )
            .route(
                "/down",
                post(|| async {
                    let body = axum::Json(serde_json::json!({"error": "temporarily_unavailable"}));
                    (StatusCode::SERVICE_UNAVAILABLE, body)
                }),
            )
            .route("/huge", post(|| async { "x".repeat(100_000) }))
            .route("/garbage", post(|| async { "<html>hello</html>" }))
            .route(
                "/moved",
                post(|| async { (StatusCode::FOUND, [("location", "https://elsewhere.example/")]) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    fn exchanging(url: String, style: ExchangeStyle) -> CustomJwtSettings {
        let mut s = settings(JwtAlgorithm::ES256);
        s.exchange = Some(exchange(&url, style));
        s
    }

    async fn obtain_at(s: &CustomJwtSettings) -> Result<TokenSet, JwtError> {
        let http = crate::auth::oauth2::http_client(crate::egress::EgressPolicy::new(vec![
            "127.0.0.1/32".parse().unwrap(),
        ]))
        .unwrap();
        obtain(&http, s, EC.as_bytes(), &ACCOUNT, Timestamp::now()).await
    }

    /// The controller spawns this on a multi-threaded runtime.
    #[allow(dead_code)]
    fn obtain_is_send(http: &crate::egress::EgressClient, s: &CustomJwtSettings) {
        fn is_send<T: Send>(_: T) {}
        is_send(obtain(http, s, b"", &ACCOUNT, Timestamp::now()));
    }

    #[test]
    fn token_responses_of_either_shape_parse() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let exp = Timestamp::from_second(1_000_600).unwrap();
        let parse = |v: Value| token_set(v.as_object().unwrap().clone(), vec!["s".into()], exp, now).unwrap();
        let t = parse(serde_json::json!({"access_token": "a", "expires_in": 3599.5, "token_type": "MAC"}));
        assert_eq!(
            (t.token_type.as_str(), t.expires_at.unwrap().as_second()),
            ("MAC", 1_003_599)
        );
        assert_eq!(t.scopes, ["s"]);
        let t = parse(
            serde_json::json!({"token": "t", "team": "x", "permissions": {"issues": "write"}, "refresh_token": "r"}),
        );
        assert_eq!(
            (t.access_token.as_str(), t.expires_at),
            ("t", Some(exp)),
            "no expiry: the JWT's"
        );
        assert_eq!(
            t.metadata.keys().collect::<Vec<_>>(),
            ["permissions"],
            "only allowlisted fields; `team` is dropped"
        );
        assert!(t.refresh_token.is_none());
        let none = token_set(Map::new(), vec![], exp, now);
        assert!(matches!(none, Err(JwtError::Transient { .. })));
    }

    #[tokio::test]
    async fn without_exchange_the_credential_is_the_jwt() {
        let s = settings(JwtAlgorithm::ES256);
        let now = Timestamp::now();
        let http = crate::auth::oauth2::http_client(crate::egress::EgressPolicy::new(vec![
            "127.0.0.1/32".parse().unwrap(),
        ]))
        .unwrap();
        let tokens = obtain(&http, &s, EC.as_bytes(), &ACCOUNT, now).await.unwrap();
        verify(
            &tokens.access_token,
            JwtAlgorithm::ES256,
            "https://api.example/alice-gh",
        );
        assert_eq!(tokens.token_type, "Bearer");
        assert_eq!(tokens.obtained_at, now);
        assert_eq!(tokens.expires_at.unwrap().as_second(), now.as_second() - 60 + 600);
        assert!(tokens.refresh_token.is_none());
    }

    #[tokio::test]
    async fn a_jwt_bearer_grant_is_exchanged_for_an_access_token() {
        let (url, seen) = endpoint().await;
        let mut s = exchanging(format!("{url}/token"), ExchangeStyle::JwtBearer);
        s.exchange.as_mut().unwrap().scopes = vec!["a".into(), "b".into()];
        let before = Timestamp::now();
        let tokens = obtain_at(&s).await.unwrap();
        assert_eq!(tokens.access_token, "ya29.token");
        assert_eq!(tokens.token_type, "Bearer");
        assert_eq!(tokens.scopes, ["a", "b"]);
        let expires = tokens.expires_at.unwrap().as_second() - before.as_second();
        assert!((3598..=3600).contains(&expires), "{expires}");
        assert!(tokens.metadata.is_empty(), "id_token is never metadata");
        let seen = seen.lock().unwrap();
        let form: BTreeMap<_, _> = seen.form.iter().cloned().collect();
        assert_eq!(form["grant_type"], JWT_BEARER);
        assert_eq!(form["scope"], "a b");
        let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&form["assertion"])
            .unwrap()
            .claims;
        assert_eq!(claims["scope"], "a b", "Google reads scopes from the assertion");
    }

    #[tokio::test]
    async fn a_bearer_credential_is_exchanged_for_an_installation_token() {
        let (url, seen) = endpoint().await;
        let s = exchanging(
            format!("{url}/app/installations/{{{{identifier}}}}/access_tokens"),
            ExchangeStyle::BearerCredential,
        );
        let tokens = obtain_at(&s).await.unwrap();
        assert_eq!(tokens.access_token, "ghs_abc");
        assert_eq!(tokens.expires_at, Some("2030-01-01T00:00:00Z".parse().unwrap()));
        assert!(tokens.scopes.is_empty());
        assert_eq!(
            tokens.metadata.keys().collect::<HashSet<_>>(),
            HashSet::from([&"permissions".to_owned(), &"repository_selection".to_owned()])
        );
        let seen = seen.lock().unwrap();
        let headers = &seen.headers[0];
        assert!(
            headers["accept"]
                .to_str()
                .unwrap()
                .contains("application/vnd.github+json")
        );
        assert!(
            headers["user-agent"]
                .to_str()
                .unwrap()
                .starts_with("agent-auth-operator/")
        );
    }

    #[tokio::test]
    async fn a_rejection_carries_the_code_but_never_the_jwt() {
        let (url, _) = endpoint().await;
        let mut s = exchanging(format!("{url}/token"), ExchangeStyle::JwtBearer);
        s.issuer = "someone else".into();
        let e = obtain_at(&s).await.unwrap_err();
        let JwtError::Rejected {
            status,
            code,
            description,
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!((*status, code.as_deref()), (400, Some("invalid_grant")));
        assert_eq!(description.as_deref(), Some("bad assertion <redacted>"));
        assert!(!e.to_string().contains("eyJ"), "{e}");
        assert_eq!(e.reason(), "JwtRejected");

        let s = exchanging(
            format!("{url}/app/installations/other/access_tokens"),
            ExchangeStyle::BearerCredential,
        );
        let e = obtain_at(&s).await.unwrap_err();
        // The endpoint's own words ("Bad credentials") stay out of what is shown.
        assert_eq!(e.to_string(), "the token endpoint rejected the JWT (HTTP 401)");
    }

    #[tokio::test]
    async fn unavailable_endpoints_are_transient_and_redirects_need_a_fix() {
        let (url, _) = endpoint().await;
        let at = |path: &str| exchanging(format!("{url}{path}"), ExchangeStyle::JwtBearer);
        let e = obtain_at(&at("/busy")).await.unwrap_err();
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)), "{e:?}");
        let e = obtain_at(&at("/down")).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "token endpoint unavailable: HTTP 503, temporarily_unavailable"
        );
        for path in ["/huge", "/garbage"] {
            let e = obtain_at(&at(path)).await.unwrap_err();
            assert!(matches!(e, JwtError::Transient { .. }), "{path}: {e:?}");
        }
        let e = obtain_at(&at("/moved")).await.unwrap_err();
        assert!(matches!(e, JwtError::Config(_)), "{e:?}");
        let closed = exchanging("http://127.0.0.1:9/token".into(), ExchangeStyle::JwtBearer);
        let e = obtain_at(&closed).await.unwrap_err();
        assert!(matches!(e, JwtError::Transient { .. }), "{e:?}");
    }
}
