//! Child processes of the control plane, the binary cache, ports, and process-lifetime plumbing.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};

/// Paths of the control-plane binaries.
pub struct Binaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kubectl: PathBuf,
    pub dex: PathBuf,
    /// Test helper that revokes a user's refresh tokens through Dex's gRPC API (`tests/dex/revoke`).
    pub dexrevoke: PathBuf,
    /// Helm, for the chart tests (`tests/chart.rs`).
    pub helm: PathBuf,
}

/// Runs `build.sh` once per process (a no-op when the version-keyed cache is filled) and returns
/// the binaries.
pub fn binaries() -> Result<&'static Binaries, String> {
    static BINS: OnceLock<Result<Binaries, String>> = OnceLock::new();
    BINS.get_or_init(build).as_ref().map_err(Clone::clone)
}

fn build() -> Result<Binaries, String> {
    let dirs = build_script("build.sh", &["k8s", "etcd", "dex", "dexrevoke", "helm"])?;
    let [k8s, etcd, dex, dexrevoke, helm] = dirs.as_slice() else {
        return Err(format!("build.sh printed {dirs:?}, not five directories"));
    };
    let bins = Binaries {
        etcd: etcd.join("etcd"),
        kube_apiserver: k8s.join("kube-apiserver"),
        kube_controller_manager: k8s.join("kube-controller-manager"),
        kubectl: k8s.join("kubectl"),
        dex: dex.join("dex"),
        dexrevoke: dexrevoke.join("dexrevoke"),
        helm: helm.join("helm"),
    };
    for b in [
        &bins.etcd,
        &bins.kube_apiserver,
        &bins.kube_controller_manager,
        &bins.kubectl,
        &bins.dex,
        &bins.dexrevoke,
        &bins.helm,
    ] {
        if !b.is_file() {
            return Err(format!("{} is missing after build.sh", b.display()));
        }
    }
    Ok(bins)
}

/// Runs a build script of this crate (`build.sh`, `build-node.sh`) with `args`, its progress on
/// our stderr, and returns the directories its last line names (`dir:dir:...`).
pub(crate) fn build_script(name: &str, args: &[&str]) -> Result<Vec<PathBuf>, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): the test cluster cannot be built",
            script.display(),
            out.status
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.trim().lines().last().unwrap_or_default();
    Ok(last.split(':').map(PathBuf::from).collect())
}

/// A child process with its log file. Killed (and reaped) on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Proc {
    /// Starts `bin` with its output in `<dir>/<name>.log`. The child gets SIGKILL when this process
    /// dies, however it dies, so a killed test run leaves no process behind.
    pub fn spawn(
        dir: &Path,
        name: &str,
        bin: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<Proc, String> {
        let log = dir.join(format!("{name}.log"));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let child = Self::launch(&log, bin, args, &env, false)?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log,
            bin: bin.to_owned(),
            args: args.to_vec(),
            env,
        })
    }

    /// Kills the process and starts it again with the same command line, appending to its log.
    pub fn respawn(&mut self) -> Result<(), String> {
        self.kill();
        self.child = Self::launch(&self.log, &self.bin, &self.args, &self.env, true)?;
        Ok(())
    }

    fn launch(
        log: &Path,
        bin: &Path,
        args: &[String],
        env: &[(String, String)],
        append: bool,
    ) -> Result<Child, String> {
        let out = File::options()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        spawn_from_keeper(cmd).map_err(|e| format!("cannot start {}: {e}", bin.display()))
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Process id, for tests that signal it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGKILL and reaps the process. Idempotent.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Path of the combined stdout/stderr log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

type SpawnRequest = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);

/// Spawns on a thread that lives as long as the process: the parent-death signal fires when the
/// spawning *thread* ends, so children of short-lived test threads would otherwise die early.
fn spawn_from_keeper(cmd: Command) -> std::io::Result<Child> {
    static KEEPER: OnceLock<Mutex<std::sync::mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
        let _ = std::thread::Builder::new()
            .name("testcluster-keeper".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                loop {
                    std::thread::park();
                }
            });
        Mutex::new(tx)
    });
    let (tx, rx) = std::sync::mpsc::channel();
    keeper
        .lock()
        .map_err(|_| std::io::Error::other("keeper lock poisoned"))?
        .send((cmd, tx))
        .map_err(|_| std::io::Error::other("keeper thread gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("keeper thread gone"))?
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// A fresh directory `{temp}/{prefix}{pid}-{random}` for one process a test starts, removed when
/// the returned guard drops. Made after removing those left by test binaries that were killed
/// before their cleanup ran: the pid in the name is what [`sweep_stale_dirs`] checks.
pub fn scratch_dir(prefix: &str) -> Result<tempfile::TempDir, String> {
    sweep_stale_dirs(prefix);
    tempfile::Builder::new()
        .prefix(&format!("{prefix}{}-", std::process::id()))
        .tempdir()
        .map_err(|e| format!("cannot create a {prefix} directory: {e}"))
}

/// Removes temporary directories named `{prefix}{pid}` or `{prefix}{pid}-...` whose process no
/// longer exists (it was killed before its cleanup ran).
pub fn sweep_stale_dirs(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if !alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether a process with this id exists.
pub fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Registers `hook` to run when the process exits normally (the test harness calls `exit`).
pub fn at_exit(hook: extern "C" fn()) {
    // SAFETY: registering a plain function pointer; it is called once, at exit.
    unsafe {
        libc::atexit(hook);
    }
}

/// Runs a future to completion on a private single-threaded runtime, on a thread of its own so
/// that it also works when called from inside another runtime (a `#[tokio::test]`).
pub fn block_on<F>(f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        let worker =
            scope.spawn(
                || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt.block_on(f),
                    Err(e) => std::panic::panic_any(format!("cannot build a Tokio runtime: {e}")),
                },
            );
        match worker.join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
