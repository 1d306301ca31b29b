//! The product end to end on a real node, the way a platform team runs it: the operator image
//! built from this repo (`scripts/image.sh`, as `make image` does), `helm install` of the default
//! split (two controller replicas, one gateway pod, each with its own ServiceAccount) under the
//! `restricted` Pod Security level, a user signing in through the chart's gateway
//! Service (`kubectl port-forward`, so also the kubelet's streaming), `examples/agent-with-sidecar.yaml`
//! calling a Gmail-shaped API through the sidecar with the mounted Secret, the kubelet bringing a
//! refreshed token into the running pod, `examples/agent-broker.yaml`'s sidecar doing the same with
//! its pod's projected token through the token broker, a forced delete of the leader in the middle of a refresh,
//! and `helm uninstall`. A second test kills a node's test process with SIGKILL and checks that
//! nothing of the node is left on the machine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod broker;
#[path = "../common/mod.rs"]
mod common;
mod host;
mod stack;
mod teardown;

use std::time::{Duration, Instant};

use agent_auth_operator::api::{AccountState, ConnectedAccount};
use agentauth_testcluster::dex::{Dex, DexOptions};
use common::eventually;
use common::fixtures::{account, dex_connection, link, ready, sign_in, state, wait_account, wait_state};
use common::operator::lease_holder;
use common::rotating::RotatingProvider;
use common::rotating_account::{self, assert_no_replay};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use stack::{AGENT_IMAGE, OPERATOR_IMAGE, PortForward, ProviderApi, Tools};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/agent-auth-operator");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/agent-with-sidecar.yaml");
const AGENT_CODE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/agent/agent.py");
const SYSTEM: &str = "agent-auth-system";
const AGENTS: &str = "agents";
const RELEASE: &str = "aao";
const FULLNAME: &str = "aao-agent-auth-operator";
/// Dex's access-token lifetime: the operator refreshes within a minute of sign-in.
const TOKEN_TTL: &str = "40s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_sign_in_agent_rotation_failover_uninstall() {
    let started = Instant::now();
    let machine = || teardown::machine_wide(&host::snapshot(0, std::path::Path::new("/nonexistent")));
    let machine_before = machine();
    let work = tempfile::Builder::new()
        .prefix("agentauth-node-images-")
        .tempdir()
        .unwrap();
    let images = stack::images(work.path());
    let cluster = tokio::task::spawn_blocking(move || stack::cluster(images))
        .await
        .unwrap();
    let host_ip = cluster.with_node(|n| n.host_ip().to_owned()).unwrap();
    let t = Tools::new(&cluster);
    let client = cluster.client().await.unwrap();
    eprintln!("node: cluster with a Ready node after {:?}", started.elapsed());

    // --- Install -------------------------------------------------------------------------------
    for ns in [SYSTEM, AGENTS] {
        t.kubectl(&["create", "namespace", ns]);
        t.kubectl(&[
            "label",
            "namespace",
            ns,
            "pod-security.kubernetes.io/enforce=restricted",
        ]);
    }
    let gateway_port = agentauth_testcluster::free_port().unwrap();
    let gateway_url = format!("http://127.0.0.1:{gateway_port}");
    let gateway_svc = format!("svc/{FULLNAME}-gateway");
    let dex = Dex::start_with(
        &format!("{gateway_url}/oauth/callback"),
        DexOptions {
            id_token_ttl: TOKEN_TTL,
            host: &host_ip,
            ..Default::default()
        },
    )
    .unwrap();
    let link_net = format!("{host_ip}/32");
    // The chart's NetworkPolicies are rendered and applied; the node's bridge CNI does not enforce
    // them, so this test shows they do not break the install, not that they hold.
    let sets = [
        "replicaCount=2".to_owned(),
        format!("image.repository={}", OPERATOR_IMAGE.rsplit_once(':').unwrap().0),
        format!("image.tag={}", OPERATOR_IMAGE.rsplit_once(':').unwrap().1),
        "image.pullPolicy=Never".to_owned(),
        format!("gateway.url={gateway_url}"),
        format!("egressAllow={{{link_net}}}"),
        format!("connectionHostAllow={{{link_net}}}"),
        "logFormat=json".to_owned(),
        "logLevel=info\\,agent_auth_operator=debug".to_owned(),
    ];
    let mut args = vec![
        "install",
        RELEASE,
        CHART,
        "-n",
        SYSTEM,
        "--wait",
        "--timeout",
        "180s",
    ];
    for s in &sets {
        args.extend(["--set", s.as_str()]);
    }
    let installed = t.helm(&args);
    assert!(
        installed.success(),
        "helm install: {}\n{}\n{}",
        installed.combined(),
        t.kubectl
            .run(&["describe", "pods", "-n", SYSTEM], None)
            .unwrap()
            .combined(),
        cluster.with_node(|n| n.log_tails()).unwrap_or_default()
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    let controllers = component_pods(&pods, "controller").await;
    let gateways = component_pods(&pods, "gateway").await;
    assert_eq!(
        (controllers.len(), gateways.len()),
        (2, 1),
        "two controller pods, one gateway pod"
    );
    let running = operator_pods(&pods).await;
    assert_eq!(running.len(), 3, "nothing else of the release");
    for p in &running {
        assert!(pod_ready(p), "{} Ready through its probes", name(p));
    }
    let service_account = |p: &Pod| p.spec.as_ref().and_then(|s| s.service_account_name.clone());
    assert_eq!(
        service_account(&gateways[0]).as_deref(),
        Some(format!("{FULLNAME}-gateway").as_str())
    );
    for p in &controllers {
        assert_eq!(
            service_account(p).as_deref(),
            Some(format!("{FULLNAME}-controller").as_str())
        );
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM);
    let leader = eventually(Duration::from_secs(60), "a leader", || lease_holder(&leases)).await;
    assert!(
        controllers.iter().any(|p| name(p) == leader),
        "the lease holder {leader} is a controller pod"
    );
    for p in &running {
        let logs = t.kubectl(&["logs", "-n", SYSTEM, &name(p)]);
        let lines: Vec<&str> = logs.lines().collect();
        assert!(!lines.is_empty(), "kubectl logs {}", name(p));
        for l in &lines {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        }
    }
    // The restricted securityContext as the runtime applied it, read from the machine's /proc.
    let operator = "/usr/local/bin/agent-auth-operator";
    let procs = host::processes(&[operator, "run", "--role=controller"], SYSTEM);
    assert_eq!(procs.len(), 2, "two controller processes: {procs:?}");
    let gateway_procs = host::processes(&[operator, "run", "--role=gateway"], SYSTEM);
    assert_eq!(gateway_procs.len(), 1, "one gateway process: {gateway_procs:?}");
    assert!(
        host::processes(&[operator, "run"], SYSTEM).is_empty(),
        "no process of role all"
    );
    for c in procs.iter().chain(&gateway_procs) {
        assert_eq!(c.uids, "65532 65532 65532 65532", "{c:?}");
        assert!(c.no_new_privs && c.seccomp_mode == 2 && c.root_read_only, "{c:?}");
        assert_eq!(c.effective_caps, "0000000000000000", "{c:?}");
    }
    println!("{}", t.kubectl(&["get", "pods", "-A", "-o", "wide"]));
    // Pods route through the node, and the node routes nowhere but its link, pods and Services.
    cluster
        .with_node(|n| {
            assert!(
                n.route_to(&host_ip).is_ok(),
                "the node reaches the host end of its link"
            );
            assert!(
                n.route_to("198.19.0.1").is_err(),
                "Services are kube-proxy's DNAT, not a route"
            );
            for outside in ["192.0.2.1", "8.8.8.8", "10.0.0.1"] {
                assert!(n.route_to(outside).is_err(), "the node has a route to {outside}");
            }
        })
        .unwrap();

    // --- Sign-in through the chart's Service ------------------------------------------------------
    // Held to the end: the gateway pod outlives the controller failover below.
    let _pf = PortForward::start(&cluster, SYSTEM, &gateway_svc, gateway_port, 80).await;
    dex_connection(
        &client,
        AGENTS,
        "gmail",
        &dex,
        &["openid", "email", "offline_access"],
    )
    .await;
    // `google`: the Secret says so, and the sidecar offers the Gmail tools for it.
    Api::<agent_auth_operator::api::Connection>::namespaced(client.clone(), AGENTS)
        .patch(
            "gmail",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"provider": "google"}})),
        )
        .await
        .unwrap();
    let accounts: Api<ConnectedAccount> = Api::namespaced(client.clone(), AGENTS);
    account(&client, AGENTS, "alice-gmail", "gmail", json!({})).await;
    let pending = wait_account(&accounts, "alice-gmail", "link", |a| link(a).is_some()).await;
    let link_url = link(&pending).unwrap();
    assert!(link_url.starts_with(&gateway_url), "{link_url}");
    sign_in(&link_url, &dex.user(0)).await;
    let active = wait_state(&accounts, "alice-gmail", AccountState::Active).await;
    let signed_in = Instant::now();
    eprintln!(
        "node: alice-gmail ACTIVE through {gateway_url} ({:?})",
        ready(&active)
    );

    // --- The agent pod: mounted Secret, native sidecar, a tool call -----------------------------
    let api = ProviderApi::start(&host_ip, dex.userinfo_url()).await;
    let code = std::fs::read_to_string(AGENT_CODE).unwrap();
    t.kubectl
        .run(
            &[
                "create",
                "configmap",
                "mail-agent-code",
                "-n",
                AGENTS,
                "--from-file",
                AGENT_CODE,
            ],
            None,
        )
        .unwrap()
        .expect_ok();
    assert!(code.contains("gmail_fetch_mails"));
    t.apply(&agent_manifest(&api.google_base()));
    let agent_pod = eventually(Duration::from_secs(120), "the agent pod Running", || async {
        let list = Api::<Pod>::namespaced(client.clone(), AGENTS)
            .list(&ListParams::default().labels("app=mail-agent"))
            .await
            .ok()?;
        list.items.into_iter().find(pod_ready)
    })
    .await;
    let agent_name = name(&agent_pod);
    println!("{}", t.kubectl(&["get", "pods", "-A", "-o", "wide"]));
    // The Secret may be refreshed meanwhile and the mounted files lag it by up to a kubelet sync:
    // wait for an accepted call that carries the Secret's token of that moment.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), AGENTS);
    let mounted = eventually(
        Duration::from_secs(120),
        "an agent tool call with the Secret's token, accepted",
        || async {
            let current = token_of(&secrets, "alice-gmail-credentials").await;
            api.calls()
                .into_iter()
                .any(|c| c.accepted && c.token == current)
                .then_some(current)
        },
    )
    .await;
    let agent_log = |t: &Tools| t.kubectl(&["logs", "-n", AGENTS, &agent_name, "-c", "agent"]);
    eventually(Duration::from_secs(60), "the agent printing the mail", || async {
        agent_log(&t)
            .contains("Bob <bob@example.com>: Lunch")
            .then_some(())
    })
    .await;
    println!(
        "agent log before the rotation (last lines):\n{}",
        tail(&agent_log(&t), 6)
    );

    // --- Rotation: the kubelet swaps the files, the next call carries the new token --------------
    let rotated = eventually(
        Duration::from_secs(120),
        "a refreshed token in the Secret",
        || async {
            let now = token_of(&secrets, "alice-gmail-credentials").await;
            (now != mounted).then_some((now, Instant::now()))
        },
    )
    .await;
    let (new_token, refreshed_at) = rotated;
    // Any token but the old one is a newer one (two refreshes may land within one kubelet sync).
    let with_new = eventually(Duration::from_secs(90), "a call with a new token", || async {
        api.calls()
            .into_iter()
            .find(|c| c.accepted && c.at >= refreshed_at && !c.token.is_empty() && c.token != mounted)
    })
    .await;
    let restarts: i32 = Api::<Pod>::namespaced(client.clone(), AGENTS)
        .get(&agent_name)
        .await
        .unwrap()
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default()
        .iter()
        .map(|c| c.restart_count)
        .sum();
    assert_eq!(restarts, 0, "no restart of the agent for the new token");
    println!(
        "rotation: refreshed {:?} after sign-in; the first call with the new token came {:?} after the Secret changed",
        refreshed_at - signed_in,
        with_new.at.saturating_duration_since(refreshed_at)
    );
    println!(
        "agent log after the rotation (last lines):\n{}",
        tail(&agent_log(&t), 6)
    );
    // The tool calls as the provider saw them, the token shown as a fingerprint only.
    for c in api.calls().iter().filter(|c| c.path.ends_with("/messages")) {
        let at = c.at.saturating_duration_since(signed_in);
        let mark = if c.at >= refreshed_at { "after" } else { "before" };
        println!(
            "tool call t+{:>5.1}s {} token {} {} the refresh, accepted {}",
            at.as_secs_f64(),
            c.path,
            fingerprint(&c.token),
            mark,
            c.accepted
        );
    }
    // A call with a token the provider no longer takes is answered 401, and the sidecar re-reads
    // the files and retries (docs/sidecar.md); such calls are counted, not forbidden.
    let rejected = api.calls().iter().filter(|c| !c.accepted).count();
    println!("rotation: {rejected} calls refused by the provider (the sidecar retries those)");

    // --- Broker mode: a pod's projected token, the user named per call ------------------------------
    accounts
        .patch(
            "alice-gmail",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"delivery": "SecretAndBroker"}})),
        )
        .await
        .unwrap();
    broker::agent_in_broker_mode(
        &t,
        &client,
        &api,
        ("gmail", "alice-gmail", "alice-gmail@example.com"),
    )
    .await;

    // --- Failover: force-delete the leader in the middle of a refresh -----------------------------
    // Strict rotation; tokens live 90 s and are renewed 75 s early, so the access token outlives the
    // failover and the account stays ACTIVE while the user is asked to re-authorize.
    let opts = rotating_account::options(AGENTS, Duration::from_secs(90));
    let p = RotatingProvider::start_on(&host_ip, opts.clone()).await;
    let refresh = json!({"before": "75s"});
    rotating_account::connection(&client, AGENTS, "rot", &p, &opts, &["read"], refresh).await;
    rotating_account::authorized(&client, AGENTS, "rex", "rot").await;
    let leader = eventually(Duration::from_secs(30), "a leader", || lease_holder(&leases)).await;
    p.hold_rotations();
    assert!(p.wait_held(Duration::from_secs(60)).await, "a refresh in flight");
    t.kubectl(&[
        "delete",
        "pod",
        "-n",
        SYSTEM,
        &leader,
        "--force",
        "--grace-period=0",
    ]);
    let killed = Instant::now();
    eventually(
        Duration::from_secs(60),
        "the old leader's process gone",
        || async { (!host::pod_process_alive(&leader)).then_some(()) },
    )
    .await;
    // The provider rotated; its answer reaches nobody.
    p.release();
    let next = eventually(
        Duration::from_secs(60),
        "another replica takes the lease",
        || async { lease_holder(&leases).await.filter(|h| *h != leader) },
    )
    .await;
    let handover = killed.elapsed();
    let stranded = wait_account(&accounts, "rex", "RefreshOutcomeUnknown", |a| {
        ready(a).is_some_and(|r| r.1 == "RefreshOutcomeUnknown") && link(a).is_some()
    })
    .await;
    assert_eq!(
        state(&stranded),
        Some(AccountState::Active),
        "ACTIVE while its access token lives"
    );
    let sent = assert_no_replay(&p);
    // The gateway pod was not touched: the user's forward to it (`kubectl port-forward svc/...`
    // holds one pod) still works, and it reaches the new leader through the intake Service.
    // The new leader asks the user instead of replaying; the user re-authorizes.
    rotating_account::follow(&link(&stranded).unwrap()).await;
    let rotations = p.rotations();
    eventually(Duration::from_secs(90), "a refresh by the new leader", || async {
        (p.rotations() > rotations).then_some(())
    })
    .await;
    let settled = wait_state(&accounts, "rex", AccountState::Active).await;
    let total = assert_no_replay(&p);
    eprintln!(
        "failover: {next} took over from {leader} {handover:?} after the forced delete; \
         {total} refresh tokens sent ({sent} before the re-authorization), none twice; rex {:?}",
        ready(&settled)
    );
    eventually(Duration::from_secs(120), "two controller pods again", || async {
        let pods = component_pods(&pods, "controller").await;
        (pods.len() == 2 && pods.iter().all(pod_ready)).then_some(())
    })
    .await;
    assert_eq!(
        state(&accounts.get("alice-gmail").await.unwrap()),
        Some(AccountState::Active)
    );

    // No token in any operator log.
    let secret_values = [mounted.clone(), new_token.clone()];
    for p in operator_pods(&pods).await {
        let logs = t.kubectl(&["logs", "-n", SYSTEM, &name(&p)]);
        for s in &secret_values {
            assert!(!logs.contains(s.as_str()), "a token in the logs of {}", name(&p));
        }
    }

    // The node's kubelet, kube-proxy, containerd and CNI plugins changed nothing of the machine.
    assert_eq!(
        machine(),
        machine_before,
        "iptables, network namespaces, sysctls and runtime paths"
    );

    // --- Uninstall: the pods go, the CRDs stay ------------------------------------------------------
    let out = t.helm(&["uninstall", RELEASE, "-n", SYSTEM, "--wait", "--timeout", "120s"]);
    assert!(out.success(), "{}", out.combined());
    eventually(Duration::from_secs(90), "the operator pods gone", || async {
        operator_pods_all(&pods).await.is_empty().then_some(())
    })
    .await;
    let crds = t.kubectl(&["get", "crd", "-o", "name"]);
    for crd in ["connections.agentauth.dev", "connectedaccounts.agentauth.dev"] {
        assert!(crds.contains(crd), "{crd} kept after uninstall: {crds}");
    }
    assert!(
        accounts.get_opt("alice-gmail").await.unwrap().is_some(),
        "accounts kept"
    );
    eprintln!("node: whole scenario {:?}", started.elapsed());
}

/// The example Deployment, changed only where this cluster differs: the image names (no
/// registry here), the sidecar's API base for Google (the provider-shaped API on the host, where
/// the real one would be https://gmail.googleapis.com) and the agent's interval (2 s, not 60).
fn agent_manifest(google_base: &str) -> String {
    let yaml = std::fs::read_to_string(EXAMPLE).unwrap();
    let changed = yaml
        .replace("ghcr.io/agent-auth/agent-auth-operator:0.1.0", OPERATOR_IMAGE)
        .replace("python:3.12-slim", AGENT_IMAGE)
        .replace(
            "            - --log-format=json\n",
            &format!("            - --log-format=json\n            - --api-base=google={google_base}\n"),
        )
        .replace(
            "            - {name: PYTHONDONTWRITEBYTECODE, value: \"1\"}\n",
            "            - {name: PYTHONDONTWRITEBYTECODE, value: \"1\"}\n            - {name: AGENT_INTERVAL, value: \"2\"}\n",
        );
    assert_ne!(changed, yaml);
    assert!(
        changed.contains("--api-base=google=") && changed.contains("AGENT_INTERVAL"),
        "{changed}"
    );
    // Never pulled: the images are on the node.
    changed.replace(
        "          image: ",
        "          imagePullPolicy: Never\n          image: ",
    )
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A token's first 8 hex digits of SHA-256: tells tokens apart in output without showing them.
fn fingerprint(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

async fn token_of(secrets: &Api<Secret>, name: &str) -> String {
    let s = eventually(Duration::from_secs(30), name, || async {
        secrets.get_opt(name).await.ok().flatten()
    })
    .await;
    s.data
        .and_then(|d| {
            d.get("access_token")
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        })
        .unwrap_or_default()
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The operator's pods that are not being deleted.
async fn operator_pods(pods: &Api<Pod>) -> Vec<Pod> {
    operator_pods_all(pods)
        .await
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The pods of one component of the split (`controller` or `gateway`) not being deleted.
async fn component_pods(pods: &Api<Pod>, component: &str) -> Vec<Pod> {
    let selector = format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}");
    pods.list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

async fn operator_pods_all(pods: &Api<Pod>) -> Vec<Pod> {
    pods.list(&ListParams::default().labels("app.kubernetes.io/instance=aao"))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}
