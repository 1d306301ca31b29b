//! The operator image of `make image` (scripts/image.sh) against the chart, without building it:
//! - the OCI config image.sh reads from the Dockerfile's final stage runs the chart's Deployment the
//!   way the chart expects (numeric user of the security context, `args: [run, ...]` after a bare
//!   ENTRYPOINT, the gateway and admin ports);
//! - `scripts/image.sh rootfs` puts the binaries where the chart and examples run them, and the
//!   OCI-archive writer gives the same bytes twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The first `port:` under the top-level `section:` of values.yaml.
fn values_port(values: &str, section: &str) -> u16 {
    let mut lines = values.lines().skip_while(|l| *l != format!("{section}:")).skip(1);
    let line = lines.find(|l| l.trim_start().starts_with("port:")).unwrap();
    line.trim_start()
        .trim_start_matches("port:")
        .split('#')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn image_config_fits_the_chart() {
    let cfg: Value =
        serde_json::from_slice(&run(Command::new(repo("scripts/image.sh")).arg("config"))).unwrap();
    let values = std::fs::read_to_string(repo("charts/agent-auth-operator/values.yaml")).unwrap();
    let deployment =
        std::fs::read_to_string(repo("charts/agent-auth-operator/templates/deployment.yaml")).unwrap();

    assert_eq!(cfg["User"], "65532:65532");
    assert!(values.contains("runAsUser: 65532") && values.contains("runAsGroup: 65532"));
    // The Deployment sets no command, and its args replace CMD.
    assert!(!deployment.contains("command:"));
    assert!(deployment.contains("args:\n            - run\n"));
    assert_eq!(cfg["Entrypoint"], json!(["/usr/local/bin/agent-auth-operator"]));
    assert_eq!(cfg["Cmd"], json!(["run"]));
    for section in ["gateway", "admin"] {
        let port = format!("{}/tcp", values_port(&values, section));
        assert_eq!(
            cfg["ExposedPorts"][&port],
            json!({}),
            "{section} port {port} not exposed"
        );
    }
    assert_eq!(cfg["Env"], json!(["PATH=/usr/local/bin"]));
    assert_eq!(
        cfg["Labels"]["org.opencontainers.image.title"],
        "agent-auth-operator"
    );
}

#[test]
fn rootfs_and_archive_are_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    // Stand-ins for the two binaries: any dynamically linked executable.
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let ls = String::from_utf8(run(Command::new("bash").args(["-c", "command -v ls"]))).unwrap();
    for name in ["agent-auth-operator", "kubectl-agentauth"] {
        std::fs::copy(ls.trim(), bin.join(name)).unwrap();
    }
    let root = tmp.path().join("root");
    run(Command::new(repo("scripts/image.sh"))
        .arg("rootfs")
        .arg(&root)
        .arg(&bin));
    for path in [
        "usr/local/bin/agent-auth-operator",
        "usr/local/bin/kubectl-agentauth",
        "etc/passwd",
        "tmp",
    ] {
        assert!(root.join(path).exists(), "{path} missing from the rootfs");
    }
    let mut archives = Vec::new();
    for out in ["a.tar", "b.tar"] {
        let out = tmp.path().join(out);
        run(Command::new(repo("scripts/oci-archive.sh"))
            .arg("write")
            .arg(&root)
            .arg(&out)
            .args(["localhost/test:1", r#"{"User":"65532:65532"}"#]));
        archives.push(std::fs::read(&out).unwrap());
    }
    assert!(archives[0] == archives[1], "same rootfs, different archives");
    let list = String::from_utf8(run(Command::new("tar").arg("-tf").arg(tmp.path().join("a.tar")))).unwrap();
    for entry in ["oci-layout", "index.json", "manifest.json", "blobs/sha256/"] {
        assert!(
            list.lines().any(|l| l == entry),
            "{entry} missing from the archive: {list}"
        );
    }
}
