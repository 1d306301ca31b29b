//! A real Dex (OpenID Connect provider) for integration tests, and a scripted user for it.
//!
//! [`Dex::start`] runs the cached Dex binary on free loopback ports with in-memory storage, one
//! static confidential client (`agentauth-test`) and ten static password users
//! (`user0@example.com` .. `user9@example.com`, password `password`). The approval screen is skipped,
//! so logging in is the whole consent.
//!
//! [`login`] plays the user's part of an authorization code flow without a browser: it opens a link,
//! presses Continue on the gateway's interstitial ([`press_continue`]), follows redirects to Dex's
//! login form, submits the user's credentials and follows redirects back
//! to the client. [`authorize_until`] does the same but stops before the redirect URI and hands back
//! the URL Dex sent the browser to (with `code` and `state`). [`Dex::revoke_refresh_tokens`] revokes a
//! user's refresh token at Dex through its gRPC API, as an administrator would.

// Each integration test binary compiles this module; most use only part of it.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Proc, free_port};
use reqwest::{Client, Response, Url, redirect};

/// Id of the static client Dex knows.
pub const CLIENT_ID: &str = "agentauth-test";
/// Number of static users: `user0@example.com` .. `user9@example.com`.
pub const USERS: usize = 10;
/// Password of every static user.
pub const PASSWORD: &str = "password";
/// bcrypt (cost 10) of "password", the hash Dex's own example configuration uses.
const PASSWORD_HASH: &str = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";
/// Dex's id of its built-in password connector; part of every user's `sub`.
const CONNECTOR_ID: &str = "local";
/// How long Dex may take to answer its discovery document.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Knobs for [`Dex::start_with`].
#[derive(Clone, Debug)]
pub struct DexOptions<'a> {
    /// `expiry.idTokens`, a Go duration ("60s", "5m", "1h30m"). Dex also uses it as the access
    /// token lifetime, i.e. the token response's `expires_in`.
    pub id_token_ttl: &'a str,
    /// More redirect URIs every client registers (for example a ClusterConnection's own).
    pub extra_redirect_uris: Vec<String>,
    /// The address Dex's web server (the issuer) listens on: loopback, or the host end of a test
    /// node's link so that pods reach it too.
    pub host: &'a str,
}

impl Default for DexOptions<'_> {
    fn default() -> Self {
        DexOptions {
            id_token_ttl: "60s",
            extra_redirect_uris: Vec::new(),
            host: "127.0.0.1",
        }
    }
}

/// A static Dex user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DexUser {
    pub email: String,
    pub password: String,
    /// The `userID` in Dex's configuration.
    pub user_id: String,
    /// The `sub` claim Dex issues for this user (its user id and connector id, encoded by Dex).
    pub sub: String,
}

/// A running Dex. Dropping it kills the process and removes its directory.
pub struct Dex {
    /// Issuer URL, `http://<host>:<port>/dex` (host: [`DexOptions::host`]).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// The client's first registered redirect URI.
    pub redirect_uri: String,
    /// Its other redirect URIs ([`DexOptions::extra_redirect_uris`]).
    pub extra_redirect_uris: Vec<String>,
    /// `host:port` of Dex's (plaintext, loopback) gRPC API.
    pub grpc_addr: String,
    /// Lifetime of ID and access tokens (`expiry.idTokens`).
    pub id_token_ttl: Duration,
    authorization_url: String,
    token_url: String,
    userinfo_url: String,
    revoke_bin: PathBuf,
    dir: tempfile::TempDir,
    proc: Option<Proc>,
    /// How many of the [`CLIENTS`] static clients [`Dex::next_client_id`] handed out.
    clients_used: std::sync::atomic::AtomicUsize,
}

/// Static clients Dex registers: `client_id` and `client_id-1` .. `client_id-63`, all with the
/// same secret and redirect URI. The operator lets one OAuth client serve one namespace, so each
/// test namespace takes its own.
pub const CLIENTS: usize = 64;

impl Dex {
    /// Starts Dex with [`DexOptions::default`] (60 s tokens) and `redirect_uri` as the client's only
    /// redirect URI. Returns once the discovery document is served and the gRPC port accepts
    /// connections; fails with the end of Dex's log if it exits or does not get ready.
    pub fn start(redirect_uri: &str) -> Result<Dex, String> {
        Dex::start_with(redirect_uri, DexOptions::default())
    }

    /// [`Dex::start`] with options.
    pub fn start_with(redirect_uri: &str, opts: DexOptions<'_>) -> Result<Dex, String> {
        let id_token_ttl = parse_go_duration(opts.id_token_ttl)?;
        let bins = crate::binaries()?;
        let mut last = String::new();
        // A port found free can be taken before Dex binds it; that race is retried, nothing else.
        for _ in 0..3 {
            match start_once(
                &bins.dex,
                &bins.dexrevoke,
                redirect_uri,
                &opts.extra_redirect_uris,
                opts.id_token_ttl,
                id_token_ttl,
                opts.host,
            ) {
                Ok(dex) => return Ok(dex),
                Err(e) if e.contains("address already in use") => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// A static client no Connection of this process uses yet (the first is `client_id`).
    pub fn next_client_id(&self) -> String {
        let n = self
            .clients_used
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert!(n < CLIENTS, "Dex has {CLIENTS} static clients");
        if n == 0 {
            self.client_id.clone()
        } else {
            format!("{}-{n}", self.client_id)
        }
    }

    /// Dex's authorization endpoint (from its discovery document).
    pub fn authorization_url(&self) -> &str {
        &self.authorization_url
    }

    /// Dex's token endpoint.
    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// Dex's userinfo endpoint.
    pub fn userinfo_url(&self) -> &str {
        &self.userinfo_url
    }

    /// Static user `i` (0..10): `user<i>@example.com`, password `password`.
    pub fn user(&self, i: usize) -> DexUser {
        assert!(i < USERS, "Dex has {USERS} static users, not user{i}");
        let user_id = format!("agentauth-test-user-{i}");
        DexUser {
            email: format!("user{i}@example.com"),
            password: PASSWORD.to_owned(),
            sub: subject(&user_id, CONNECTOR_ID),
            user_id,
        }
    }

    /// Revokes the refresh token Dex holds for `user` and this client (Dex keeps one per pair), so
    /// the next refresh with it is rejected. Fails when Dex has none, or the gRPC call fails.
    pub fn revoke_refresh_tokens(&self, user: &DexUser) -> Result<(), String> {
        // The user's tokens may be with any client handed out so far.
        let used = self
            .clients_used
            .load(std::sync::atomic::Ordering::SeqCst)
            .clamp(1, CLIENTS);
        let mut last = String::new();
        for n in 0..used {
            let client = if n == 0 {
                self.client_id.clone()
            } else {
                format!("{}-{n}", self.client_id)
            };
            match self.revoke_for(user, &client) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn revoke_for(&self, user: &DexUser, client: &str) -> Result<(), String> {
        let out = Command::new(&self.revoke_bin)
            .args(["-addr", &self.grpc_addr, "-sub", &user.sub, "-client", client])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.revoke_bin.display()))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(match out.status.code() {
            Some(3) => format!("Dex has no refresh token of {} for any client", user.email),
            _ => format!(
                "revoking the refresh token of {} failed ({}): {}",
                user.email,
                out.status,
                stderr.trim()
            ),
        })
    }

    /// Path of Dex's log.
    pub fn log_path(&self) -> Option<&Path> {
        self.proc.as_ref().map(Proc::log_path)
    }

    /// The last `lines` lines of Dex's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.proc.as_ref().map(|p| p.log_tail(lines)).unwrap_or_default()
    }
}

impl Dex {
    /// Removes Dex's directory (for shared instances that are never dropped; the process itself
    /// dies with the test binary).
    pub fn remove_dir(&self) {
        let _ = std::fs::remove_dir_all(self.dir.path());
    }
}

impl Drop for Dex {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        // The directory goes with the `dir` field, after the process.
    }
}

fn start_once(
    dex_bin: &Path,
    revoke_bin: &Path,
    redirect_uri: &str,
    extra_redirect_uris: &[String],
    ttl_text: &str,
    id_token_ttl: Duration,
    host: &str,
) -> Result<Dex, String> {
    let dir = crate::scratch_dir("agentauth-dex-")?;
    let web_addr = format!("{host}:{}", free_port()?);
    let grpc_addr = format!("127.0.0.1:{}", free_port()?);
    let issuer = format!("http://{web_addr}/dex");
    let mut dex = Dex {
        issuer,
        client_id: CLIENT_ID.to_owned(),
        client_secret: random_secret(),
        redirect_uri: redirect_uri.to_owned(),
        extra_redirect_uris: extra_redirect_uris.to_vec(),
        grpc_addr,
        id_token_ttl,
        authorization_url: String::new(),
        token_url: String::new(),
        userinfo_url: String::new(),
        revoke_bin: revoke_bin.to_owned(),
        clients_used: std::sync::atomic::AtomicUsize::new(0),
        dir,
        proc: None,
    };
    let config = dex.dir.path().join("config.yaml");
    std::fs::write(&config, config_yaml(&dex, &web_addr, ttl_text))
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let args = ["serve".to_owned(), config.display().to_string()];
    dex.proc = Some(Proc::spawn(dex.dir.path(), "dex", dex_bin, &args, &[])?);
    let discovery = wait_ready(&mut dex, &web_addr)?;
    let endpoint = |key: &str| {
        discovery[key]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("Dex's discovery document has no {key}"))
    };
    dex.authorization_url = endpoint("authorization_endpoint")?;
    dex.token_url = endpoint("token_endpoint")?;
    dex.userinfo_url = endpoint("userinfo_endpoint")?;
    Ok(dex)
}

/// Dex's configuration. Strings are written as JSON strings, which YAML reads verbatim.
fn config_yaml(dex: &Dex, web_addr: &str, ttl: &str) -> String {
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut y = format!(
        "issuer: {issuer}
storage:
  type: memory
web:
  http: {web}
grpc:
  addr: {grpc}
expiry:
  idTokens: {ttl}
oauth2:
  skipApprovalScreen: true
  responseTypes: [\"code\"]
  grantTypes: [\"authorization_code\", \"refresh_token\"]
staticClients:
",
        issuer = q(&dex.issuer),
        web = q(web_addr),
        grpc = q(&dex.grpc_addr),
        ttl = q(ttl),
    );
    for n in 0..CLIENTS {
        let id = if n == 0 {
            dex.client_id.clone()
        } else {
            format!("{}-{n}", dex.client_id)
        };
        y.push_str(&format!(
            "- id: {id}\n  name: \"agent-auth-operator tests\"\n  secret: {secret}\n  redirectURIs: [{redirect}]\n",
            id = q(&id),
            secret = q(&dex.client_secret),
            redirect = std::iter::once(&dex.redirect_uri)
                .chain(&dex.extra_redirect_uris)
                .map(|u| q(u))
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    y.push_str("enablePasswordDB: true\nstaticPasswords:\n");
    for i in 0..USERS {
        let u = dex.user(i);
        y.push_str(&format!(
            "- email: {email}\n  username: {name}\n  userID: {id}\n  emailVerified: true\n  hash: {hash}\n",
            email = q(&u.email),
            name = q(&format!("user{i}")),
            id = q(&u.user_id),
            hash = q(PASSWORD_HASH),
        ));
    }
    y
}

/// Polls the discovery document and the gRPC port until both answer; returns the document.
fn wait_ready(dex: &mut Dex, web_addr: &str) -> Result<serde_json::Value, String> {
    let path = format!("{}/.well-known/openid-configuration", issuer_path(&dex.issuer));
    let deadline = Instant::now() + START_TIMEOUT;
    let mut wait = Duration::from_millis(10);
    loop {
        if let Some(status) = dex.proc.as_mut().and_then(Proc::exited) {
            return Err(format!(
                "Dex exited ({status}) while starting:\n{}",
                dex.log_tail(20)
            ));
        }
        if let Some(body) = http_get(web_addr, &path)
            && let Ok(doc) = serde_json::from_str::<serde_json::Value>(&body)
            && grpc_listening(&dex.grpc_addr)
        {
            return Ok(doc);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "Dex did not serve {path} within {START_TIMEOUT:?}:\n{}",
                dex.log_tail(20)
            ));
        }
        std::thread::sleep(wait); // poll interval, not synchronisation
        wait = (wait * 2).min(Duration::from_millis(200));
    }
}

/// The path part of an issuer URL (`/dex`).
fn issuer_path(issuer: &str) -> &str {
    let rest = issuer.split_once("://").map_or(issuer, |(_, r)| r);
    rest.find('/').map_or("", |i| &rest[i..])
}

/// A minimal blocking HTTP/1.0 GET; the body when the status is 200.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let sock: SocketAddr = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_owned())
}

fn grpc_listening(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

/// A client secret that differs on every start (std's randomly keyed hasher, fed the clock).
fn random_secret() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (0..2_u8)
        .map(|i| {
            let mut h = RandomState::new().build_hasher();
            h.write_u128(now);
            h.write_u8(i);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// The `sub` Dex issues: its `IDTokenSubject{user_id = 1, conn_id = 2}` protobuf message, in
/// unpadded base64url. (RevokeRefresh takes this value as its user id.)
fn subject(user_id: &str, connector_id: &str) -> String {
    let mut msg = Vec::new();
    for (tag, field) in [(0x0a_u8, user_id), (0x12, connector_id)] {
        msg.push(tag);
        let mut len = field.len();
        while len >= 0x80 {
            msg.push((len & 0x7f) as u8 | 0x80);
            len >>= 7;
        }
        msg.push(len as u8);
        msg.extend_from_slice(field.as_bytes());
    }
    base64url(&msg)
}

fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0_u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize]));
        }
    }
    out
}

/// Parses the Go durations tests use: a sequence of `<number><unit>` with units h, m, s, ms.
fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like \"60s\", \"5m\" or \"1h30m\"");
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else {
            match rest.as_bytes().first() {
                Some(b'h') => (Duration::from_secs(3600), 1),
                Some(b'm') => (Duration::from_secs(60), 1),
                Some(b's') => (Duration::from_secs(1), 1),
                _ => return Err(bad()),
            }
        };
        total += unit * u32::try_from(n).map_err(|_| bad())?;
        rest = &rest[len..];
    }
    Ok(total)
}

/// A browser: cookies kept, redirects followed (up to 10).
pub fn browser() -> Client {
    build_client(redirect::Policy::limited(10))
}

/// A browser that follows redirects except to a URL starting with `stop_prefix`: the response
/// redirecting there is returned as is. For [`authorize_until`].
pub fn browser_until(stop_prefix: &str) -> Client {
    let stop = stop_prefix.to_owned();
    build_client(redirect::Policy::custom(move |attempt| {
        if attempt.url().as_str().starts_with(&stop) {
            attempt.stop()
        } else if attempt.previous().len() > 10 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    }))
}

fn build_client(policy: redirect::Policy) -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(policy)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| std::panic::panic_any(format!("cannot build an HTTP client: {e}")))
}

/// Plays `user` through an authorization code flow started at `link` (a URL that ends up, through
/// redirects, at Dex's authorization endpoint, or that endpoint itself): loads Dex's login form,
/// submits the credentials, and follows redirects back to the client's redirect URI. Returns the
/// final response, whatever its status. `http` should come from [`browser`].
///
/// Fails when `link` does not lead to Dex's login form, when Dex rejects the credentials, or on a
/// transport error.
pub async fn login(http: &Client, link: &str, user: &DexUser) -> Result<Response, String> {
    let (resp, form) = submit_credentials(http, link, user).await?;
    if same_origin(resp.url(), &form) {
        return Err(format!(
            "Dex kept {} at {} ({}): wrong credentials or a Dex error",
            user.email,
            without_query(resp.url()),
            resp.status()
        ));
    }
    Ok(resp)
}

/// Like [`login`], but stops at the redirect to a URL starting with `stop_prefix` (normally the
/// client's redirect URI) and returns that URL, with its `code` and `state` (or `error`). `http`
/// must come from [`browser_until`] with the same prefix.
pub async fn authorize_until(
    http: &Client,
    start_url: &str,
    user: &DexUser,
    stop_prefix: &str,
) -> Result<Url, String> {
    let (resp, _) = submit_credentials(http, start_url, user).await?;
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| resp.url().join(l).ok());
    match location {
        Some(url) if resp.status().is_redirection() && url.as_str().starts_with(stop_prefix) => Ok(url),
        _ => Err(format!(
            "logging in {} did not end in a redirect to {stop_prefix}: {} at {}",
            user.email,
            resp.status(),
            without_query(resp.url())
        )),
    }
}

/// Opens `link`, expects Dex's password form, posts the credentials. Returns the response to the
/// post and the URL of the form.
async fn submit_credentials(http: &Client, link: &str, user: &DexUser) -> Result<(Response, Url), String> {
    let page = http
        .get(link)
        .send()
        .await
        .map_err(|e| format!("opening the authorization link failed: {e}"))?;
    let (form_url, status, html) = read_page(page).await?;
    // The gateway's interstitial first: press Continue (a POST answered by a page that moves on
    // to the provider by itself, as a browser would follow it).
    let (form_url, status, html) = match continue_request(http, &form_url, &html) {
        Some(req) => {
            let pressed = req
                .send()
                .await
                .map_err(|e| format!("pressing Continue on the interstitial failed: {e}"))?;
            let next = provider_url(pressed).await?;
            read_page(
                http.get(next)
                    .send()
                    .await
                    .map_err(|e| format!("following the interstitial to the provider failed: {e}"))?,
            )
            .await?
        }
        None => (form_url, status, html),
    };
    let action = (html.contains("name=\"password\""))
        .then(|| form_action(&html))
        .flatten()
        .ok_or_else(|| {
            format!(
                "the authorization link led to {} ({status}), not to Dex's login form",
                without_query(&form_url)
            )
        })?;
    let post_url = form_url
        .join(&action)
        .map_err(|e| format!("bad form action on {}: {e}", without_query(&form_url)))?;
    let resp = http
        .post(post_url)
        .form(&[
            ("login", user.email.as_str()),
            ("password", user.password.as_str()),
        ])
        .send()
        .await
        .map_err(|e| format!("submitting the login form of {} failed: {e}", user.email))?;
    Ok((resp, form_url))
}

/// The URL, status and text of a page.
async fn read_page(page: Response) -> Result<(Url, reqwest::StatusCode, String), String> {
    let url = page.url().clone();
    let status = page.status();
    let html = page
        .text()
        .await
        .map_err(|e| format!("reading {}: {e}", without_query(&url)))?;
    Ok((url, status, html))
}

/// The POST of the Continue button when `html` (at `url`) is the gateway's interstitial page
/// (`<form id="interstitial">` with its hidden `state`), else `None`.
pub fn continue_request(http: &Client, url: &Url, html: &str) -> Option<reqwest::RequestBuilder> {
    if !html.contains("id=\"interstitial\"") {
        return None;
    }
    let action = url.join(&form_action(html)?).ok()?;
    let state = hidden_value(html, "state")?;
    Some(http.post(action).form(&[("state", state)]))
}

/// Presses Continue on the interstitial that `link` shows: the response to the POST, a page that
/// moves on to the provider ([`provider_url`]). Fails when `link` does not show the interstitial.
pub async fn press_continue(http: &Client, link: &str) -> Result<Response, String> {
    let page = http
        .get(link)
        .send()
        .await
        .map_err(|e| format!("opening {link} failed: {e}"))?;
    let (url, status, html) = read_page(page).await?;
    continue_request(http, &url, &html)
        .ok_or_else(|| {
            format!(
                "{} ({status}) is not the gateway's interstitial",
                without_query(&url)
            )
        })?
        .send()
        .await
        .map_err(|e| format!("pressing Continue failed: {e}"))
}

/// Where the page answering Continue sends the browser (its `<meta http-equiv="refresh">`, also
/// the `#continue` link): the provider's authorization URL.
pub async fn provider_url(pressed: Response) -> Result<Url, String> {
    let (url, status, html) = read_page(pressed).await?;
    let refresh = html
        .find("http-equiv=\"refresh\" content=\"0;url=")
        .map(|at| &html[at + "http-equiv=\"refresh\" content=\"0;url=".len()..])
        .and_then(|rest| rest.find('"').map(|end| html_unescape(&rest[..end])))
        .ok_or_else(|| {
            format!(
                "{} ({status}) does not move on to the provider",
                without_query(&url)
            )
        })?;
    Url::parse(&refresh).map_err(|e| format!("bad provider URL on the Continue page: {e}"))
}

/// The value of the hidden input `name`, HTML entities decoded.
fn hidden_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag = &html[tag_start..at + html[at..].find('>')?];
    let v = &tag[tag.find("value=\"")? + "value=\"".len()..];
    Some(html_unescape(&v[..v.find('"')?]))
}

/// The `action` attribute of the first `<form>`, HTML entities decoded. An empty action means the
/// form's own URL.
fn form_action(html: &str) -> Option<String> {
    let start = html.find("<form")?;
    let tag = &html[start..start + html[start..].find('>')?];
    let Some(at) = tag.find("action=") else {
        return Some(String::new());
    };
    let value = &tag[at + "action=".len()..];
    let (quote, value) = value.split_at(1);
    let raw = match quote {
        "\"" | "'" => &value[..value.find(quote)?],
        _ => return None,
    };
    Some(html_unescape(raw))
}

fn html_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').and_then(|end| {
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.origin() == b.origin()
}

/// A URL without its query, which may carry one-time values, for messages.
fn without_query(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}
