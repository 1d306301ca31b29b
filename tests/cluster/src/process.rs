//! Child processes of the control plane, the binary cache, ports, and process-lifetime plumbing.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// Paths of the control-plane binaries.
pub struct Binaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kubectl: PathBuf,
}

/// Runs `build.sh` (a no-op when the version-keyed cache is filled) and returns the binaries.
pub fn binaries() -> Result<Binaries, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["k8s", "etcd"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): the control plane cannot be built",
            script.display(),
            out.status
        ));
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let mut dirs = line
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .split(':')
        .map(PathBuf::from);
    let (k8s, etcd) = (dirs.next().unwrap_or_default(), dirs.next().unwrap_or_default());
    let bins = Binaries {
        etcd: etcd.join("etcd"),
        kube_apiserver: k8s.join("kube-apiserver"),
        kube_controller_manager: k8s.join("kube-controller-manager"),
        kubectl: k8s.join("kubectl"),
    };
    for b in [
        &bins.etcd,
        &bins.kube_apiserver,
        &bins.kube_controller_manager,
        &bins.kubectl,
    ] {
        if !b.is_file() {
            return Err(format!("{} is missing after build.sh", b.display()));
        }
    }
    Ok(bins)
}

/// One control-plane process with its log file.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `bin` with its output in `<dir>/<name>.log`. The child gets SIGKILL when the thread
    /// that spawned it ends, so a killed test run leaves no process behind.
    pub fn spawn(dir: &Path, name: &str, bin: &Path, args: &[String]) -> Result<Proc, String> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log,
        })
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Removes cluster directories whose owning process no longer exists (it was killed outright).
pub fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("agentauth-cluster-")) else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else { continue };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Runs `start` on a thread that never ends, so that the parent-death signal of the children it
/// spawns fires only when the whole process ends.
pub fn start_on_keeper_thread<T: Send + 'static>(start: fn() -> Result<T, String>) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("testcluster-keeper".into())
        .spawn(move || {
            let _ = tx.send(start());
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| format!("cannot start keeper thread: {e}"))?;
    rx.recv()
        .map_err(|_| "control plane start-up thread died".to_owned())?
}

/// Registers `hook` to run when the process exits normally (the test harness calls `exit`).
pub fn at_exit(hook: extern "C" fn()) {
    // SAFETY: registering a plain function pointer; it is called once, at exit.
    unsafe {
        libc::atexit(hook);
    }
}

/// Runs a future to completion on a private single-threaded runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(f),
        Err(e) => std::panic::panic_any(format!("cannot build a Tokio runtime: {e}")),
    }
}
