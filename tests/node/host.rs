//! The machine's side of the node test: how the runtime really runs the operator's processes, and
//! what a node leaves on the machine.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// How one process runs, read from the host's `/proc`.
#[derive(Debug)]
pub struct Confinement {
    /// Real, effective, saved and filesystem user ids.
    pub uids: String,
    pub no_new_privs: bool,
    /// 2: a seccomp filter is in force.
    pub seccomp_mode: u8,
    pub effective_caps: String,
    pub root_read_only: bool,
}

/// Every process on the machine whose command line is `argv0 arg1 ...` exactly, of a pod in
/// `namespace` (its environment has `POD_NAMESPACE=namespace`, which the chart sets).
pub fn processes(argv: &[&str], namespace: &str) -> Vec<Confinement> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    let ns = format!("POD_NAMESPACE={namespace}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .filter(|pid| has_env(*pid, &ns))
        .filter_map(confinement)
        .collect()
}

fn confinement(pid: u32) -> Option<Confinement> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    // mountinfo: id parent major:minor root mount-point options ...
    let root_read_only = mountinfo.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(4) == Some(&"/") && f.get(5).is_some_and(|o| o.split(',').any(|x| x == "ro"))
    });
    Some(Confinement {
        uids: field("Uid:").split_whitespace().collect::<Vec<_>>().join(" "),
        no_new_privs: field("NoNewPrivs:") == "1",
        seccomp_mode: field("Seccomp:").parse().unwrap_or(0),
        effective_caps: field("CapEff:"),
        root_read_only,
    })
}

/// What the node of process `pid` (cluster directory `cluster_dir`) could leave on the machine, as
/// lines prefixed with their kind so that two snapshots diff cleanly: the machine's network
/// namespaces, iptables/ip6tables rules and chains, the sysctls a kubelet or kube-proxy sets, the
/// default runtime paths that exist, and the links, mounts, cgroups, processes and directory that
/// are that node's. (The sandbox's own mounts never show in the machine's `/proc/mounts`; a mount
/// listed here would be one that escaped it.)
pub fn snapshot(pid: u32, cluster_dir: &Path) -> BTreeSet<String> {
    let mut s = BTreeSet::new();
    let dir = cluster_dir.display().to_string();
    for l in out("ip", &["netns", "list"]).lines() {
        s.insert(format!("netns {l}"));
    }
    for l in out("ip", &["-o", "link"]).lines() {
        if let Some(name) = l.split(": ").nth(1) {
            let name = name.split('@').next().unwrap_or(name);
            if name.starts_with(&format!("aa{pid}h")) {
                s.insert(format!("link {name}"));
            }
        }
    }
    for l in std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
    {
        if let Some(m) = l.split_whitespace().nth(1).filter(|m| m.contains(&dir)) {
            s.insert(format!("mount {m}"));
        }
    }
    for tool in ["iptables-save", "ip6tables-save"] {
        for l in out(tool, &[]).lines() {
            if l.starts_with("-A") || l.starts_with(':') {
                s.insert(format!("{tool} {}", l.split(" [").next().unwrap_or(l)));
            }
        }
    }
    if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in hierarchies.flatten() {
            for c in std::fs::read_dir(h.path()).into_iter().flatten().flatten() {
                let name = c.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("agentauth-node-{pid}-")) {
                    s.insert(format!("cgroup {}", c.path().display()));
                }
            }
        }
    }
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(&dir) {
            s.insert(format!(
                "process {} {}",
                e.file_name().to_string_lossy(),
                String::from_utf8_lossy(&cmd)
            ));
        }
    }
    if cluster_dir.exists() {
        s.insert(format!("directory {dir}"));
    }
    for key in agentauth_testcluster::node::KERNEL_TUNABLES {
        let v = std::fs::read_to_string(format!("/proc/sys/{key}")).unwrap_or_default();
        s.insert(format!("sysctl {key}={}", v.trim()));
    }
    for key in ["net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet"] {
        let v = std::fs::read_to_string(format!("/proc/sys/{key}")).unwrap_or_default();
        s.insert(format!("sysctl {key}={}", v.trim()));
    }
    // Where a kubelet, containerd or CNI plugin writes when a setting is missed.
    for p in RUNTIME_PATHS {
        if Path::new(p).exists() {
            s.insert(format!("path {p}"));
        }
    }
    s
}

const RUNTIME_PATHS: [&str; 10] = [
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/lib/containerd",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/run/netns",
    "/etc/cni",
    "/opt/cni",
    "/etc/kubernetes",
];

fn out(bin: &str, args: &[&str]) -> String {
    Command::new(bin)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Whether a process of pod `pod` still runs on the machine (its environment has `POD_NAME=pod`,
/// which the chart sets from the pod's name).
pub fn pod_process_alive(pod: &str) -> bool {
    let want = format!("POD_NAME={pod}");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| has_env(pid, &want))
}

fn has_env(pid: u32, entry: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == entry.as_bytes()))
}
