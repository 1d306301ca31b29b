//! What a node takes from the machine, and gives back: its cgroup root in every hierarchy, its
//! link index (under a machine-wide lock), the watchdog that cleans up after a killed test process,
//! and the sweep of roots left by dead processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::CGROUP_PREFIX;

/// After a `kill -9` of the test process the kernel takes the node's processes, namespaces and
/// mounts; what is left on disk is its cgroup root and the cluster directory. This detached shell
/// (it must outlive us) waits for our process to end, then removes both, retrying while the
/// kernel is still reaping. After a normal stop it finds nothing to do and exits.
pub(super) fn watchdog(cluster_dir: &Path, cgroup_root: &str) -> Result<(), String> {
    const SCRIPT: &str = r#"[ -n "$1" ] && [ -n "$2" ] && [ -n "$3" ] || exit 1
while kill -0 "$1" 2>/dev/null; do sleep 0.5; done
for _ in $(seq 60); do
  left=
  for c in /sys/fs/cgroup/*/"$2"; do
    [ -d "$c" ] && { find "$c" -depth -type d -exec rmdir {} + 2>/dev/null; [ -d "$c" ] && left=1; }
  done
  [ -z "$left" ] && break
  sleep 0.5
done
rm -rf "$3""#;
    Command::new("setsid")
        .args(["sh", "-c", SCRIPT, "agentauth-node-watchdog"])
        .arg(std::process::id().to_string())
        .arg(cgroup_root.trim_start_matches('/'))
        .arg(cluster_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
        .map_err(|e| format!("cannot start the node's watchdog: {e}"))
}

/// A process-wide lock across every test process on the machine: an abstract Unix socket name,
/// which the kernel frees when its holder exits, so a killed holder leaves no stale lock file.
pub(super) fn link_lock() -> Result<std::os::unix::net::UnixListener, String> {
    use std::os::linux::net::SocketAddrExt;
    let name = std::os::unix::net::SocketAddr::from_abstract_name(b"agentauth-node-link")
        .map_err(|e| format!("lock name: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match std::os::unix::net::UnixListener::bind_addr(&name) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50)); // poll interval: another node is wiring
            }
            Err(e) => return Err(format!("cannot take the node link lock: {e}")),
        }
    }
}

/// The first link index whose host address nobody on this machine holds.
pub(super) fn free_link() -> Result<u32, String> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    let addrs = String::from_utf8_lossy(&out.stdout);
    (0..64)
        .find(|k| !addrs.contains(&format!(" 198.18.255.{}/", 4 * k + 1)))
        .ok_or_else(|| "no free node link in 198.18.255.0/24".to_owned())
}

pub(super) fn run(bin: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {bin}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{bin} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The cgroup hierarchies: every mounted v1 controller and, when `unified`, also the (hybrid) v2
/// one, where runc makes cgroups too, though the kubelet does not ask for its root there.
fn hierarchies(unified: bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| unified || p.file_name().is_some_and(|n| n != "unified"))
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

/// The kubelet does not create its cgroup root; a new cpuset cgroup starts with no CPUs or memory
/// nodes, so those are copied from the root.
pub(super) fn make_cgroup_root(root: &str) -> Result<(), String> {
    for h in hierarchies(false) {
        let dir = h.join(root.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        if h.ends_with("cpuset") {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let v = std::fs::read_to_string(h.join(f)).map_err(|e| format!("cannot read {f}: {e}"))?;
                std::fs::write(dir.join(f), v).map_err(|e| format!("cannot write {f}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// Removes the cgroup root in every hierarchy, deepest first; `true` once none is left.
pub(super) fn remove_cgroup_root(root: &str) -> bool {
    let mut left = false;
    for h in hierarchies(true) {
        let dir = h.join(root.trim_start_matches('/'));
        if dir.exists() {
            remove_tree(&dir);
            left |= dir.exists();
        }
    }
    !left
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Removes the (empty) cgroup roots of nodes whose test process was killed.
pub fn sweep_stale_cgroups() {
    for h in hierarchies(true) {
        let Ok(entries) = std::fs::read_dir(&h) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(CGROUP_PREFIX))
                .and_then(|rest| rest.split('-').next())
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if !crate::process::alive(pid) {
                remove_tree(&e.path());
            }
        }
    }
}
