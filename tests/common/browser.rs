//! Real headless Chromium for integration tests: Debian's `chromedriver` on a free loopback port,
//! driven over WebDriver with fantoccini.
//!
//! Nothing outlives the test binary:
//! - chromedriver is a [`Proc`]: SIGKILL when the [`Browser`] is dropped, and `PR_SET_PDEATHSIG`
//!   (set from the launcher's long-lived thread) when the test binary dies, however it dies;
//! - Chromium is chromedriver's child, not ours, and would be orphaned when chromedriver dies. It is
//!   started through a wrapper that execs `setpriv --pdeathsig KILL`, so it gets SIGKILL when
//!   chromedriver dies; its zygote, renderers and crashpad handlers exit with it;
//! - each browser has a fresh directory (profile, `HOME`, `TMPDIR`, chromedriver's log) that the
//!   drop removes; directories of test binaries that were killed outright go at the next start.
//!
//! Install the browser with `scripts/install-deps.sh` (as root): packages `chromium` and
//! `chromium-driver`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentauth_testcluster::{Proc, free_port};
use fantoccini::error::CmdError;
use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// From util-linux (essential on Debian): sets Chromium's parent-death signal.
const SETPRIV: &str = "/usr/bin/setpriv";

/// Flags every Chromium gets. Without the networking ones, Chromium keeps trying to reach Google's
/// services, which this closed network refuses.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
];

/// How long [`Browser::wait_for`] and the element lookups of [`Browser::fill`],
/// [`Browser::click`] and [`Browser::text`] wait for an element to appear.
pub const WAIT: Duration = Duration::from_secs(15);
/// How long chromedriver may take to answer, and Chromium to open a session.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Page loads and scripts: a hung page fails within this instead of WebDriver's 300 s.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// A headless Chromium session. Dropping it kills chromedriver and Chromium; [`Browser::close`]
/// ends the session politely first and reports errors.
pub struct Browser {
    client: Client,
    driver: Driver,
    output: PathBuf,
}

/// The chromedriver process and the browser's directory. Cleans both up on drop.
struct Driver {
    proc: Proc,
    /// Removed when the driver drops, after its processes are gone.
    dir: tempfile::TempDir,
    /// Chromium's browser process, as chromedriver reports it (`goog:processID`).
    chromium_pid: Option<u32>,
}

impl Browser {
    /// Starts chromedriver on a free loopback port, waits until it answers, and opens a session in
    /// a fresh headless Chromium (binary [`CHROMIUM`], flags [`CHROMIUM_FLAGS`], a new
    /// `--user-data-dir`). Screenshots go to `target/test-output/<test binary>/`.
    pub async fn start() -> Result<Browser, String> {
        for (path, package) in [
            (CHROMIUM, "chromium"),
            (CHROMEDRIVER, "chromium-driver"),
            (SETPRIV, "util-linux"),
        ] {
            if !Path::new(path).is_file() {
                return Err(format!(
                    "{path} is missing: install the Debian package {package} (scripts/install-deps.sh does, as root)"
                ));
            }
        }
        // A port picked as free can be taken before chromedriver binds it: try again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once().await {
                Err(e) if attempt < 3 && e.to_lowercase().contains("address already in use") => continue,
                other => return other,
            }
        }
    }

    async fn start_once() -> Result<Browser, String> {
        let dir = agentauth_testcluster::scratch_dir("agentauth-chromium-")?;
        let root = dir.path().to_owned();
        let (home, profile, tmp) = (root.join("home"), root.join("profile"), root.join("tmp"));
        for d in [&home, &profile, &tmp] {
            std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        let wrapper = root.join("chromium");
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\nexec {SETPRIV} --pdeathsig KILL -- {CHROMIUM} \"$@\"\n"),
        )
        .and_then(|()| std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| format!("cannot write {}: {e}", wrapper.display()))?;

        let port = free_port()?;
        let (home_s, tmp_s) = (home.display().to_string(), tmp.display().to_string());
        let (config, cache) = (
            home.join(".config").display().to_string(),
            home.join(".cache").display().to_string(),
        );
        // HOME, XDG dirs and TMPDIR keep Chromium's crash database, caches and scratch directories
        // inside the browser's directory, which the drop removes.
        let proc = Proc::spawn(
            &root,
            "chromedriver",
            Path::new(CHROMEDRIVER),
            &[format!("--port={port}")],
            &[
                ("HOME", &home_s),
                ("XDG_CONFIG_HOME", &config),
                ("XDG_CACHE_HOME", &cache),
                ("TMPDIR", &tmp_s),
            ],
        )?;
        let mut driver = Driver {
            proc,
            dir,
            chromium_pid: None,
        };
        let url = format!("http://127.0.0.1:{port}");
        driver.wait_ready(&url).await?;

        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": wrapper.display().to_string(), "args": args},
        });
        let caps = caps.as_object().cloned().unwrap_or_default();
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps);
        let connect = builder.connect(&url);
        let client = match tokio::time::timeout(START_TIMEOUT, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(format!(
                    "chromedriver could not open a Chromium session: {e}\n--- chromedriver log ---\n{}",
                    driver.proc.log_tail(30)
                ));
            }
            Err(_) => {
                return Err(format!(
                    "Chromium did not open a session within {START_TIMEOUT:?}\n--- chromedriver log ---\n{}",
                    driver.proc.log_tail(30)
                ));
            }
        };
        driver.chromium_pid = client
            .capabilities()
            .and_then(|c| c.get("goog:processID"))
            .and_then(serde_json::Value::as_u64)
            .and_then(|p| u32::try_from(p).ok());
        client
            .update_timeouts(TimeoutConfiguration::new(
                Some(PAGE_TIMEOUT),
                Some(PAGE_TIMEOUT),
                Some(Duration::ZERO),
            ))
            .await
            .map_err(|e| format!("setting WebDriver timeouts: {e}"))?;
        Ok(Browser {
            client,
            driver,
            output: target_dir().join("test-output").join(binary_name()),
        })
    }

    /// Screenshots go to `target/test-output/<dir>/` instead of the test binary's name.
    pub fn set_output_dir(&mut self, dir: &str) {
        self.output = target_dir().join("test-output").join(dir);
    }

    /// Where [`Browser::screenshot`] writes.
    pub fn output_dir(&self) -> &Path {
        &self.output
    }

    /// The fantoccini client, for what the methods here do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Loads `url` and waits for the page load (following redirects).
    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.client
            .goto(url)
            .await
            .map_err(|e| format!("opening {} in Chromium: {e}", redact(url)))
    }

    /// Replaces the value of the input matching `css` (waiting up to [`WAIT`] for it) by `value`.
    pub async fn fill(&self, css: &str, value: &str) -> Result<(), String> {
        let el = self.find(css).await?;
        el.clear().await.map_err(|e| format!("clearing {css:?}: {e}"))?;
        el.send_keys(value)
            .await
            .map_err(|e| format!("typing into {css:?}: {e}"))
    }

    /// Clicks the element matching `css` (waiting up to [`WAIT`] for it). A click that submits a
    /// form returns once the next page has loaded.
    pub async fn click(&self, css: &str) -> Result<(), String> {
        let el = self.find(css).await?;
        el.click().await.map_err(|e| format!("clicking {css:?}: {e}"))
    }

    /// The rendered text of the element matching `css` (waiting up to [`WAIT`] for it).
    pub async fn text(&self, css: &str) -> Result<String, String> {
        let el = self.find(css).await?;
        el.text()
            .await
            .map_err(|e| format!("reading the text of {css:?}: {e}"))
    }

    /// The current page's HTML, as Chromium serializes its DOM.
    pub async fn page_source(&self) -> Result<String, String> {
        self.client
            .source()
            .await
            .map_err(|e| format!("reading the page source: {e}"))
    }

    /// The URL of the current page.
    pub async fn current_url(&self) -> Result<String, String> {
        self.client
            .current_url()
            .await
            .map(String::from)
            .map_err(|e| format!("reading the current URL: {e}"))
    }

    /// Polls until an element matches `css`, for at most [`WAIT`].
    pub async fn wait_for(&self, css: &str) -> Result<(), String> {
        self.find(css).await.map(drop)
    }

    /// Polls until the element matching `css` has a text containing `needle`, for at most
    /// [`WAIT`]; returns that text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> Result<String, String> {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        loop {
            // Errors (no such element yet, stale element during a navigation) mean "not yet".
            if let Ok(el) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = el.text().await
            {
                if text.contains(needle) {
                    return Ok(text);
                }
                last = Some(text);
            }
            if Instant::now() >= deadline {
                let seen = last.map_or_else(|| "no such element".to_owned(), |t| format!("text {t:?}"));
                return Err(format!(
                    "{css:?} did not show {needle:?} within {WAIT:?} on {} ({seen})",
                    self.where_now().await
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await; // poll interval, not synchronisation
        }
    }

    /// Writes a PNG of the viewport to `<output dir>/<name>.png` (creating the directories) and
    /// returns its path.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf, String> {
        let png = self
            .client
            .screenshot()
            .await
            .map_err(|e| format!("taking screenshot {name:?}: {e}"))?;
        std::fs::create_dir_all(&self.output)
            .map_err(|e| format!("cannot create {}: {e}", self.output.display()))?;
        let path = self.output.join(format!("{name}.png"));
        std::fs::write(&path, png).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("screenshot: {}", path.display());
        Ok(path)
    }

    /// Ends the WebDriver session (chromedriver quits Chromium), then stops chromedriver and
    /// removes the browser's directory.
    pub async fn close(self) -> Result<(), String> {
        let Browser { client, driver, .. } = self;
        let closed = client
            .close()
            .await
            .map_err(|e| format!("closing the Chromium session: {e}"));
        drop(driver);
        closed
    }

    /// Polls for the element matching `css`, for at most [`WAIT`].
    async fn find(&self, css: &str) -> Result<fantoccini::elements::Element, String> {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(el) => Ok(el),
            Err(CmdError::WaitTimeout) => Err(format!(
                "no element matches {css:?} within {WAIT:?} on {}",
                self.where_now().await
            )),
            Err(e) => Err(format!("looking for {css:?} on {}: {e}", self.where_now().await)),
        }
    }

    /// The current URL (without its query) and title, for error messages.
    async fn where_now(&self) -> String {
        let url = self
            .client
            .current_url()
            .await
            .map_or_else(|e| format!("<unknown page: {e}>"), |u| redact(u.as_str()));
        let title = self.client.title().await.unwrap_or_default();
        format!("{url} (title {title:?})")
    }
}

impl Driver {
    /// Polls chromedriver's `/status` until it reports ready.
    async fn wait_ready(&mut self, url: &str) -> Result<(), String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        let mut wait = Duration::from_millis(20);
        loop {
            if let Some(status) = self.proc.exited() {
                return Err(format!(
                    "chromedriver exited ({status}) while starting:\n{}",
                    self.proc.log_tail(20)
                ));
            }
            let ready = match http.get(format!("{url}/status")).send().await {
                Ok(r) => r
                    .json::<serde_json::Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "chromedriver did not answer {url}/status within {START_TIMEOUT:?}:\n{}",
                    self.proc.log_tail(20)
                ));
            }
            tokio::time::sleep(wait).await; // poll interval, not synchronisation
            wait = (wait * 2).min(Duration::from_millis(200));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Chromium gets SIGKILL from its parent-death signal once chromedriver is gone.
        self.proc.kill();
        if let Some(pid) = self.chromium_pid {
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20)); // poll interval
            }
            // Should not happen; kill it ourselves if it is still ours (its command line names our
            // profile directory, so a reused pid is left alone).
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*self.dir.path().to_string_lossy()));
            if alive(pid) && ours {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the parenthesized command name.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// `target/` of this workspace (or `$CARGO_TARGET_DIR`).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    )
}

/// The test binary's name without cargo's hash suffix: `browser` for `browser-0123456789abcdef`.
fn binary_name() -> String {
    let stem = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "tests".to_owned());
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name.to_owned()
        }
        _ => stem,
    }
}

/// A URL without its query and fragment, which may carry one-time codes, for messages.
fn redact(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_owned()
}
