//! The product on one machine: a real control plane, Dex as the OAuth provider, the operator
//! binary, and sample accounts whose authorization links are printed. `make demo` runs it through
//! the `demo` binary until Ctrl-C; `tests/demo.rs` runs it non-interactively.
//!
//! Non-interactive, it plays the user for alice (signs in at Dex), waits with `kubectl wait` until
//! alice and team are ACTIVE, shows them and alice's Secret's keys, and returns.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cli::Tool;
use crate::dex::{self, Dex, DexOptions};
use crate::{Proc, binaries, block_on, free_port, shared, wait_for_signal};

/// Runs kubectl with optional standard input and returns its output.
type Kubectl<'a> = &'a dyn Fn(&[&str], Option<&str>) -> Result<String, String>;

/// Signs in as alice, waits for ACTIVE, and shows the result.
fn play_alice(dex: &Dex, links: &[String], kubectl: Kubectl<'_>) -> Result<(), String> {
    let link = links
        .iter()
        .find_map(|l| l.strip_prefix("alice "))
        .ok_or("no link for alice")?
        .to_owned();
    println!("\n[non-interactive] signing in at Dex as user0@example.com through alice's link");
    let user = dex.user(0);
    let status = block_on(async move {
        let page = dex::login(&dex::browser(), &link, &user).await?;
        Ok::<_, String>(page.status())
    })?;
    if !status.is_success() {
        return Err(format!("the gateway answered {status} at the end of the login"));
    }
    kubectl(
        &[
            "wait",
            "-n",
            "demo",
            "connectedaccount/alice",
            "--for=jsonpath={.status.state}=ACTIVE",
            "--timeout=60s",
        ],
        None,
    )?;
    // The team key from a Secret needs no user at all.
    kubectl(
        &[
            "wait",
            "-n",
            "demo",
            "connectedaccount/team",
            "--for=jsonpath={.status.state}=ACTIVE",
            "--timeout=60s",
        ],
        None,
    )?;
    println!("{}", kubectl(&["get", "agentauth", "-n", "demo"], None)?);
    let keys = kubectl(
        &[
            "get",
            "secret",
            "-n",
            "demo",
            "alice-credentials",
            "-o",
            "go-template={{range $k, $v := .data}}{{$k}} {{end}}",
        ],
        None,
    )?;
    println!("Secret demo/alice-credentials holds: {keys}");
    println!("[non-interactive] alice and team are ACTIVE; stopping.");
    Ok(())
}

/// Runs the demo with `operator_bin`; interactive runs block until Ctrl-C.
pub fn run(operator_bin: &Path, non_interactive: bool) -> Result<(), String> {
    if !operator_bin.is_file() {
        return Err(format!(
            "{} not found; run `cargo build` first",
            operator_bin.display()
        ));
    }
    let cluster = shared()?;
    let kubeconfig = cluster.kubeconfig_path().to_owned();
    let kubectl = binaries()?.kubectl.clone();
    let tool = Tool::kubectl(&kubeconfig)?;
    let run_kubectl = |args: &[&str], stdin: Option<&str>| -> Result<String, String> {
        tool.run(args, stdin)?.into_result()
    };

    let crds = Command::new(operator_bin)
        .arg("crd")
        .output()
        .map_err(|e| e.to_string())?;
    run_kubectl(
        &["apply", "--server-side", "-f", "-"],
        Some(&String::from_utf8_lossy(&crds.stdout)),
    )?;
    run_kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "crd/connectedaccounts.agentauth.dev",
            "crd/connections.agentauth.dev",
        ],
        None,
    )?;
    for ns in ["agent-auth-system", "demo"] {
        let _ = run_kubectl(&["create", "namespace", ns], None);
    }

    let (gateway_port, admin_port, broker_port) = (free_port()?, free_port()?, free_port()?);
    let gateway_url = format!("http://127.0.0.1:{gateway_port}");
    let dex = Dex::start_with(
        &format!("{gateway_url}/oauth/callback/ns/demo/dex"),
        DexOptions {
            id_token_ttl: "5m",
            ..Default::default()
        },
    )?;
    let dir = cluster.dir().to_owned();
    let args = [
        "run".to_owned(),
        "--namespace=agent-auth-system".to_owned(),
        format!("--gateway-url={gateway_url}"),
        format!("--gateway-addr=127.0.0.1:{gateway_port}"),
        format!("--admin-addr=127.0.0.1:{admin_port}"),
        format!("--broker-addr=127.0.0.1:{broker_port}"),
        // Dex and the demo's form check run on loopback: allowed explicitly, as a user would.
        "--egress-allow=127.0.0.1/32".to_owned(),
        "--connection-host-allow=127.0.0.1".to_owned(),
    ];
    let kc = kubeconfig.display().to_string();
    let _operator = Proc::spawn(&dir, "operator", operator_bin, &args, &[("KUBECONFIG", &kc)])?;

    let samples = include_str!("../../../examples/demo.yaml")
        .replace("DEX_CLIENT_SECRET", &dex.client_secret)
        .replace("DEX_CLIENT_ID", &dex.client_id)
        .replace("DEX_AUTHORIZATION_URL", dex.authorization_url())
        .replace("DEX_TOKEN_URL", dex.token_url());
    run_kubectl(&["apply", "-f", "-"], Some(&samples))?;

    let deadline = Instant::now() + Duration::from_secs(60);
    let links = loop {
        let out = run_kubectl(
            &[
                "get",
                "connectedaccounts",
                "-n",
                "demo",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.status.authorizationLink}{\"\\n\"}{end}",
            ],
            None,
        )?;
        let ready: Vec<String> = out
            .lines()
            .filter(|l| l.split_whitespace().count() == 2)
            .map(str::to_owned)
            .collect();
        if ready.len() == 3 {
            break ready;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no links after 60s; operator log: {}",
                dir.join("operator.log").display()
            ));
        }
        std::thread::sleep(Duration::from_millis(250)); // poll interval
    };

    println!("\nagent-auth-operator demo is running.\n");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  alias kubectl={}", kubectl.display());
    println!("  kubectl get agentauth -A\n");
    println!("Open a link in a browser on this machine and sign in at Dex as user0@example.com (alice) or");
    println!("user1@example.com (bob), password \"password\"; carol's link opens a hosted API-key form");
    println!("(any key starting with notes_). The account `team` is ACTIVE from a Secret, with no link:\n");
    for l in &links {
        println!("  {l}");
    }
    println!("\nThen: kubectl wait -n demo connectedaccount/alice --for=jsonpath='{{.status.state}}'=ACTIVE");
    println!(
        "      kubectl get secret -n demo alice-credentials -o jsonpath='{{.data.authorization}}' | base64 -d"
    );
    println!("\nLogs: {}", dir.display());
    if non_interactive {
        return play_alice(&dex, &links, &run_kubectl);
    }
    println!("Ctrl-C stops everything.");
    wait_for_signal();
    cluster.stop();
    Ok(())
}
