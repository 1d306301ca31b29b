//! A SIGKILL of the process that runs a node, with a pod running on it, leaves nothing of that node
//! on the machine: no process, link, cgroup or directory of it, and the machine's iptables rules,
//! network namespaces, kernel settings and well-known runtime paths as they were.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agentauth_testcluster::cli::Tool;

use crate::common::eventually;
use crate::host;

const POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: sleeper, namespace: default}
spec:
  automountServiceAccountToken: false
  containers: [{name: pause, image: localhost/agentauth/pause:1, imagePullPolicy: Never}]
";

#[tokio::test]
async fn a_killed_test_process_leaves_nothing_of_its_node() {
    let bin = build_testcluster();
    let machine_before = machine_wide(&host::snapshot(0, Path::new("/nonexistent")));
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = ChildNode::start(&bin, log.path());
    let (pid, dir) = (child.pid(), child.dir.clone());
    let kubectl = Tool::kubectl(&dir.join("kubeconfig")).unwrap();
    kubectl.run(&["apply", "-f", "-"], Some(POD)).unwrap().expect_ok();
    kubectl
        .run(
            &["wait", "--for=condition=Ready", "pod/sleeper", "--timeout=120s"],
            None,
        )
        .unwrap()
        .expect_ok();
    let during = host::snapshot(pid, &dir);
    for kind in ["link ", "process ", "cgroup ", "directory "] {
        assert!(
            during.iter().any(|l| l.starts_with(kind)),
            "a running node with a pod shows its {kind}: {during:?}"
        );
    }
    assert!(
        during
            .iter()
            .any(|l| l.starts_with("process ") && l.contains("containerd-shim")),
        "the pod's shim runs: {during:?}"
    );
    assert_eq!(
        machine_wide(&during),
        machine_before,
        "a running node changes nothing machine-wide"
    );

    child.kill();
    let left = eventually(
        Duration::from_secs(60),
        "the node gone with its process",
        || async {
            let s = host::snapshot(pid, &dir);
            (machine_wide(&s) == s).then_some(s)
        },
    )
    .await;
    assert_eq!(
        left, machine_before,
        "iptables, network namespaces, sysctls and paths as before"
    );
}

/// The entries of a snapshot that belong to the machine, not to one node.
pub fn machine_wide(s: &BTreeSet<String>) -> BTreeSet<String> {
    s.iter()
        .filter(|l| {
            ["iptables", "ip6tables", "netns ", "sysctl ", "path "]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .cloned()
        .collect()
}

/// `testcluster --node` as a child process, killed (SIGKILL) and reaped on drop so a failing test
/// leaves no cluster running.
struct ChildNode {
    child: Child,
    dir: PathBuf,
}

impl ChildNode {
    fn start(bin: &Path, log: &Path) -> ChildNode {
        let mut child = Command::new(bin)
            .arg("--node")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads to the end: a closed pipe would kill the child at its next line of output.
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(out).lines();
            let first = lines.next().and_then(Result::ok).unwrap_or_default();
            let _ = tx.send(first);
            lines.for_each(drop);
        });
        let mut node = ChildNode {
            child,
            dir: PathBuf::new(),
        };
        let first = rx.recv_timeout(Duration::from_secs(300)).unwrap_or_default();
        let Some(kubeconfig) = first.trim().strip_prefix("export KUBECONFIG=") else {
            let why = std::fs::read_to_string(log).unwrap_or_default();
            panic!("testcluster --node did not start: {first:?}\n{why}");
        };
        node.dir = Path::new(kubeconfig).parent().unwrap().to_owned();
        node
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `target/debug/testcluster`, built if needed (the workspace's test build does not link it).
fn build_testcluster() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--locked",
            "-p",
            "agentauth-testcluster",
            "--bin",
            "testcluster",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "cargo build testcluster");
    Path::new(env!("CARGO_BIN_EXE_agent-auth-operator")).with_file_name("testcluster")
}
