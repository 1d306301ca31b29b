//! `kubectl` and `helm` as subprocesses: one runner for every test and the demo, so each gets the
//! same stdin handling (written from a thread: a child filling its stdout pipe never deadlocks
//! us) and the same description of a failed run.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A command-line tool with its environment; [`Tool::run`] starts it once per call.
#[derive(Clone, Debug)]
pub struct Tool {
    bin: PathBuf,
    leading: Vec<String>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
}

/// How a finished run ended and what it printed.
#[derive(Debug)]
pub struct Output {
    /// Exit status code (`None` when a signal ended it).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The command line, for messages.
    pub what: String,
}

impl Tool {
    /// `bin` with nothing set.
    pub fn new(bin: impl Into<PathBuf>) -> Tool {
        Tool {
            bin: bin.into(),
            leading: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
        }
    }

    /// The test control plane's `kubectl` (built by `build.sh`) with `KUBECONFIG=kubeconfig`.
    pub fn kubectl(kubeconfig: &Path) -> Result<Tool, String> {
        Ok(Tool::new(&crate::binaries()?.kubectl).env("KUBECONFIG", kubeconfig))
    }

    /// The `helm` built by `build.sh`, with `KUBECONFIG=kubeconfig`.
    pub fn helm(kubeconfig: &Path) -> Result<Tool, String> {
        Ok(Tool::new(&crate::binaries()?.helm).env("KUBECONFIG", kubeconfig))
    }

    /// An argument put before those of every run (e.g. `--request-timeout=30s`).
    pub fn leading_arg(mut self, arg: impl Into<String>) -> Tool {
        self.leading.push(arg.into());
        self
    }

    /// Sets an environment variable for every run.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Tool {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Removes an inherited environment variable for every run.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Tool {
        self.env_remove.push(key.as_ref().to_owned());
        self
    }

    /// Runs the tool with `args` and, if given, `stdin` as its standard input (else none), and
    /// waits for it. An error only when it cannot be started.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<Output, String> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.leading).args(args);
        for key in &self.env_remove {
            cmd.env_remove(key);
        }
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let name = self.bin.file_name().unwrap_or_default().to_string_lossy();
        let all: Vec<&str> = self
            .leading
            .iter()
            .map(String::as_str)
            .chain(args.iter().copied())
            .collect();
        let what = format!("{name} {}", all.join(" "));
        let mut child = cmd.spawn().map_err(|e| format!("cannot run {what}: {e}"))?;
        let writer = match (stdin, child.stdin.take()) {
            (Some(input), Some(mut pipe)) => {
                let input = input.to_owned();
                Some(std::thread::spawn(move || {
                    let _ = pipe.write_all(input.as_bytes());
                }))
            }
            _ => None,
        };
        let out = child
            .wait_with_output()
            .map_err(|e| format!("{what}: cannot wait: {e}"))?;
        if let Some(w) = writer {
            let _ = w.join();
        }
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            what,
        })
    }
}

impl Output {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout then stderr, for messages and searches.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// The stdout of a successful run, else the command line and stderr.
    pub fn into_result(self) -> Result<String, String> {
        if self.success() {
            Ok(self.stdout)
        } else {
            Err(format!("{}: {}", self.what, self.stderr))
        }
    }

    /// The stdout of a successful run; panics with both streams otherwise (a test assertion).
    pub fn expect_ok(self) -> String {
        assert!(
            self.success(),
            "{} failed:\n{}\n{}",
            self.what,
            self.stderr,
            self.stdout
        );
        self.stdout
    }

    /// stderr and stdout of a failed run; panics if it succeeded (a test assertion).
    pub fn expect_failure(self) -> String {
        assert!(
            !self.success(),
            "{} succeeded, expected a failure:\n{}",
            self.what,
            self.stdout
        );
        format!("{}\n{}", self.stderr, self.stdout)
    }
}
