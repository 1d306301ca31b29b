//! A local token server for integration tests that VERIFIES what it receives (test code standing
//! in for Google's and GitHub's token endpoints and for a `client_credentials` provider; Dex has
//! no such grant). Everything it saw is recorded for assertions.
//!
//! ```ignore
//! let server = TokenServer::start(TokenServerConfig {
//!     jwt: Some(JwtCheck::fixture(JwtAlgorithm::RS256).issuer("my-app").kid("k1")),
//!     ..Default::default()
//! }).await;
//! // Google checks aud = its token URL, known only now:
//! server.set_jwt_check(Some(JwtCheck::fixture(JwtAlgorithm::RS256).audience(server.token_url())));
//! // Connection: signingKeyRef -> a Secret holding keys::RSA_PRIVATE,
//! //   exchange.tokenUrl = server.token_url()                 (JwtBearer)
//! //   exchange.tokenUrl = server.installation_url_template() (BearerCredential)
//! // oauth2-style client_credentials: tokenUrl = server.token_url(), client test-client/test-secret
//! eventually(.., || async { (server.issued() == 1).then_some(()) }).await;
//! let seen = server.seen();            // path, grant, client, verified claims, status, ...
//! server.set_reject_all(true);         // simulate revocation
//! server.set_delay(Duration::from_millis(200));
//! assert!(server.peak_concurrency() <= 4);
//! ```
//!
//! Endpoints:
//! - `POST /token`, `grant_type=client_credentials`: HTTP Basic (or `client_id`/`client_secret`
//!   in the form) must match the config; answers `access_token` (`cc_...`), `token_type`,
//!   `expires_in`, `scope`; a wrong client gets 401 `invalid_client`.
//! - `POST /token`, `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`: the `assertion` is
//!   verified with [`JwtCheck`] (signature, `iss`, `aud`, `exp`, `iat`, lifetime, `kid`, a fresh
//!   `jti`); answers a token (`jb_...`) or 400 `invalid_grant` with the reason.
//! - `POST /app/installations/{id}/access_tokens`: `Authorization: Bearer <jwt>` verified the same
//!   way; answers 201 with GitHub's shape (`token` = `ghs_...`, `expires_at`, `permissions`,
//!   `repository_selection`) or 401 `{"message": ...}`.
//!
//! Shuts down when dropped.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_auth_operator::api::JwtAlgorithm;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

/// The test-only key pairs of `tests/fixtures/keys/` (public: never use them for anything else).
pub mod keys {
    pub const RSA_PRIVATE: &str = include_str!("../fixtures/keys/rsa.pem");
    /// The same RSA key as PKCS#1 (`BEGIN RSA PRIVATE KEY`), the format GitHub App keys come in.
    pub const RSA_PRIVATE_PKCS1: &str = include_str!("../fixtures/keys/rsa.pkcs1.pem");
    pub const RSA_PUBLIC: &str = include_str!("../fixtures/keys/rsa.pub.pem");
    pub const EC_PRIVATE: &str = include_str!("../fixtures/keys/ec.pem");
    /// The same EC key as SEC1 (`BEGIN EC PRIVATE KEY`).
    pub const EC_PRIVATE_SEC1: &str = include_str!("../fixtures/keys/ec.sec1.pem");
    pub const EC_PUBLIC: &str = include_str!("../fixtures/keys/ec.pub.pem");
    pub const ED25519_PRIVATE: &str = include_str!("../fixtures/keys/ed25519.pem");
    pub const ED25519_PUBLIC: &str = include_str!("../fixtures/keys/ed25519.pub.pem");
    /// A shared secret for HS256 (both sides use it).
    pub const HS256_SECRET: &str = "test-only-hs256-secret-of-32-bytes-or-more";

    use agent_auth_operator::api::JwtAlgorithm;

    /// The signing key for `alg` (what goes into the Connection's key Secret).
    pub fn private(alg: JwtAlgorithm) -> &'static str {
        match alg {
            JwtAlgorithm::RS256 => RSA_PRIVATE,
            JwtAlgorithm::ES256 => EC_PRIVATE,
            JwtAlgorithm::EdDSA => ED25519_PRIVATE,
            JwtAlgorithm::HS256 => HS256_SECRET,
        }
    }

    /// What verifies a JWT signed with [`private`]`(alg)`.
    pub fn public(alg: JwtAlgorithm) -> &'static str {
        match alg {
            JwtAlgorithm::RS256 => RSA_PUBLIC,
            JwtAlgorithm::ES256 => EC_PUBLIC,
            JwtAlgorithm::EdDSA => ED25519_PUBLIC,
            JwtAlgorithm::HS256 => HS256_SECRET,
        }
    }
}

/// How the server verifies a JWT it receives. Unset expectations are not checked; signature,
/// `exp` and `iat` always are (60s leeway, like real servers).
#[derive(Clone, Debug)]
pub struct JwtCheck {
    pub algorithm: JwtAlgorithm,
    /// PEM public key, or the shared secret for HS256.
    pub key: Vec<u8>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// `kid` header that must be present.
    pub kid: Option<String>,
    /// Largest `exp - iat` accepted (Google: 1h, GitHub: 10m).
    pub max_lifetime: Option<Duration>,
    /// Refuse a `jti` seen before (proves every exchange mints a fresh JWT). Default on.
    pub unique_jti: bool,
}

impl JwtCheck {
    pub fn new(algorithm: JwtAlgorithm, key: impl Into<Vec<u8>>) -> Self {
        JwtCheck {
            algorithm,
            key: key.into(),
            issuer: None,
            audience: None,
            kid: None,
            max_lifetime: None,
            unique_jti: true,
        }
    }

    /// Verifies with the public half of the fixture key pair for `algorithm` (see [`keys`]).
    pub fn fixture(algorithm: JwtAlgorithm) -> Self {
        Self::new(algorithm, keys::public(algorithm))
    }

    pub fn issuer(mut self, iss: impl Into<String>) -> Self {
        self.issuer = Some(iss.into());
        self
    }

    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.audience = Some(aud.into());
        self
    }

    pub fn kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    pub fn max_lifetime(mut self, d: Duration) -> Self {
        self.max_lifetime = Some(d);
        self
    }
}

/// What the server accepts and answers. `Default`: client `test-client`/`test-secret`, any scope,
/// no JWT check (JWT requests are then refused), tokens valid for an hour.
#[derive(Clone, Debug)]
pub struct TokenServerConfig {
    /// The one `client_credentials` client.
    pub client_id: String,
    pub client_secret: String,
    /// Scopes a `client_credentials` client may ask for; `None` allows any.
    pub allowed_scopes: Option<Vec<String>>,
    /// Verification of `jwt-bearer` assertions and installation-endpoint bearer JWTs.
    pub jwt: Option<JwtCheck>,
    /// `expires_in` of `/token` answers.
    pub expires_in: Duration,
    /// Lifetime of installation tokens (their `expires_at` is now + this).
    pub installation_token_lifetime: Duration,
}

impl Default for TokenServerConfig {
    fn default() -> Self {
        TokenServerConfig {
            client_id: "test-client".into(),
            client_secret: "test-secret".into(),
            allowed_scopes: None,
            jwt: None,
            expires_in: Duration::from_secs(3600),
            installation_token_lifetime: Duration::from_secs(3600),
        }
    }
}

/// Which endpoint and grant a request was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ClientCredentials,
    JwtBearer,
    Installation,
    /// `/token` with a missing or unknown `grant_type`.
    OtherGrant,
}

/// How a `client_credentials` client authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Post,
}

/// One request as the server saw it, and its answer.
#[derive(Clone, Debug)]
pub struct Seen {
    pub kind: Kind,
    pub path: String,
    pub headers: HeaderMap,
    /// `grant_type` of a `/token` request.
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub client_auth: Option<ClientAuth>,
    /// `scope` form parameter.
    pub scope: Option<String>,
    /// `{id}` of an installation request.
    pub installation: Option<String>,
    /// The JWT received (assertion or bearer), for hygiene checks (it must not leak anywhere).
    pub jwt: Option<String>,
    /// Header of the JWT, when it verified.
    pub jwt_header: Option<jsonwebtoken::Header>,
    /// Claims of the JWT, only when it verified.
    pub claims: Option<Value>,
    /// HTTP status answered.
    pub status: u16,
    /// Why the request was refused.
    pub error: Option<String>,
    /// The access token issued, if any.
    pub token: Option<String>,
}

impl Seen {
    fn new(kind: Kind, path: &str, headers: &HeaderMap) -> Self {
        Seen {
            kind,
            path: path.to_owned(),
            headers: headers.clone(),
            grant_type: None,
            client_id: None,
            client_auth: None,
            scope: None,
            installation: None,
            jwt: None,
            jwt_header: None,
            claims: None,
            status: 0,
            error: None,
            token: None,
        }
    }
}

struct Shared {
    config: TokenServerConfig,
    /// `config.jwt` with its parsed key; replaceable at runtime.
    jwt: Mutex<Option<(JwtCheck, DecodingKey)>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    jtis: Mutex<HashSet<String>>,
    issued: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    delay: Mutex<Duration>,
    reject_all: AtomicBool,
    outage: Mutex<Option<u16>>,
}

/// A running token server on a free loopback port; stops when dropped.
pub struct TokenServer {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenServer {
    /// Binds `127.0.0.1:0` and serves. Panics when the JWT check's key does not parse.
    pub async fn start(config: TokenServerConfig) -> TokenServer {
        let jwt = Mutex::new(config.jwt.clone().map(with_key));
        let shared = Arc::new(Shared {
            config,
            jwt,
            seen: Arc::default(),
            jtis: Mutex::default(),
            issued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            delay: Mutex::new(Duration::ZERO),
            reject_all: AtomicBool::new(false),
            outage: Mutex::new(None),
        });
        let app = axum::Router::new()
            .route("/token", post(token))
            .route("/app/installations/{id}/access_tokens", post(installation))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("token server: bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("token server: local address: {e}"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TokenServer {
            url: format!("http://{addr}"),
            shared,
            task,
        }
    }

    /// Base URL, `http://127.0.0.1:<port>` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `<url>/token`: for `client_credentials` and `JwtBearer` exchange.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.url)
    }

    /// `<url>/app/installations/{{identifier}}/access_tokens`: a `BearerCredential` token URL
    /// template where the account's identifier is the installation id.
    pub fn installation_url_template(&self) -> String {
        format!("{}/app/installations/{{{{identifier}}}}/access_tokens", self.url)
    }

    /// Replaces the JWT verification, e.g. to expect `aud` = [`Self::token_url`], which is only
    /// known once the server runs. Panics when the key does not parse.
    pub fn set_jwt_check(&self, check: Option<JwtCheck>) {
        *self.shared.jwt.lock().unwrap() = check.map(with_key);
    }

    /// A snapshot of every request so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The live record, for tests that want to hold or clear it.
    pub fn seen_handle(&self) -> Arc<Mutex<Vec<Seen>>> {
        self.shared.seen.clone()
    }

    /// Access tokens issued so far (all endpoints).
    pub fn issued(&self) -> usize {
        self.shared.issued.load(Ordering::SeqCst)
    }

    /// The access tokens issued so far, in order.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.seen().into_iter().filter_map(|s| s.token).collect()
    }

    /// Requests being handled right now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Most requests ever handled at once (counting the artificial delay).
    pub fn peak_concurrency(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// Starts a new peak measurement.
    pub fn reset_peak(&self) {
        self.shared
            .peak
            .store(self.shared.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Every request waits this long before it is handled (0 to stop).
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    /// Refuse every request as a provider does after revocation: `invalid_client` (401) for
    /// client credentials, `invalid_grant` (400) for jwt-bearer, 401 `Bad credentials` for
    /// installations.
    pub fn set_reject_all(&self, reject: bool) {
        self.shared.reject_all.store(reject, Ordering::SeqCst);
    }

    /// Answer every request with this status (e.g. 503, 429; with `Retry-After: 1`) and
    /// `{"error": "temporarily_unavailable"}`, until set to `None`.
    pub fn set_outage(&self, status: Option<u16>) {
        *self.shared.outage.lock().unwrap() = status;
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn with_key(check: JwtCheck) -> (JwtCheck, DecodingKey) {
    let key = match check.algorithm {
        JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(&check.key),
        JwtAlgorithm::ES256 => DecodingKey::from_ec_pem(&check.key),
        JwtAlgorithm::EdDSA => DecodingKey::from_ed_pem(&check.key),
        JwtAlgorithm::HS256 => Ok(DecodingKey::from_secret(&check.key)),
    }
    .unwrap_or_else(|e| panic!("token server: bad {:?} verification key: {e}", check.algorithm));
    (check, key)
}

/// Counts a request in flight for as long as it lives.
struct InFlight(Arc<Shared>);

impl InFlight {
    async fn enter(shared: &Arc<Shared>) -> InFlight {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak.fetch_max(now, Ordering::SeqCst);
        let delay = *shared.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await; // the artificial latency under test
        }
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn answer(shared: &Shared, mut seen: Seen, status: StatusCode, body: Value) -> Response {
    seen.status = status.as_u16();
    if seen.token.is_some() {
        shared.issued.fetch_add(1, Ordering::SeqCst);
    }
    shared.seen.lock().unwrap().push(seen);
    let mut response = (status, axum::Json(body)).into_response();
    if matches!(status.as_u16(), 429 | 503) {
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    }
    response
}

fn refuse(shared: &Shared, mut seen: Seen, status: StatusCode, body: Value, why: &str) -> Response {
    seen.error = Some(why.to_owned());
    answer(shared, seen, status, body)
}

fn oauth_error(code: &str, description: &str) -> Value {
    json!({"error": code, "error_description": description})
}

/// The status every request gets during a simulated outage.
fn outage(shared: &Shared) -> Option<StatusCode> {
    let status = *shared.outage.lock().unwrap();
    status.and_then(|s| StatusCode::from_u16(s).ok())
}

fn outage_answer(shared: &Shared, seen: Seen, status: StatusCode) -> Response {
    refuse(
        shared,
        seen,
        status,
        json!({"error": "temporarily_unavailable"}),
        "outage",
    )
}

async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let _in_flight = InFlight::enter(&shared).await;
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let param = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let grant_type = param("grant_type");
    let kind = match grant_type.as_deref() {
        Some("client_credentials") => Kind::ClientCredentials,
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => Kind::JwtBearer,
        _ => Kind::OtherGrant,
    };
    let mut seen = Seen::new(kind, "/token", &headers);
    seen.grant_type = grant_type;
    seen.scope = param("scope");
    if let Some(status) = outage(&shared) {
        return outage_answer(&shared, seen, status);
    }
    match kind {
        Kind::ClientCredentials => client_credentials(&shared, seen, &headers, &param),
        Kind::JwtBearer => jwt_bearer(&shared, seen, param("assertion")),
        _ => refuse(
            &shared,
            seen,
            StatusCode::BAD_REQUEST,
            oauth_error("unsupported_grant_type", "unsupported grant_type"),
            "unsupported grant_type",
        ),
    }
}

fn client_credentials(
    shared: &Shared,
    mut seen: Seen,
    headers: &HeaderMap,
    param: &dyn Fn(&str) -> Option<String>,
) -> Response {
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            // RFC 6749 2.3.1: id and secret are form-urlencoded before base64.
            let (id, secret) = s.split_once(':')?;
            let decode = |v: &str| {
                url::form_urlencoded::parse(format!("v={v}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            };
            Some((decode(id)?, decode(secret)?))
        });
    let (auth, credentials) = match basic {
        Some(c) => (Some(ClientAuth::Basic), Some(c)),
        None => match (param("client_id"), param("client_secret")) {
            (Some(id), Some(secret)) => (Some(ClientAuth::Post), Some((id, secret))),
            _ => (None, None),
        },
    };
    seen.client_auth = auth;
    seen.client_id = credentials.as_ref().map(|(id, _)| id.clone());
    let config = &shared.config;
    let valid =
        credentials.is_some_and(|(id, secret)| id == config.client_id && secret == config.client_secret);
    if !valid || shared.reject_all.load(Ordering::SeqCst) {
        let why = if valid { "rejecting all" } else { "wrong client" };
        return refuse(
            shared,
            seen,
            StatusCode::UNAUTHORIZED,
            oauth_error("invalid_client", "client authentication failed"),
            why,
        );
    }
    if let (Some(allowed), Some(scope)) = (&config.allowed_scopes, &seen.scope)
        && let Some(bad) = scope.split_whitespace().find(|s| !allowed.iter().any(|a| a == s))
    {
        let why = format!("scope {bad} not allowed");
        return refuse(
            shared,
            seen,
            StatusCode::BAD_REQUEST,
            oauth_error("invalid_scope", &why),
            &why,
        );
    }
    issue_access_token(shared, seen, "cc_", None)
}

fn jwt_bearer(shared: &Shared, mut seen: Seen, assertion: Option<String>) -> Response {
    seen.jwt = assertion.clone();
    let verified = match assertion {
        Some(jwt) => verify(shared, &jwt),
        None => Err("no assertion".to_owned()),
    };
    let verified = verified.and_then(|v| {
        if shared.reject_all.load(Ordering::SeqCst) {
            Err("rejecting all".to_owned())
        } else {
            Ok(v)
        }
    });
    match verified {
        Ok((header, claims)) => {
            let claim_scope = claims.get("scope").and_then(Value::as_str).map(str::to_owned);
            seen.jwt_header = Some(header);
            seen.claims = Some(claims);
            issue_access_token(shared, seen, "jb_", claim_scope)
        }
        Err(why) => refuse(
            shared,
            seen,
            StatusCode::BAD_REQUEST,
            oauth_error("invalid_grant", &why),
            &why,
        ),
    }
}

/// An RFC 6749 token response; `scope` echoes the form's, else the assertion's.
fn issue_access_token(
    shared: &Shared,
    mut seen: Seen,
    prefix: &str,
    fallback_scope: Option<String>,
) -> Response {
    let token = format!("{prefix}{}", agent_auth_operator::signer::random_id());
    let mut body = json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": shared.config.expires_in.as_secs(),
    });
    if let Some(scope) = seen.scope.clone().or(fallback_scope) {
        body["scope"] = Value::String(scope);
    }
    seen.token = Some(token);
    answer(shared, seen, StatusCode::OK, body)
}

async fn installation(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let _in_flight = InFlight::enter(&shared).await;
    let mut seen = Seen::new(
        Kind::Installation,
        &format!("/app/installations/{id}/access_tokens"),
        &headers,
    );
    seen.installation = Some(id);
    if let Some(status) = outage(&shared) {
        return outage_answer(&shared, seen, status);
    }
    let jwt = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    seen.jwt = jwt.clone();
    let verified = match jwt {
        Some(jwt) => verify(&shared, &jwt),
        None => Err("no bearer JWT".to_owned()),
    };
    let (header, claims) = match verified {
        Ok(v) if !shared.reject_all.load(Ordering::SeqCst) => v,
        Ok(_) => {
            let body = json!({"message": "Bad credentials"});
            return refuse(&shared, seen, StatusCode::UNAUTHORIZED, body, "rejecting all");
        }
        Err(why) => {
            let body = json!({"message": why, "documentation_url": "https://docs.github.com/rest"});
            return refuse(&shared, seen, StatusCode::UNAUTHORIZED, body, &why);
        }
    };
    seen.jwt_header = Some(header);
    seen.claims = Some(claims);
    let token = format!("ghs_{}", agent_auth_operator::signer::random_id());
    let lifetime = i64::try_from(shared.config.installation_token_lifetime.as_secs()).unwrap_or(3600);
    let expires_at = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + lifetime).unwrap();
    seen.token = Some(token.clone());
    let body = json!({
        "token": token,
        "expires_at": expires_at.to_string(),
        "permissions": {"issues": "write"},
        "repository_selection": "all",
    });
    answer(&shared, seen, StatusCode::CREATED, body)
}

/// Verifies a received JWT against the configured [`JwtCheck`]; the reason when it fails.
fn verify(shared: &Shared, jwt: &str) -> Result<(jsonwebtoken::Header, Value), String> {
    let Some((check, key)) = shared.jwt.lock().unwrap().clone() else {
        return Err("this server verifies no JWTs (TokenServerConfig::jwt is unset)".into());
    };
    let algorithm = match check.algorithm {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
        JwtAlgorithm::HS256 => Algorithm::HS256,
    };
    let mut validation = Validation::new(algorithm);
    validation.set_required_spec_claims(&["exp", "iat"]);
    if let Some(iss) = &check.issuer {
        validation.set_issuer(&[iss]);
    }
    match &check.audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    let data =
        jsonwebtoken::decode::<Value>(jwt, &key, &validation).map_err(|e| format!("invalid JWT: {e}"))?;
    if let Some(kid) = &check.kid
        && data.header.kid.as_ref() != Some(kid)
    {
        return Err(format!("kid {:?} is not {kid:?}", data.header.kid));
    }
    let claim = |name: &str| data.claims.get(name).and_then(Value::as_i64);
    let (Some(iat), Some(exp)) = (claim("iat"), claim("exp")) else {
        return Err("iat and exp must be integers".into());
    };
    if iat > jiff::Timestamp::now().as_second() + 60 {
        return Err("iat is in the future".into());
    }
    if let Some(max) = check.max_lifetime
        && exp - iat > i64::try_from(max.as_secs()).unwrap_or(i64::MAX)
    {
        return Err(format!(
            "exp - iat is {}s, more than {}s",
            exp - iat,
            max.as_secs()
        ));
    }
    if check.unique_jti {
        let Some(jti) = data.claims.get("jti").and_then(Value::as_str) else {
            return Err("no jti".into());
        };
        if !shared.jtis.lock().unwrap().insert(jti.to_owned()) {
            return Err("jti reused".into());
        }
    }
    Ok((data.header, data.claims))
}
