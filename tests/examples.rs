//! Every YAML file in examples/ is accepted by the real API server (server-side dry run), so the
//! docs never show YAML that the CRDs or Kubernetes would reject.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::setup;

#[tokio::test]
async fn examples_pass_server_side_validation() {
    let _env = setup("examples").await;
    let cluster = common::cluster().unwrap();
    let kubectl = &agentauth_testcluster::binaries().unwrap().kubectl;
    for ns in ["agents", "demo", "agent-auth-system"] {
        let _ = Command::new(kubectl)
            .args(["create", "namespace", ns])
            .env("KUBECONFIG", cluster.kubeconfig_path())
            .output();
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let yaml = std::fs::read_to_string(&path)
            .unwrap()
            .replace("DEX_AUTHORIZATION_URL", "https://dex.test/auth")
            .replace("DEX_TOKEN_URL", "https://dex.test/token");
        let mut child = Command::new(kubectl)
            .args(["apply", "--dry-run=server", "-f", "-"])
            .env("KUBECONFIG", cluster.kubeconfig_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 3, "examples found: {checked}");
}
