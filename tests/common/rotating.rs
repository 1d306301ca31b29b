//! A strict rotating OAuth 2.0 provider for integration tests (test code): every refresh rotates
//! the refresh token, and a consumed refresh token presented again revokes the whole grant, every
//! refresh and access token it issued (RFC 9700 §4.14), unless an optional grace window lets one
//! replay through. The authorization endpoint consents at once (no login page).
//!
//! ```ignore
//! let p = RotatingProvider::start(RotatingOptions {
//!     drop_scopes: vec!["offline_access".into()],
//!     ..Default::default()
//! }).await;
//! // Connection: authorizeUrl = p.authorize_url(), tokenUrl = p.token_url(),
//! //   client rot-client/rot-secret (client_secret_basic or client_secret_post)
//! p.hold_rotations();                       // the next refresh rotates, its answer waits
//! assert!(p.wait_held(Duration::from_secs(30)).await);
//! // ... SIGKILL the operator while the new refresh token is in flight ...
//! p.release();
//! assert_eq!(p.reuse_count(), 0, "received {:?}", p.refresh_tokens_received());
//! ```
//!
//! Endpoints:
//! - `GET /authorize?response_type=code&client_id&redirect_uri&state&scope&code_challenge&
//!   code_challenge_method`: `302` to `redirect_uri?code=..&state=..`; a wrong client or a PKCE
//!   method other than `S256` gets 400 (plain text). Codes are one-time (consumed when first
//!   presented) and valid for 5 minutes.
//! - `POST /token`: client authentication (Basic or form) else 401 `invalid_client`;
//!   `authorization_code` (redirect_uri must match, PKCE S256 verified) creates a grant;
//!   `refresh_token` rotates the grant's current refresh token. A consumed one revokes the grant
//!   (400 `invalid_grant`), except for one replay within [`RotatingOptions::grace`] of its
//!   consumption, which issues a fresh pair in the same grant; the grant's current refresh token
//!   it replaces counts as consumed from then on. Unknown tokens, revoked grants: 400.
//! - `GET /userinfo` with `Authorization: Bearer <access token>`: 200 `{"sub":"user-1"}` or 401.
//! - `POST /revoke` (RFC 7009) `token=<access or refresh token>`: revokes its grant, 200.
//!
//! While [`RotatingProvider::hold_rotations`] is on, every `refresh_token` answer (success or
//! error) waits for [`RotatingProvider::release`]; the state changes before the wait, so a
//! client killed meanwhile has lost the new pair. Shuts down when dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// How long an authorization code may be exchanged.
const CODE_TTL: Duration = Duration::from_secs(300);

/// The provider's one client and its behaviour.
#[derive(Clone, Debug)]
pub struct RotatingOptions {
    /// Default `rot-client`.
    pub client_id: String,
    /// Default `rot-secret`; `client_secret_basic` and `client_secret_post` are both accepted.
    pub client_secret: String,
    /// `expires_in` of every access token (and how long it stays valid), default 60 s.
    pub access_ttl: Duration,
    /// `None`: strict. `Some(w)`: a consumed refresh token presented again within `w` of its
    /// consumption is accepted once more (a fresh pair in the same grant, counted in
    /// [`RotatingProvider::replays_accepted`]); later, or a second time, it is reuse.
    pub grace: Option<Duration>,
    /// Requested scopes left out of the token response's `scope` (e.g. `offline_access`).
    pub drop_scopes: Vec<String>,
}

impl Default for RotatingOptions {
    fn default() -> Self {
        RotatingOptions {
            client_id: "rot-client".into(),
            client_secret: "rot-secret".into(),
            access_ttl: Duration::from_secs(60),
            grace: None,
            drop_scopes: Vec::new(),
        }
    }
}

struct Code {
    redirect_uri: String,
    scope: String,
    challenge: Option<String>,
    issued: Instant,
}

struct Grant {
    /// The granted scope as answered (requested minus `drop_scopes`).
    scope: String,
    current: String,
    revoked: bool,
}

struct Refresh {
    grant: usize,
    consumed: Option<Instant>,
    replayed: bool,
}

struct Access {
    grant: usize,
    expires: Instant,
}

#[derive(Default)]
struct Book {
    codes: HashMap<String, Code>,
    grants: Vec<Grant>,
    refresh: HashMap<String, Refresh>,
    access: HashMap<String, Access>,
    received: Vec<String>,
    reuse: usize,
    replays: usize,
    rotations: usize,
    revoked: usize,
    codes_issued: usize,
    holding: bool,
}

impl Book {
    fn revoke(&mut self, grant: usize) {
        if !self.grants[grant].revoked {
            self.grants[grant].revoked = true;
            self.revoked += 1;
        }
    }

    /// A new access and refresh token in `grant`, which becomes its current refresh token.
    fn issue(&mut self, grant: usize, ttl: Duration) -> Value {
        let (at, rt) = (token("rat_"), token("rrt_"));
        let expires = Instant::now() + ttl;
        self.access.insert(at.clone(), Access { grant, expires });
        let (consumed, replayed) = (None, false);
        self.refresh.insert(
            rt.clone(),
            Refresh {
                grant,
                consumed,
                replayed,
            },
        );
        self.grants[grant].current = rt.clone();
        json!({
            "access_token": at,
            "token_type": "Bearer",
            "expires_in": ttl.as_secs(),
            "refresh_token": rt,
            "scope": self.grants[grant].scope,
        })
    }

    /// Issued, not expired, and its grant is not revoked.
    fn valid(&self, at: &str) -> bool {
        let valid = |a: &Access| a.expires > Instant::now() && !self.grants[a.grant].revoked;
        self.access.get(at).is_some_and(valid)
    }

    fn grant_of(&self, token: &str) -> Option<usize> {
        let access = self.access.get(token).map(|a| a.grant);
        access.or_else(|| self.refresh.get(token).map(|r| r.grant))
    }
}

struct Shared {
    opts: RotatingOptions,
    book: Mutex<Book>,
    /// Bumped by `release`; held answers wait for a change.
    released: tokio::sync::watch::Sender<u64>,
    held: AtomicUsize,
    stall: Mutex<Duration>,
}

impl Shared {
    fn is_client(&self, (id, secret): &(String, String)) -> bool {
        *id == self.opts.client_id && *secret == self.opts.client_secret
    }
}

/// A running provider on a free loopback port; stops when dropped.
pub struct RotatingProvider {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl RotatingProvider {
    /// Binds `127.0.0.1:0` and serves.
    pub async fn start(opts: RotatingOptions) -> RotatingProvider {
        Self::start_on("127.0.0.1", opts).await
    }

    /// Binds a free port of `host` (e.g. a test node's host address, for pods) and serves.
    pub async fn start_on(host: &str, opts: RotatingOptions) -> RotatingProvider {
        let shared = Arc::new(Shared {
            opts,
            book: Mutex::default(),
            released: tokio::sync::watch::Sender::new(0),
            held: AtomicUsize::new(0),
            stall: Mutex::new(Duration::ZERO),
        });
        let app = axum::Router::new()
            .route("/authorize", get(authorize))
            .route("/token", post(token_endpoint))
            .route("/userinfo", get(userinfo))
            .route("/revoke", post(revoke))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind((host, 0))
            .await
            .unwrap_or_else(|e| panic!("rotating provider: bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("rotating provider: local address: {e}"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RotatingProvider {
            url: format!("http://{addr}"),
            shared,
            task,
        }
    }

    /// Base URL, `http://127.0.0.1:<port>` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn authorize_url(&self) -> String {
        format!("{}/authorize", self.url)
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.url)
    }

    pub fn revocation_url(&self) -> String {
        format!("{}/revoke", self.url)
    }

    pub fn userinfo_url(&self) -> String {
        format!("{}/userinfo", self.url)
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.shared.book.lock().unwrap()
    }

    /// From now on refresh requests change the state at once but their answers wait for
    /// [`Self::release`].
    pub fn hold_rotations(&self) {
        self.book().holding = true;
    }

    /// True once at least one refresh answer is held, false when none is within `within`.
    pub async fn wait_held(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.held() > 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await; // polling interval
        }
    }

    /// Refresh answers waiting right now (a client that hung up is no longer counted).
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Sends the held answers (to clients that may be gone) and stops holding.
    pub fn release(&self) {
        let mut book = self.book();
        book.holding = false;
        self.shared.released.send_modify(|n| *n += 1);
    }

    /// Every refresh answer is sent `d` after the rotation (`Duration::ZERO`: at once).
    pub fn set_stall(&self, d: Duration) {
        *self.shared.stall.lock().unwrap() = d;
    }

    /// Every `refresh_token` received with `grant_type=refresh_token`, in order.
    pub fn refresh_tokens_received(&self) -> Vec<String> {
        self.book().received.clone()
    }

    /// Consumed refresh tokens received again, excluding replays accepted in the grace window.
    pub fn reuse_count(&self) -> usize {
        self.book().reuse
    }

    /// Replays accepted in the grace window.
    pub fn replays_accepted(&self) -> usize {
        self.book().replays
    }

    /// Successful refreshes (200 answers to `refresh_token`), grace replays included.
    pub fn rotations(&self) -> usize {
        self.book().rotations
    }

    /// Grants revoked, by reuse or by `/revoke`.
    pub fn grants_revoked(&self) -> usize {
        self.book().revoked
    }

    /// Grants created by code exchanges.
    pub fn grants(&self) -> usize {
        self.book().grants.len()
    }

    /// Issued by this provider, not expired, and its grant is not revoked.
    pub fn access_token_valid(&self, at: &str) -> bool {
        self.book().valid(at)
    }

    /// The refresh token a client holding the newest pair of `rt`'s grant would present next.
    pub fn current_refresh_token(&self, rt: &str) -> Option<String> {
        let book = self.book();
        book.refresh.get(rt).map(|r| book.grants[r.grant].current.clone())
    }

    /// Every access and refresh token this provider ever issued.
    pub fn issued_tokens(&self) -> Vec<String> {
        let book = self.book();
        book.access.keys().chain(book.refresh.keys()).cloned().collect()
    }

    pub fn codes_issued(&self) -> usize {
        self.book().codes_issued
    }
}

impl Drop for RotatingProvider {
    fn drop(&mut self) {
        self.release();
        self.task.abort();
    }
}

/// `prefix` and 32 random URL-safe characters.
fn token(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, text.to_owned()).into_response()
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    let body = json!({"error": code, "error_description": description});
    (status, axum::Json(body)).into_response()
}

fn bad_request(code: &str, why: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, code, why)
}

fn invalid_grant(why: &str) -> Response {
    bad_request("invalid_grant", why)
}

fn invalid_client() -> Response {
    oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client authentication failed",
    )
}

async fn authorize(State(shared): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let param = |name: &str| q.get(name).cloned();
    if param("client_id").as_deref() != Some(shared.opts.client_id.as_str()) {
        return plain(StatusCode::BAD_REQUEST, "unknown client_id");
    }
    if param("response_type").as_deref() != Some("code") {
        return plain(StatusCode::BAD_REQUEST, "response_type must be code");
    }
    let Some(redirect_uri) = param("redirect_uri") else {
        return plain(StatusCode::BAD_REQUEST, "redirect_uri is required");
    };
    let challenge = param("code_challenge");
    if challenge.is_some() && param("code_challenge_method").as_deref() != Some("S256") {
        return plain(StatusCode::BAD_REQUEST, "code_challenge_method must be S256");
    }
    let requested = param("scope").unwrap_or_default();
    let drop = &shared.opts.drop_scopes;
    let kept: Vec<&str> = requested
        .split_whitespace()
        .filter(|s| !drop.iter().any(|d| d == s))
        .collect();
    let code = token("rcode_");
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("code", &code);
    if let Some(state) = param("state") {
        query.append_pair("state", &state);
    }
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    let location = format!("{redirect_uri}{separator}{}", query.finish());
    let entry = Code {
        redirect_uri,
        scope: kept.join(" "),
        challenge,
        issued: Instant::now(),
    };
    let mut book = shared.book.lock().unwrap();
    book.codes.insert(code, entry);
    book.codes_issued += 1;
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// The `(client_id, client_secret)` of HTTP Basic (form-urlencoded inside, RFC 6749 §2.3.1), else
/// of the form.
fn client_credentials(headers: &HeaderMap, form: &Form) -> Option<(String, String)> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    if let Some(basic) = basic {
        let (id, secret) = basic.split_once(':')?;
        let decode = |v: &str| {
            url::form_urlencoded::parse(format!("v={v}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        return Some((decode(id)?, decode(secret)?));
    }
    Some((form.get("client_id")?, form.get("client_secret")?))
}

/// A form-urlencoded body.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &str) -> Form {
        Form(
            url::form_urlencoded::parse(body.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<String> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
}

async fn token_endpoint(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let form = Form::parse(&body);
    if client_credentials(&headers, &form).is_none_or(|client| !shared.is_client(&client)) {
        return invalid_client();
    }
    match form.get("grant_type").as_deref() {
        Some("authorization_code") => exchange(&shared, &form),
        Some("refresh_token") => refresh(&shared, form.get("refresh_token")).await,
        _ => bad_request("unsupported_grant_type", "unsupported grant_type"),
    }
}

fn exchange(shared: &Shared, form: &Form) -> Response {
    let mut book = shared.book.lock().unwrap();
    // One-time: gone once presented, whatever the outcome.
    let Some(entry) = book.codes.remove(&form.get("code").unwrap_or_default()) else {
        return invalid_grant("unknown or used code");
    };
    if entry.issued.elapsed() > CODE_TTL {
        return invalid_grant("code expired");
    }
    if form.get("redirect_uri").as_deref() != Some(entry.redirect_uri.as_str()) {
        return invalid_grant("redirect_uri does not match the authorization request");
    }
    if let Some(challenge) = &entry.challenge {
        let Some(verifier) = form.get("code_verifier") else {
            return invalid_grant("code_verifier is required");
        };
        if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != *challenge {
            return invalid_grant("PKCE verification failed");
        }
    }
    let grant = book.grants.len();
    let (scope, current, revoked) = (entry.scope, String::new(), false);
    book.grants.push(Grant {
        scope,
        current,
        revoked,
    });
    let body = book.issue(grant, shared.opts.access_ttl);
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// Counts a held answer for as long as it waits (also when the client hangs up and the request
/// is dropped).
struct Held<'a>(&'a AtomicUsize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn refresh(shared: &Shared, rt: Option<String>) -> Response {
    let (answer, hold) = {
        let mut book = shared.book.lock().unwrap();
        let answer = rotate(&mut book, &shared.opts, rt);
        let hold = book.holding.then(|| shared.released.subscribe());
        (answer, hold)
    };
    if let Some(mut released) = hold {
        shared.held.fetch_add(1, Ordering::SeqCst);
        let _held = Held(&shared.held);
        let _ = released.changed().await;
    }
    let stall = *shared.stall.lock().unwrap();
    if !stall.is_zero() {
        tokio::time::sleep(stall).await; // the provider's latency under test
    }
    answer
}

/// The state change of one `refresh_token` request, and its answer.
fn rotate(book: &mut Book, opts: &RotatingOptions, rt: Option<String>) -> Response {
    let Some(rt) = rt else {
        return bad_request("invalid_request", "refresh_token is required");
    };
    book.received.push(rt.clone());
    let Some(entry) = book.refresh.get_mut(&rt) else {
        return invalid_grant("unknown refresh token");
    };
    let grant = entry.grant;
    let revoked = book.grants[grant].revoked;
    match entry.consumed {
        Some(at) => {
            let in_grace = opts.grace.is_some_and(|w| at.elapsed() <= w);
            if in_grace && !entry.replayed && !revoked {
                entry.replayed = true;
                book.replays += 1;
            } else {
                book.reuse += 1;
                book.revoke(grant);
                return invalid_grant("refresh token reused: grant revoked");
            }
        }
        None if revoked => return invalid_grant("grant revoked"),
        None => entry.consumed = Some(Instant::now()),
    }
    // After a grace replay the grant's current token (issued by the first use) is superseded.
    let current = book.grants[grant].current.clone();
    if let Some(previous) = book.refresh.get_mut(&current)
        && previous.consumed.is_none()
    {
        previous.consumed = Some(Instant::now());
    }
    book.rotations += 1;
    let body = book.issue(grant, opts.access_ttl);
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn userinfo(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let at = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if shared.book.lock().unwrap().valid(at) {
        (StatusCode::OK, axum::Json(json!({"sub": "user-1"}))).into_response()
    } else {
        let challenge = [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")];
        (StatusCode::UNAUTHORIZED, challenge).into_response()
    }
}

async fn revoke(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let form = Form::parse(&body);
    if client_credentials(&headers, &form).is_some_and(|client| !shared.is_client(&client)) {
        return invalid_client(); // client authentication is optional, but must be right
    }
    let mut book = shared.book.lock().unwrap();
    if let Some(grant) = book.grant_of(&form.get("token").unwrap_or_default()) {
        book.revoke(grant);
    }
    StatusCode::OK.into_response()
}
