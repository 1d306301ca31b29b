//! The sidecar in broker mode on the node: `examples/agent-broker.yaml`'s ServiceAccount, Role
//! (`use`), RoleBinding and Deployment, with the kubelet's projected ServiceAccount token and no
//! credential volume, calling a tool for a user named at call time through the broker's Service
//! (kube-proxy to an operator pod).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};

use super::common::eventually;
use super::stack::{AGENT_IMAGE, OPERATOR_IMAGE, ProviderApi, Tools};
use super::{AGENTS, FULLNAME, SYSTEM, name, pod_ready};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/agent-broker.yaml");

/// Runs the example's agent for `account` (identifier `identifier` on Connection `connection`)
/// and checks that a tool call made with its pod's own token reaches the provider with the
/// account's current access token, which the provider accepts.
pub async fn agent_in_broker_mode(
    t: &Tools,
    client: &kube::Client,
    api: &ProviderApi,
    (connection, account, identifier): (&str, &str, &str),
) {
    let svc = Api::<Service>::namespaced(client.clone(), SYSTEM)
        .get(&format!("{FULLNAME}-broker"))
        .await
        .unwrap();
    // Pods here have no DNS: the Service by its ClusterIP, which kube-proxy forwards.
    let ip = svc.spec.and_then(|s| s.cluster_ip).unwrap();
    t.apply(&manifest(
        &format!("http://{ip}:8082"),
        &api.google_base(),
        account,
    ));
    let pod = eventually(
        Duration::from_secs(120),
        "the broker-mode agent pod Ready",
        || async {
            let list = Api::<Pod>::namespaced(client.clone(), AGENTS)
                .list(&ListParams::default().labels("app=support-agent"))
                .await
                .ok()?;
            list.items.into_iter().find(pod_ready)
        },
    )
    .await;
    // No credential reaches the pod as a volume: only the projected token for the broker.
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    assert!(volumes.iter().all(|v| v.secret.is_none()), "{volumes:?}");
    assert!(volumes.iter().any(|v| v.projected.is_some()), "{volumes:?}");
    let before = api.calls().len();
    let url = format!(
        "http://127.0.0.1:8787/v1/tools/gmail_fetch_mails?connection={connection}&identifier={identifier}"
    );
    let script = format!(
        "import urllib.request as u; r = u.Request({url:?}, data=b'{{}}', headers={{'content-type': 'application/json'}}); print(u.urlopen(r, timeout=20).read().decode())"
    );
    let pod_name = name(&pod);
    let exec = [
        "exec", "-n", AGENTS, &pod_name, "-c", "agent", "--", "python", "-c", &script,
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let text = t
            .kubectl
            .run(&exec, None)
            .map(|o| o.combined())
            .unwrap_or_else(|e| e.to_string());
        if text.contains("Lunch") {
            break text;
        }
        if Instant::now() > deadline {
            let logs = t.kubectl(&["logs", "-n", AGENTS, &pod_name, "-c", "agentauth"]);
            panic!("no tool call through the broker in 60 s; last answer:\n{text}\nsidecar log:\n{logs}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await; // poll interval
    };
    let calls: Vec<_> = api.calls().into_iter().skip(before).collect();
    assert!(
        calls.iter().any(|c| c.accepted && c.path.ends_with("/messages")),
        "the provider saw no accepted call from the broker-mode sidecar: {answer}"
    );
    let sidecar = t.kubectl(&["logs", "-n", AGENTS, &pod_name, "-c", "agentauth"]);
    for c in &calls {
        assert!(!sidecar.contains(&c.token), "the sidecar logged a token");
        assert!(!answer.contains(&c.token), "the tool answer carries a token");
    }
    println!("broker mode: {pod_name} fetched mail for {identifier} through {ip}:8082");
    t.kubectl(&[
        "delete",
        "deployment",
        "-n",
        AGENTS,
        "support-agent",
        "--wait=true",
    ]);
}

/// The example's ServiceAccount, Role, RoleBinding and Deployment, changed only where this
/// cluster differs: images on the node, the broker by ClusterIP, the Gmail-shaped API, one
/// replica, and the Role naming `account`.
fn manifest(broker: &str, google_base: &str, account: &str) -> String {
    let yaml = std::fs::read_to_string(EXAMPLE).unwrap();
    let kept: Vec<&str> = yaml
        .split("\n---\n")
        .filter(|doc| {
            [
                "kind: ServiceAccount",
                "kind: Role\n",
                "kind: RoleBinding",
                "kind: Deployment",
            ]
            .iter()
            .any(|k| doc.contains(k))
        })
        .collect();
    assert_eq!(kept.len(), 4, "the example's documents changed");
    let changed = kept
        .join("\n---\n")
        .replace("ghcr.io/agent-auth/agent-auth-operator:0.1.0", OPERATOR_IMAGE)
        .replace("python:3.12-slim", AGENT_IMAGE)
        .replace(
            "http://agent-auth-operator-broker.agent-auth-system.svc:8082",
            broker,
        )
        .replace(
            "resourceNames: [alice-gmail-broker, bob-gmail-broker]",
            &format!("resourceNames: [{account}]"),
        )
        .replace("  replicas: 2\n", "  replicas: 1\n")
        .replace(
            "            - --log-format=json\n",
            &format!("            - --log-format=json\n            - --api-base=google={google_base}\n"),
        )
        .replace(
            "          image: ",
            "          imagePullPolicy: Never\n          image: ",
        );
    for part in [broker, google_base, account, "replicas: 1"] {
        assert!(changed.contains(part), "{part} not set:\n{changed}");
    }
    changed
}
