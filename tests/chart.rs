//! The Helm chart (`charts/agent-auth-operator`) against the real control plane, with the real `helm`
//! and `kubectl` built by `tests/cluster/build.sh`:
//! - the chart's CRD copy equals `crds/agentauth.dev.yaml`;
//! - `helm lint` (also `--strict`) passes; bad values fail with a message saying what to set;
//! - the rendered manifests (cluster-wide and watched-namespace modes, every optional object but the
//!   ServiceMonitor, whose CRD the test cluster lacks) pass a server-side dry run, and the pod
//!   template satisfies the `restricted` Pod Security Standard (checked by the API server's own
//!   PodSecurity admission);
//! - install, upgrade (2 replicas: leader election, PodDisruptionBudget), uninstall; CRDs installed
//!   by the chart survive the uninstall;
//! - the RBAC the chart grants, proven with `kubectl auth can-i` for both namespace modes and for
//!   both ServiceAccounts of the split (the gateway's: no Secret but the signing key, no write),
//!   and by running the operator binary with the chart's ServiceAccount token and environment;
//! - `tests/chart/split.rs`: the default `mode: split` (two Deployments, two ServiceAccounts, the
//!   intake, NetworkPolicies with egress) rendered, installed, and upgraded to from `mode: all`.
//!
//! Releases are installed with `crds.install=false` except in the test about keeping CRDs:
//! `common::setup` installs the CRDs for every test of this binary, and Helm refuses to install over
//! objects it does not own unless told to `--take-ownership`, which that test does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
#[path = "chart/gateway_rbac.rs"]
mod gateway_rbac;
#[path = "chart/split.rs"]
mod split;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentauth_testcluster::cli::{Output, Tool};
use common::{eventually, setup};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/agent-auth-operator");
const GATEWAY_URL: &str = "https://connect.example.com";
/// Release name in every test; objects are named `aao-agent-auth-operator`.
const RELEASE: &str = "aao";
const FULLNAME: &str = "aao-agent-auth-operator";
/// The controller's ServiceAccount (and Deployment) in split mode, the default.
const CONTROLLER: &str = "aao-agent-auth-operator-controller";
/// The gateway's ServiceAccount (and Deployment) in split mode.
const GATEWAY: &str = "aao-agent-auth-operator-gateway";
const CRD_NAMES: [&str; 2] = ["connections.agentauth.dev", "connectedaccounts.agentauth.dev"];

// ---------------------------------------------------------------------------------------------
// helm and kubectl as subprocesses

/// `helm` and `kubectl` with a private Helm home and discovery cache, pointed at the test cluster
/// (or at nothing, for tests that never talk to a cluster). The home is removed on drop.
struct Tools {
    helm: Tool,
    kubectl: Tool,
    _home: tempfile::TempDir,
}

impl Tools {
    /// Tools for the test cluster.
    fn cluster() -> Tools {
        let cluster =
            agentauth_testcluster::shared().unwrap_or_else(|e| panic!("control plane unavailable: {e}"));
        Self::with_kubeconfig(Some(cluster.kubeconfig_path()))
    }

    /// Tools that cannot reach any cluster (`KUBECONFIG` names a file that does not exist).
    fn offline() -> Tools {
        Self::with_kubeconfig(None)
    }

    fn with_kubeconfig(kubeconfig: Option<&Path>) -> Tools {
        let home = tempfile::Builder::new()
            .prefix("agentauth-helm-")
            .tempdir()
            .unwrap();
        let h = home.path();
        let kubeconfig = kubeconfig.map_or_else(|| h.join("no-kubeconfig"), Path::to_owned);
        let private = |tool: Tool| {
            tool.env("KUBECACHEDIR", h.join("kube-cache"))
                .env("HELM_CACHE_HOME", h.join("cache"))
                .env("HELM_CONFIG_HOME", h.join("config"))
                .env("HELM_DATA_HOME", h.join("data"))
                .env_remove("HELM_NAMESPACE")
                .env_remove("HELM_KUBECONTEXT")
        };
        Tools {
            helm: private(Tool::helm(&kubeconfig).unwrap_or_else(|e| panic!("{e}"))),
            kubectl: private(Tool::kubectl(&kubeconfig).unwrap_or_else(|e| panic!("{e}")))
                .leading_arg("--request-timeout=30s"),
            _home: home,
        }
    }

    fn helm(&self, args: &[&str]) -> Output {
        self.helm.run(args, None).unwrap_or_else(|e| panic!("{e}"))
    }

    fn kubectl(&self, args: &[&str], stdin: Option<String>) -> Output {
        self.kubectl
            .run(args, stdin.as_deref())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `helm template` of the chart into `ns` with `gateway.url` and `sets` (each `key=value`).
    fn template(&self, ns: &str, sets: &[&str]) -> Output {
        let url = format!("gateway.url={GATEWAY_URL}");
        let mut args = vec!["template", RELEASE, CHART, "--namespace", ns, "--set", &url];
        for s in sets {
            args.extend(["--set", s]);
        }
        self.helm(&args)
    }

    /// `helm install|upgrade` of the chart into `ns` with `sets`; panics on failure.
    fn helm_release(&self, verb: &str, ns: &str, sets: &[&str]) -> String {
        let mut args = vec![verb, RELEASE, CHART, "--namespace", ns, "--timeout", "60s"];
        for s in sets {
            args.extend(["--set", s]);
        }
        self.helm(&args).expect_ok()
    }

    /// `kubectl auth can-i <args> --as=<the ServiceAccount>` with the groups a token of it carries.
    fn can_i(&self, sa_ns: &str, sa: &str, args: &[&str]) -> bool {
        let user = format!("--as=system:serviceaccount:{sa_ns}:{sa}");
        let ns_group = format!("--as-group=system:serviceaccounts:{sa_ns}");
        let mut all = vec![
            "auth",
            "can-i",
            &user,
            "--as-group=system:serviceaccounts",
            &ns_group,
            "--as-group=system:authenticated",
        ];
        all.extend_from_slice(args);
        let r = self.kubectl(&all, None);
        match r.stdout.trim() {
            "yes" => true,
            "no" => false,
            _ => panic!(
                "{} answered neither yes nor no:\n{}\n{}",
                r.what, r.stdout, r.stderr
            ),
        }
    }
}

/// The documents of a multi-document YAML stream (comment-only documents dropped).
fn documents(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    docs.into_iter().filter(|d| d.is_object()).collect()
}

/// `(kind, namespace, name)` of every document.
fn identities(docs: &[Value]) -> Vec<(String, String, String)> {
    docs.iter()
        .map(|d| {
            let s = |p: &str| {
                d.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            (s("/kind"), s("/metadata/namespace"), s("/metadata/name"))
        })
        .collect()
}

/// Another fresh namespace from the shared cluster.
async fn namespace(client: &kube::Client, prefix: &str) -> String {
    agentauth_testcluster::shared()
        .unwrap()
        .namespace(client, prefix)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts every `(expected, can-i args)` check for ServiceAccount `sa` and reports all mismatches
/// at once.
fn assert_permissions(t: &Tools, sa_ns: &str, sa: &str, checks: &[(bool, Vec<String>)]) {
    let wrong: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = checks
            .iter()
            .map(|(want, args)| {
                s.spawn(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let got = t.can_i(sa_ns, sa, &args);
                    (got != *want).then(|| format!("can-i {}: got {got}, want {want}", args.join(" ")))
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().unwrap()).collect()
    });
    assert!(
        wrong.is_empty(),
        "RBAC of {sa} differs from what it needs:\n{}",
        wrong.join("\n")
    );
}

/// `"verb resource -n ns"`-style check, split into arguments.
fn check(want: bool, args: &str) -> (bool, Vec<String>) {
    (want, args.split_whitespace().map(str::to_owned).collect())
}

/// `kind/name` of every object a cluster-wide `mode: all` release named [`RELEASE`] creates in
/// `ns`, sorted.
fn release_objects(ns: &str) -> Vec<String> {
    let mut all = vec![
        format!("clusterrole.rbac.authorization.k8s.io/{ns}-{FULLNAME}"),
        format!("clusterrole.rbac.authorization.k8s.io/{ns}-{FULLNAME}-metrics-reader"),
        format!("clusterrolebinding.rbac.authorization.k8s.io/{ns}-{FULLNAME}"),
        format!("clusterrolebinding.rbac.authorization.k8s.io/{ns}-{FULLNAME}-verify"),
        format!("deployment.apps/{FULLNAME}"),
        format!("poddisruptionbudget.policy/{FULLNAME}"),
        format!("role.rbac.authorization.k8s.io/{FULLNAME}"),
        format!("rolebinding.rbac.authorization.k8s.io/{FULLNAME}"),
        format!("service/{FULLNAME}-gateway"),
        format!("service/{FULLNAME}-metrics"),
        format!("serviceaccount/{FULLNAME}"),
    ];
    all.sort();
    all
}

/// Which of `objects` (`kind/name`, in `ns` when namespaced) exist, sorted.
fn present(t: &Tools, ns: &str, objects: &[String]) -> Vec<String> {
    let mut args = vec!["get", "-n", ns, "--ignore-not-found", "-o", "name"];
    args.extend(objects.iter().map(String::as_str));
    let mut found: Vec<String> = t
        .kubectl(&args, None)
        .expect_ok()
        .lines()
        .map(str::to_owned)
        .collect();
    found.sort();
    found
}

fn env_of(c: &Container) -> BTreeMap<String, Value> {
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), serde_json::to_value(e).unwrap()))
        .collect()
}

fn env_value(c: &Container, name: &str) -> Option<String> {
    env_of(c)
        .get(name)
        .and_then(|e| e.get("value"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------
// the chart on its own

#[test]
fn chart_carries_the_current_crds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = std::fs::read_to_string(root.join("crds/agentauth.dev.yaml")).unwrap();
    let chart = std::fs::read_to_string(Path::new(CHART).join("files/agentauth.dev.yaml")).unwrap();
    assert!(
        repo == chart,
        "charts/agent-auth-operator/files/agentauth.dev.yaml is stale: run \
         `cp crds/agentauth.dev.yaml charts/agent-auth-operator/files/agentauth.dev.yaml`"
    );
}

#[test]
fn chart_lints_cleanly() {
    let t = Tools::offline();
    let url = format!("gateway.url={GATEWAY_URL}");
    // Without values too: lint reports the missing gateway.url as INFO, so CI can lint the chart
    // as it is.
    for sets in [
        vec![],
        vec![url.as_str()],
        vec![
            url.as_str(),
            "watchNamespaces={team-a,team-b}",
            "replicaCount=3",
            "ingress.enabled=true",
            "networkPolicy.enabled=true",
            "metrics.serviceMonitor.enabled=true",
            "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "gateway.replicaCount=2",
            "encryption.keks[0].id=k1",
            "encryption.keks[0].path=/keys/k1",
        ],
        vec![url.as_str(), "mode=all", "replicaCount=2"],
    ] {
        for strict in [false, true] {
            let mut args = vec!["lint", CHART];
            if strict {
                args.push("--strict");
            }
            for s in &sets {
                args.extend(["--set", s]);
            }
            let out = t.helm(&args).expect_ok();
            assert!(out.contains("1 chart(s) linted, 0 chart(s) failed"), "{out}");
            assert!(!out.contains("[WARNING]") && !out.contains("[ERROR]"), "{out}");
        }
    }
}

#[test]
fn missing_or_bad_values_fail_with_a_message_saying_what_to_set() {
    let t = Tools::offline();

    // No gateway.url: the template says what to set.
    let err = t.helm(&["template", RELEASE, CHART]).expect_failure();
    assert!(
        err.contains("gateway.url is required") && err.contains("--set gateway.url=https://"),
        "unhelpful message: {err}"
    );

    // values.schema.json: types, enums, patterns, unknown keys.
    for (set, mentions) in [
        ("replicaCount=two", "/replicaCount"),
        ("logFormat=xml", "/logFormat"),
        ("gateway.url=connect.example.com", "/gateway/url"),
        ("gateway.service.port=99999", "/gateway/service/port"),
        ("watchNamespaces={Not_A_Namespace}", "/watchNamespaces/0"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("replicas=2", "replicas"),
        ("ingress.paths[0].pathType=Regex", "/ingress/paths/0"),
        (
            "allowedRedirectOrigins={https://app.example.com/welcome}",
            "/allowedRedirectOrigins/0",
        ),
        ("mode=both", "/mode"),
        ("gateway.replicaCount=-1", "/gateway/replicaCount"),
        ("intake.port=0", "/intake/port"),
        ("metrics.secure=maybe", "/metrics/secure"),
        (
            "networkPolicy.apiServer.cidrs={kubernetes.default}",
            "/networkPolicy/apiServer/cidrs/0",
        ),
        (
            "networkPolicy.apiServer.ports={https}",
            "/networkPolicy/apiServer/ports/0",
        ),
        ("networkPolicy.egress=[]", "egress"),
        ("encryption.keks[0].id=k1", "/encryption/keks/0"),
        ("encryption.keks[0].path=relative/k1", "/encryption/keks/0"),
    ] {
        let err = t
            .helm(&[
                "template",
                RELEASE,
                CHART,
                "--set",
                "gateway.url=https://x.test",
                "--set",
                set,
            ])
            .expect_failure();
        assert!(
            err.contains(mentions),
            "--set {set}: the error does not name {mentions}: {err}"
        );
    }
    let err = t
        .helm(&[
            "template",
            RELEASE,
            CHART,
            "--set-string",
            "replicaCount=2",
            "--set",
            "gateway.url=https://x.test",
        ])
        .expect_failure();
    assert!(err.contains("/replicaCount"), "{err}");

    // A ServiceMonitor needs the metrics Service it selects.
    let err = t
        .template(
            "x",
            &[
                "metrics.serviceMonitor.enabled=true",
                "metrics.service.enabled=false",
            ],
        )
        .expect_failure();
    assert!(err.contains("metrics.service.enabled"), "{err}");

    // Encryption keys: the primary must be one of them, and is required with several.
    for (sets, mentions) in [
        (
            vec![
                "encryption.keks[0].id=k1",
                "encryption.keks[0].path=/k/1",
                "encryption.primary=k2",
            ],
            "encryption.primary \"k2\" is not the id of any key",
        ),
        (
            vec![
                "encryption.keks[0].id=k1",
                "encryption.keks[0].path=/k/1",
                "encryption.keks[1].id=k2",
                "encryption.keks[1].path=/k/2",
            ],
            "encryption.primary is required with more than one key",
        ),
    ] {
        let err = t.template("x", &sets).expect_failure();
        assert!(err.contains(mentions), "{sets:?}: {err}");
    }
}

#[test]
fn rendered_mode_all_defaults_and_options() {
    let t = Tools::offline();
    // Mode all: one Deployment runs every role, as before the split (tests/chart/split.rs has the
    // default mode).
    let all = |sets: &[&str]| {
        let mut with = vec!["mode=all"];
        with.extend_from_slice(sets);
        t.template("ops", &with)
    };

    // Defaults: one replica, no election, Recreate, the image of the appVersion, the CRDs kept.
    let docs = documents(&all(&[]).expect_ok());
    let ids = identities(&docs);
    for crd in CRD_NAMES {
        let d = docs
            .iter()
            .find(|d| d["metadata"]["name"] == crd)
            .unwrap_or_else(|| panic!("CRD {crd} not rendered: {ids:?}"));
        assert_eq!(d["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
    }
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(dep["spec"]["replicas"], 1);
    assert_eq!(dep["spec"]["strategy"]["type"], "Recreate");
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "ghcr.io/agent-auth/agent-auth-operator:0.1.0");
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(env["LEADER_ELECTION"]["value"], "false");
    assert_eq!(env["GATEWAY_URL"]["value"], GATEWAY_URL);
    assert!(!env.contains_key("WATCH_NAMESPACES"), "all namespaces by default");
    assert!(
        !env.contains_key("ALLOWED_REDIRECT_ORIGINS"),
        "no onward redirects by default"
    );
    // One Deployment; NetworkPolicies on ingress only: the broker's (in-cluster peers) and the
    // one for the gateway and admin ports.
    assert_eq!(ids.iter().filter(|(k, _, _)| k == "Deployment").count(), 1);
    assert_eq!(
        ids.iter()
            .filter(|(k, _, _)| k == "NetworkPolicy")
            .map(|(_, _, n)| n.as_str())
            .collect::<Vec<_>>(),
        [FULLNAME.to_owned(), format!("{FULLNAME}-broker")],
    );
    for kind in ["PodDisruptionBudget", "Ingress", "ServiceMonitor"] {
        assert!(
            !ids.iter().any(|(k, _, _)| k == kind),
            "{kind} rendered by default"
        );
    }
    assert!(
        !all(&["crds.install=false"])
            .expect_ok()
            .contains("CustomResourceDefinition")
    );

    // Image by digest; leader election forced on with one replica.
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let docs =
        documents(&all(&[&format!("image.digest={digest}"), "leaderElection.enabled=true"]).expect_ok());
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["image"],
        format!("ghcr.io/agent-auth/agent-auth-operator@{digest}")
    );
    assert_eq!(dep["spec"]["strategy"]["type"], "RollingUpdate");
    assert!(
        c["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "LEADER_ELECTION", "value": "true"}))
    );

    // Allowed redirect origins: one comma-separated variable, as the binary reads it.
    let docs = documents(
        &all(&["allowedRedirectOrigins={https://app.example.com,https://platform.example.com:8443}"])
            .expect_ok(),
    );
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert!(
        dep["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "ALLOWED_REDIRECT_ORIGINS", "value": "https://app.example.com,https://platform.example.com:8443"}))
    );

    // NetworkPolicies: the broker port admits in-cluster pods only, in a policy of its own; with
    // that policy off, the main policy keeps the broker port open rather than closing it.
    let ports_of = |d: &Value| -> Vec<(String, bool)> {
        d["spec"]["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|rule| {
                let limited = rule.get("from").is_some();
                rule["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |p| (p["port"].as_str().unwrap().to_owned(), limited))
            })
            .collect()
    };
    let docs = documents(&all(&[]).expect_ok());
    let broker_policy = docs
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy" && d["metadata"]["name"] == format!("{FULLNAME}-broker"))
        .unwrap();
    assert_eq!(
        broker_policy["spec"]["ingress"][0]["from"],
        json!([{"namespaceSelector": {}}])
    );
    assert!(ports_of(broker_policy).contains(&("broker".into(), true)));
    let docs =
        documents(&all(&["networkPolicy.enabled=true", "broker.networkPolicy.enabled=false"]).expect_ok());
    let policies: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "NetworkPolicy").collect();
    assert_eq!(policies.len(), 1);
    assert!(
        ports_of(policies[0]).contains(&("broker".into(), false)),
        "{:?}",
        ports_of(policies[0])
    );

    // Ingress: host from gateway.url (port dropped), TLS, only the gateway's two public paths.
    let url = "gateway.url=https://connect.example.com:8443/";
    let docs = documents(&all(&[url, "ingress.enabled=true"]).expect_ok());
    let ing = docs.iter().find(|d| d["kind"] == "Ingress").unwrap();
    assert_eq!(ing["spec"]["rules"][0]["host"], "connect.example.com");
    assert_eq!(ing["spec"]["tls"][0]["hosts"][0], "connect.example.com");
    let paths: Vec<&str> = ing["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/connect", "/oauth/callback"]);
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert!(
        dep["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "GATEWAY_URL", "value": "https://connect.example.com:8443"})),
        "trailing slash trimmed"
    );

    // ServiceMonitor: scrapes the metrics Service's port by the Service's labels.
    let docs = documents(&all(&["metrics.serviceMonitor.enabled=true"]).expect_ok());
    let sm = docs.iter().find(|d| d["kind"] == "ServiceMonitor").unwrap();
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    let svc = docs
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == format!("{FULLNAME}-metrics"))
        .unwrap();
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor selects label {k}"
        );
    }
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    assert_eq!(sm["spec"]["namespaceSelector"]["matchNames"][0], "ops");
}

// ---------------------------------------------------------------------------------------------
// the rendered chart against the API server

/// Marks `ns` as `restricted` under Pod Security admission (enforce and warn).
async fn restricted(client: &kube::Client, ns: &str) {
    let patch = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
    }}});
    Api::<Namespace>::all(client.clone())
        .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Server-side dry run of `manifests`: returns `kind/name` of each object and the warnings.
fn dry_run(t: &Tools, manifests: String) -> (Vec<String>, String) {
    let r = t.kubectl(
        &[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-o",
            "name",
            "-f",
            "-",
        ],
        Some(manifests),
    );
    let stderr = r.stderr.clone();
    let names = r.expect_ok().lines().map(str::to_owned).collect();
    (names, stderr)
}

/// The pod template of Deployment `name` in `manifests` as a bare Pod, which Pod Security
/// admission in `enforce` mode accepts or rejects.
fn pod_of(manifests: &str, ns: &str, name: &str) -> String {
    let docs = documents(manifests);
    let dep = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no Deployment {name}"));
    let mut tpl = dep["spec"]["template"].clone();
    tpl["metadata"]["name"] = json!("pod-security-probe");
    tpl["metadata"]["namespace"] = json!(ns);
    serde_json::to_string(&json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": tpl["metadata"], "spec": tpl["spec"],
    }))
    .unwrap()
}

#[tokio::test]
async fn rendered_chart_passes_a_server_side_dry_run_cluster_wide() {
    let env = setup("chart-dry").await;
    restricted(&env.client, &env.ns).await;
    let t = Tools::cluster();
    // Split mode with every optional object except the ServiceMonitor (no Prometheus Operator CRDs
    // here), the CRDs included.
    let reader = "metrics.reader.subjects[0].kind=ServiceAccount,metrics.reader.subjects[0].name=prometheus,metrics.reader.subjects[0].namespace=monitoring";
    let manifests = t
        .template(
            &env.ns,
            &[
                "ingress.enabled=true",
                "replicaCount=2",
                "gateway.replicaCount=2",
                "encryption.keks[0].id=k1",
                "encryption.keks[0].path=/keys/k1",
                reader,
            ],
        )
        .expect_ok();
    let (names, warnings) = dry_run(&t, manifests.clone());
    let want: BTreeSet<String> = [
        "customresourcedefinition.apiextensions.k8s.io/connections.agentauth.dev".to_owned(),
        "customresourcedefinition.apiextensions.k8s.io/connectedaccounts.agentauth.dev".to_owned(),
        "customresourcedefinition.apiextensions.k8s.io/clusterconnections.agentauth.dev".to_owned(),
        format!("serviceaccount/{CONTROLLER}"),
        format!("serviceaccount/{GATEWAY}"),
        format!("role.rbac.authorization.k8s.io/{GATEWAY}"),
        format!("rolebinding.rbac.authorization.k8s.io/{GATEWAY}"),
        format!("clusterrole.rbac.authorization.k8s.io/{}-{GATEWAY}", env.ns),
        format!(
            "clusterrolebinding.rbac.authorization.k8s.io/{}-{GATEWAY}",
            env.ns
        ),
        format!(
            "clusterrolebinding.rbac.authorization.k8s.io/{}-{GATEWAY}-verify",
            env.ns
        ),
        format!(
            "clusterrole.rbac.authorization.k8s.io/{}-{FULLNAME}-metrics-reader",
            env.ns
        ),
        format!(
            "clusterrolebinding.rbac.authorization.k8s.io/{}-{FULLNAME}-metrics-reader",
            env.ns
        ),
        format!(
            "clusterrole.rbac.authorization.k8s.io/{}-{FULLNAME}-cluster",
            env.ns
        ),
        format!(
            "clusterrolebinding.rbac.authorization.k8s.io/{}-{FULLNAME}-cluster",
            env.ns
        ),
        format!("role.rbac.authorization.k8s.io/{FULLNAME}"),
        format!("rolebinding.rbac.authorization.k8s.io/{FULLNAME}"),
        format!("clusterrole.rbac.authorization.k8s.io/{}-{FULLNAME}", env.ns),
        format!(
            "clusterrolebinding.rbac.authorization.k8s.io/{}-{FULLNAME}",
            env.ns
        ),
        format!(
            "clusterrolebinding.rbac.authorization.k8s.io/{}-{FULLNAME}-verify",
            env.ns
        ),
        format!("service/{FULLNAME}-gateway"),
        format!("service/{FULLNAME}-metrics"),
        format!("service/{FULLNAME}-intake"),
        format!("deployment.apps/{CONTROLLER}"),
        format!("deployment.apps/{GATEWAY}"),
        format!("ingress.networking.k8s.io/{FULLNAME}-gateway"),
        format!("networkpolicy.networking.k8s.io/{CONTROLLER}"),
        format!("networkpolicy.networking.k8s.io/{GATEWAY}"),
        format!("service/{FULLNAME}-broker"),
        format!("poddisruptionbudget.policy/{CONTROLLER}"),
        format!("poddisruptionbudget.policy/{GATEWAY}"),
    ]
    .into();
    let got: BTreeSet<String> = names.iter().cloned().collect();
    assert_eq!(got, want, "dry-run objects; warnings:\n{warnings}");
    assert!(
        !warnings.contains("PodSecurity"),
        "pod template is not restricted:\n{warnings}"
    );

    // Each pod itself, under `enforce: restricted` (its ServiceAccount must exist for admission).
    for name in [CONTROLLER, GATEWAY] {
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<ServiceAccount>::namespaced(env.client.clone(), &env.ns)
            .create(&PostParams::default(), &sa)
            .await
            .unwrap();
        let pod = pod_of(&manifests, &env.ns, name);
        t.kubectl(&["create", "--dry-run=server", "-f", "-"], Some(pod))
            .expect_ok();
    }

    // The check is live: an insecure override is flagged and its pod rejected.
    let insecure = t
        .template(
            &env.ns,
            &[
                "securityContext.allowPrivilegeEscalation=true",
                "podSecurityContext.runAsNonRoot=false",
                "securityContext.runAsNonRoot=false",
                "crds.install=false",
            ],
        )
        .expect_ok();
    let (_, warnings) = dry_run(&t, insecure.clone());
    assert!(warnings.contains("would violate PodSecurity"), "{warnings}");
    let err = t
        .kubectl(
            &["create", "--dry-run=server", "-f", "-"],
            Some(pod_of(&insecure, &env.ns, GATEWAY)),
        )
        .expect_failure();
    assert!(err.contains("violates PodSecurity"), "{err}");
}

#[tokio::test]
async fn rendered_chart_passes_a_server_side_dry_run_for_watched_namespaces() {
    let env = setup("chart-dryw").await;
    restricted(&env.client, &env.ns).await;
    let (w1, w2) = (
        namespace(&env.client, "chart-dryw-a").await,
        namespace(&env.client, "chart-dryw-b").await,
    );
    let t = Tools::cluster();
    // The release namespace is also watched: its own Role and the watch Role must not collide.
    let watch = format!("watchNamespaces={{{w1},{w2},{}}}", env.ns);
    let manifests = t
        .template(
            &env.ns,
            &[&watch, "networkPolicy.enabled=true", "crds.install=false"],
        )
        .expect_ok();
    let docs = documents(&manifests);
    let ids = identities(&docs);
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate objects: {ids:?}");
    for ns in [&w1, &w2, &env.ns] {
        for kind in ["Role", "RoleBinding"] {
            for who in [FULLNAME, GATEWAY] {
                let scoped = format!("{}-{who}", env.ns);
                assert!(
                    ids.contains(&(kind.to_owned(), ns.clone(), scoped)),
                    "no {kind} for {who} in {ns}: {ids:?}"
                );
            }
        }
    }
    // The cluster-scoped grants: TokenReview/SubjectAccessReview for POST /verify and /metrics (the
    // built-in auth-delegator role, for each component), ClusterConnections (with namespace labels
    // for the controller) and the metrics reader; none reads anything in any namespace (the
    // gateway's ClusterRole is checked in tests/chart/split.rs, `kubectl auth can-i` below).
    let allowed = [
        ("ClusterRoleBinding", format!("{}-{FULLNAME}-verify", env.ns)),
        ("ClusterRoleBinding", format!("{}-{GATEWAY}-verify", env.ns)),
        ("ClusterRole", format!("{}-{FULLNAME}-cluster", env.ns)),
        ("ClusterRoleBinding", format!("{}-{FULLNAME}-cluster", env.ns)),
        ("ClusterRole", format!("{}-{GATEWAY}", env.ns)),
        ("ClusterRoleBinding", format!("{}-{GATEWAY}", env.ns)),
        ("ClusterRole", format!("{}-{FULLNAME}-metrics-reader", env.ns)),
    ];
    let extra: Vec<_> = ids
        .iter()
        .filter(|(k, _, n)| k.starts_with("Cluster") && !allowed.iter().any(|(ak, an)| ak == k && an == n))
        .collect();
    assert!(
        extra.is_empty(),
        "cluster-wide RBAC in watched-namespace mode: {extra:?}"
    );
    let gateway_rules = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == format!("{}-{GATEWAY}", env.ns))
        .unwrap();
    assert_eq!(
        gateway_rules["rules"],
        json!([
            {"apiGroups": ["agentauth.dev"], "resources": ["clusterconnections"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
        ])
    );
    let deployments: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Deployment").collect();
    assert_eq!(deployments.len(), 2);
    for dep in deployments {
        assert!(
            dep["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array()
                .unwrap()
                .contains(&json!({"name": "WATCH_NAMESPACES", "value": format!("{w1},{w2},{}", env.ns)})),
            "{}",
            dep["metadata"]["name"]
        );
    }

    let (names, warnings) = dry_run(&t, manifests);
    assert_eq!(names.len(), ids.len(), "{names:?}\n{warnings}");
    assert!(!warnings.contains("PodSecurity"), "{warnings}");
}

// ---------------------------------------------------------------------------------------------
// install, upgrade, uninstall

/// Mode all (one Deployment); tests/chart/split.rs installs the default split and upgrades to it.
#[tokio::test]
async fn install_upgrade_and_uninstall_mode_all() {
    let env = setup("chart-life").await;
    let (client, ns, _, _) = env.parts();
    let t = Tools::cluster();
    let url = format!("gateway.url={GATEWAY_URL}");
    let notes = t.helm_release("install", ns, &[&url, "crds.install=false", "mode=all"]);
    assert!(
        notes.contains(&format!("{GATEWAY_URL}/oauth/callback")),
        "NOTES: {notes}"
    );

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    let scoped = format!("{ns}-{FULLNAME}");

    // Every object exists; the pod template is locked down and probed on the admin port.
    let mut objects = release_objects(ns);
    objects.retain(|o| !o.starts_with("poddisruptionbudget"));
    assert_eq!(
        present(&t, ns, &release_objects(ns)),
        objects,
        "no PDB with one replica"
    );
    let role = Api::<Role>::namespaced(client.clone(), ns)
        .get(FULLNAME)
        .await
        .unwrap();
    assert!(
        role.rules
            .unwrap()
            .iter()
            .any(|r| r.resources == Some(vec!["leases".into()]))
    );
    let crb = Api::<ClusterRoleBinding>::all(client.clone())
        .get(&scoped)
        .await
        .unwrap();
    let subject = &crb.subjects.unwrap()[0];
    assert_eq!(
        (subject.name.as_str(), subject.namespace.as_deref()),
        (FULLNAME, Some(ns))
    );

    let dep = deployments.get(FULLNAME).await.unwrap();
    let spec = dep.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
    let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(FULLNAME));
    let psc = pod.security_context.unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(65532));
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let c = &pod.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some("ghcr.io/agent-auth/agent-auth-operator:0.1.0")
    );
    assert_eq!(c.args.as_deref(), Some(&["run".to_owned()][..]));
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(65532));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let h = p.clone().unwrap().http_get.unwrap();
        (h.path.unwrap(), h.port)
    };
    assert_eq!(
        probe(&c.liveness_probe),
        ("/healthz".into(), IntOrString::String("admin".into()))
    );
    assert_eq!(
        probe(&c.readiness_probe),
        ("/readyz".into(), IntOrString::String("admin".into()))
    );
    let ports: BTreeMap<String, i32> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        BTreeMap::from([
            ("admin".into(), 8081),
            ("broker".into(), 8082),
            ("gateway".into(), 8080)
        ])
    );
    let res = c.resources.clone().unwrap();
    assert!(res.requests.is_some_and(|r| r.contains_key("memory")));
    assert!(res.limits.is_some_and(|r| r.contains_key("memory")));
    let env_vars = env_of(c);
    assert_eq!(env_value(c, "GATEWAY_URL").as_deref(), Some(GATEWAY_URL));
    assert_eq!(env_value(c, "LEADER_ELECTION").as_deref(), Some("false"));
    assert_eq!(env_value(c, "REFRESH_CONCURRENCY").as_deref(), Some("16"));
    assert_eq!(
        env_vars["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name",
        "{env_vars:?}"
    );
    assert_eq!(
        env_vars["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );

    let gw = services
        .get(&format!("{FULLNAME}-gateway"))
        .await
        .unwrap()
        .spec
        .unwrap();
    let gw_port = &gw.ports.unwrap()[0];
    assert_eq!(
        (gw_port.port, gw_port.target_port.clone()),
        (80, Some(IntOrString::String("gateway".into())))
    );
    let metrics = services
        .get(&format!("{FULLNAME}-metrics"))
        .await
        .unwrap()
        .spec
        .unwrap();
    let m_port = &metrics.ports.unwrap()[0];
    assert_eq!(
        (m_port.port, m_port.target_port.clone()),
        (8081, Some(IntOrString::String("admin".into())))
    );
    for selector in [gw.selector.unwrap(), metrics.selector.unwrap()] {
        assert!(
            selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "Service selects the pods"
        );
    }

    // Upgrade to two replicas: leader election, a rolling update and a PodDisruptionBudget.
    t.helm(&[
        "upgrade",
        RELEASE,
        CHART,
        "-n",
        ns,
        "--reuse-values",
        "--set",
        "replicaCount=2",
    ])
    .expect_ok();
    let dep = deployments.get(FULLNAME).await.unwrap().spec.unwrap();
    assert_eq!(dep.replicas, Some(2));
    assert_eq!(dep.strategy.unwrap().type_.as_deref(), Some("RollingUpdate"));
    let c = &dep.template.spec.unwrap().containers[0];
    assert_eq!(env_value(c, "LEADER_ELECTION").as_deref(), Some("true"));
    assert_eq!(
        env_value(c, "GATEWAY_URL").as_deref(),
        Some(GATEWAY_URL),
        "values reused"
    );
    assert_eq!(present(&t, ns, &release_objects(ns)), release_objects(ns));
    let pdb = pdbs.get(FULLNAME).await.unwrap().spec.unwrap();
    assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
    let pdb_sel = pdb.selector.unwrap().match_labels.unwrap();
    assert!(pdb_sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    let status: Value =
        serde_json::from_str(&t.helm(&["status", RELEASE, "-n", ns, "-o", "json"]).expect_ok()).unwrap();
    assert_eq!(
        (status["version"].as_i64(), status["info"]["status"].as_str()),
        (Some(2), Some("deployed"))
    );

    // Uninstall: every object gone, the CRDs untouched.
    t.helm(&["uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "60s"])
        .expect_ok();
    eventually(Duration::from_secs(30), "release objects deleted", || async {
        present(&t, ns, &release_objects(ns)).is_empty().then_some(())
    })
    .await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in CRD_NAMES {
        assert!(crds.get_opt(crd).await.unwrap().is_some(), "{crd} deleted");
    }
}

#[tokio::test]
async fn crds_installed_by_the_chart_are_kept_on_uninstall() {
    let env = setup("chart-crds").await;
    let ns = env.ns.as_str();
    let t = Tools::cluster();
    let url = format!("gateway.url={GATEWAY_URL}");
    // The CRDs exist already (installed by the test set-up, as by `agent-auth-operator crd | kubectl
    // apply`): without --take-ownership Helm refuses to adopt them, with it the release owns them.
    let err = t
        .helm(&["install", RELEASE, CHART, "-n", ns, "--set", &url])
        .expect_failure();
    assert!(
        err.contains("CustomResourceDefinition") && err.contains("exists"),
        "{err}"
    );
    t.helm(&[
        "install",
        RELEASE,
        CHART,
        "-n",
        ns,
        "--set",
        &url,
        "--take-ownership",
        "--timeout",
        "60s",
    ])
    .expect_ok();
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    for crd in CRD_NAMES {
        let c = crds.get(crd).await.unwrap();
        let annotations = c.meta().annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations
                .get("meta.helm.sh/release-namespace")
                .map(String::as_str),
            Some(ns),
            "{crd} adopted by the release"
        );
    }

    let out = t
        .helm(&["uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "60s"])
        .expect_ok();
    assert!(out.contains("kept due to the resource policy"), "{out}");
    for crd in CRD_NAMES {
        assert!(out.contains(crd), "{crd} not reported as kept: {out}");
        let c = crds.get(crd).await.unwrap();
        assert!(c.meta().deletion_timestamp.is_none(), "{crd} is being deleted");
    }
    // Custom resources still work.
    let accounts: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        ns,
        &kube::api::ApiResource::erase::<agent_auth_operator::api::ConnectedAccount>(&()),
    );
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount",
        "metadata": {"name": "still-here"},
        "spec": {"connectionRef": {"name": "gmail"}, "identifier": "someone"}
    }))
    .unwrap();
    accounts.create(&PostParams::default(), &obj).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// RBAC

#[tokio::test]
async fn rbac_cluster_wide_grants_what_the_operator_needs_and_nothing_more() {
    let env = setup("chart-rbac").await;
    let (own, other) = (env.ns.clone(), namespace(&env.client, "chart-rbac-o").await);
    let t = Tools::cluster();
    t.helm_release(
        "install",
        &own,
        &[&format!("gateway.url={GATEWAY_URL}"), "crds.install=false"],
    );

    let ca = "connectedaccounts.agentauth.dev";
    let co = "connections.agentauth.dev";
    let lease = "leases.coordination.k8s.io";
    let o = other.as_str();
    let s = own.as_str();
    let checks = [
        // The custom resources, in any namespace.
        check(true, &format!("list {ca} -A")),
        check(true, &format!("watch {ca} -A")),
        check(true, &format!("get {ca} -n {o}")),
        check(true, &format!("patch {ca} -n {o}")),
        check(true, &format!("patch {ca} --subresource=status -n {o}")),
        check(true, &format!("update {ca} --subresource=finalizers -n {o}")),
        check(true, &format!("list {co} -A")),
        check(true, &format!("watch {co} -n {o}")),
        check(true, &format!("patch {co} --subresource=status -n {o}")),
        check(false, &format!("create {ca} -n {o}")),
        check(false, &format!("delete {ca} -n {o}")),
        check(false, &format!("patch {co} -n {o}")),
        check(false, &format!("delete {co} -n {o}")),
        // Agent Secrets and client secrets anywhere; Events.
        check(true, "list secrets -A"),
        check(true, &format!("create secrets -n {o}")),
        check(true, &format!("delete secrets -n {o}")),
        check(true, &format!("get secrets -n {o}")),
        check(true, "create events.events.k8s.io -n default"),
        check(true, &format!("patch events.events.k8s.io -n {o}")),
        check(true, &format!("create events -n {o}")),
        check(false, &format!("delete events.events.k8s.io -n {o}")),
        // Its own namespace: signing key, credential copies, the leader Lease (by name).
        check(true, &format!("create secrets -n {s}")),
        check(true, &format!("watch secrets -n {s}")),
        check(true, &format!("create {lease} -n {s}")),
        check(true, &format!("get {lease}/agent-auth-operator -n {s}")),
        check(true, &format!("update {lease}/agent-auth-operator -n {s}")),
        check(false, &format!("update {lease}/someone-elses-lease -n {s}")),
        check(false, &format!("delete {lease}/agent-auth-operator -n {s}")),
        check(false, &format!("create {lease} -n {o}")),
        // Nothing else.
        check(true, "create tokenreviews.authentication.k8s.io"),
        check(true, "create subjectaccessreviews.authorization.k8s.io"),
        check(false, "delete namespaces"),
        check(false, "create namespaces"),
        check(false, "create clusterroles.rbac.authorization.k8s.io"),
        check(
            false,
            &format!("create rolebindings.rbac.authorization.k8s.io -n {s}"),
        ),
        check(false, "update customresourcedefinitions.apiextensions.k8s.io"),
        check(false, &format!("get pods -n {o}")),
        check(false, &format!("create pods -n {s}")),
        check(false, &format!("create pods/exec -n {s}")),
        check(false, &format!("get configmaps -n {o}")),
        check(false, "list nodes"),
    ];
    assert_permissions(&t, s, CONTROLLER, &checks);
    gateway_rbac::assert_gateway_rights_cluster_wide(&t, s, o);
}

#[tokio::test]
async fn rbac_for_watched_namespaces_stays_inside_them() {
    let env = setup("chart-rbacw").await;
    let own = env.ns.clone();
    let (w1, w2, un) = (
        namespace(&env.client, "chart-rbacw-a").await,
        namespace(&env.client, "chart-rbacw-b").await,
        namespace(&env.client, "chart-rbacw-u").await,
    );
    let t = Tools::cluster();
    t.helm_release(
        "install",
        &own,
        &[
            &format!("gateway.url={GATEWAY_URL}"),
            "crds.install=false",
            &format!("watchNamespaces={{{w1},{w2}}}"),
        ],
    );
    let scoped = format!("{own}-{FULLNAME}");
    assert!(
        Api::<ClusterRole>::all(env.client.clone())
            .get_opt(&scoped)
            .await
            .unwrap()
            .is_none()
            && Api::<ClusterRoleBinding>::all(env.client.clone())
                .get_opt(&scoped)
                .await
                .unwrap()
                .is_none(),
        "no cluster-wide RBAC in watched-namespace mode"
    );

    let ca = "connectedaccounts.agentauth.dev";
    let co = "connections.agentauth.dev";
    let lease = "leases.coordination.k8s.io";
    let s = own.as_str();
    let mut checks = vec![];
    for w in [&w1, &w2] {
        checks.extend([
            check(true, &format!("list {ca} -n {w}")),
            check(true, &format!("watch {ca} -n {w}")),
            check(true, &format!("patch {ca} -n {w}")),
            check(true, &format!("patch {ca} --subresource=status -n {w}")),
            check(true, &format!("update {ca} --subresource=finalizers -n {w}")),
            check(true, &format!("list {co} -n {w}")),
            check(true, &format!("patch {co} --subresource=status -n {w}")),
            check(true, &format!("get secrets -n {w}")),
            check(true, &format!("create secrets -n {w}")),
            check(true, &format!("delete secrets -n {w}")),
            check(true, &format!("create events.events.k8s.io -n {w}")),
            check(false, &format!("create {lease} -n {w}")),
            check(false, &format!("get pods -n {w}")),
        ]);
    }
    checks.extend([
        // POST /verify: TokenReview and SubjectAccessReview.
        check(true, "create tokenreviews.authentication.k8s.io"),
        check(true, "create subjectaccessreviews.authorization.k8s.io"),
        // Its own namespace.
        check(true, &format!("create secrets -n {s}")),
        check(true, &format!("list secrets -n {s}")),
        check(true, &format!("create {lease} -n {s}")),
        check(true, &format!("patch {lease}/agent-auth-operator -n {s}")),
        // A namespace it does not watch, and the cluster.
        check(false, &format!("get secrets -n {un}")),
        check(false, &format!("list secrets -n {un}")),
        check(false, &format!("create secrets -n {un}")),
        check(false, &format!("list {ca} -n {un}")),
        check(false, &format!("patch {ca} --subresource=status -n {un}")),
        check(false, &format!("create events.events.k8s.io -n {un}")),
        check(false, &format!("list {ca} -A")),
        check(false, "list secrets -A"),
        check(false, &format!("list {ca} -n {s}")),
        check(true, "list clusterconnections.agentauth.dev"),
        check(
            true,
            "patch clusterconnections.agentauth.dev --subresource=status",
        ),
        check(false, "create clusterconnections.agentauth.dev"),
        check(false, "update namespaces"),
        check(true, "create tokenreviews.authentication.k8s.io"),
        check(true, "create subjectaccessreviews.authorization.k8s.io"),
        check(false, "delete namespaces"),
        check(false, "create clusterroles.rbac.authorization.k8s.io"),
        check(false, &format!("create pods -n {s}")),
    ]);
    assert_permissions(&t, s, CONTROLLER, &checks);
    gateway_rbac::assert_gateway_rights_in_watched_namespaces(&t, s, &[&w1, &w2], &un);
}

// ---------------------------------------------------------------------------------------------
// the operator binary with nothing but the chart's ServiceAccount and environment

/// A kubeconfig for the test cluster that authenticates with `token` instead of the admin cert.
fn token_kubeconfig(dir: &Path, token: &str) -> PathBuf {
    let admin = agentauth_testcluster::shared().unwrap().kubeconfig_path();
    let mut kc: Value = serde_saphyr::from_str(&std::fs::read_to_string(admin).unwrap()).unwrap();
    for user in kc["users"].as_array_mut().unwrap() {
        user["user"] = json!({"token": token});
    }
    let path = dir.join("sa-kubeconfig");
    std::fs::write(&path, serde_json::to_string(&kc).unwrap()).unwrap(); // JSON is YAML
    path
}

/// Installs the chart into `ns` (extra `sets`), then runs `agent-auth-operator` as its pod would:
/// the Deployment's arguments and environment (downward API values filled in, listeners moved to
/// free loopback ports) and a token of its ServiceAccount. Creates a Connection and an account in
/// `work_ns`, waits for the operator to serve them and to let the account go; fails on any
/// `forbidden` in its log.
async fn operator_serves_with_chart_rbac(client: &kube::Client, ns: &str, work_ns: &str, sets: &[&str]) {
    let t = Tools::cluster();
    let url = format!("gateway.url={GATEWAY_URL}");
    // Mode all: one process with the controller's rights (split roles: tests/chart/split.rs).
    let mut all = vec![
        url.as_str(),
        "crds.install=false",
        "leaderElection.enabled=true",
        "mode=all",
    ];
    all.extend_from_slice(sets);
    t.helm_release("install", ns, &all);

    let token = t
        .kubectl(&["create", "token", FULLNAME, "-n", ns, "--duration=1h"], None)
        .expect_ok();
    let dir = agentauth_testcluster::shared()
        .unwrap()
        .dir()
        .join(format!("chart-op-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = token_kubeconfig(&dir, token.trim());

    let dep = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(FULLNAME)
        .await
        .unwrap();
    let c = dep.spec.unwrap().template.spec.unwrap().containers[0].clone();
    let pod_name = format!("{FULLNAME}-0");
    let (gw, admin, broker) = (
        agentauth_testcluster::free_port().unwrap(),
        agentauth_testcluster::free_port().unwrap(),
        agentauth_testcluster::free_port().unwrap(),
    );
    let mut vars: Vec<(String, String)> = vec![];
    for (name, e) in env_of(&c) {
        let value = match e.pointer("/valueFrom/fieldRef/fieldPath").and_then(Value::as_str) {
            Some("metadata.name") => pod_name.clone(),
            Some("metadata.namespace") => ns.to_owned(),
            Some(other) => panic!("unexpected downward API field {other}"),
            None => e["value"].as_str().unwrap_or_default().to_owned(),
        };
        let value = match name.as_str() {
            "GATEWAY_ADDR" => format!("127.0.0.1:{gw}"),
            "ADMIN_ADDR" => format!("127.0.0.1:{admin}"),
            "BROKER_ADDR" => format!("127.0.0.1:{broker}"),
            "LOG_LEVEL" => "info,agent_auth_operator=debug,kube_runtime=debug".to_owned(),
            _ => value,
        };
        vars.push((name, value));
    }
    vars.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let op = RefCell::new(
        agentauth_testcluster::Proc::spawn(
            &dir,
            "operator",
            Path::new(env!("CARGO_BIN_EXE_agent-auth-operator")),
            &c.args.clone().unwrap_or_default(),
            &vars,
        )
        .unwrap(),
    );
    let alive = || {
        let mut op = op.borrow_mut();
        if let Some(status) = op.exited() {
            panic!("operator exited ({status}):\n{}", op.log_tail(40));
        }
    };

    // Leader election through the Role in its own namespace, and the signing key.
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    eventually(
        Duration::from_secs(60),
        "the operator holds the Lease",
        || async {
            alive();
            let l = leases.get_opt("agent-auth-operator").await.unwrap()?;
            (l.spec?.holder_identity? == pod_name).then_some(())
        },
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    eventually(Duration::from_secs(30), "the signing key", || async {
        alive();
        secrets
            .get_opt("agent-auth-operator-signing-key")
            .await
            .unwrap()
            .map(|_| ())
    })
    .await;

    // A Connection and an account: status, link, finalizer, an Event.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "google-oauth", "labels": {"agentauth.dev/usable": "true"}},
        "stringData": {"client-secret": "not-a-real-secret"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), work_ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let ar = |kind: &str, plural: &str| kube::api::ApiResource {
        group: "agentauth.dev".into(),
        version: "v1alpha1".into(),
        api_version: "agentauth.dev/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let conns: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), work_ns, &ar("Connection", "connections"));
    let accounts: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        work_ns,
        &ar("ConnectedAccount", "connectedaccounts"),
    );
    let conn: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection",
        "metadata": {"name": "gmail"},
        "spec": {"authType": "OAuth2", "provider": "google", "oauth2": {
            // One OAuth client per namespace: the two operator tests run side by side.
            "clientId": format!("{work_ns}.apps.googleusercontent.com"),
            "clientSecretRef": {"name": "google-oauth", "key": "client-secret"},
            "scopes": ["https://www.googleapis.com/auth/gmail.readonly"],
        }}
    }))
    .unwrap();
    conns.create(&PostParams::default(), &conn).await.unwrap();
    let acc: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount",
        "metadata": {"name": "alice-gmail"},
        "spec": {"connectionRef": {"name": "gmail"}, "identifier": "alice@example.com"}
    }))
    .unwrap();
    accounts.create(&PostParams::default(), &acc).await.unwrap();

    let link = eventually(
        Duration::from_secs(90),
        "the account waits for its user",
        || async {
            alive();
            let a = serde_json::to_value(accounts.get("alice-gmail").await.unwrap()).unwrap();
            if a.pointer("/status/state")? != "PENDING_AUTH" {
                return None;
            }
            a.pointer("/status/authorizationLink")?
                .as_str()
                .map(str::to_owned)
        },
    )
    .await;
    assert!(link.starts_with(&format!("{GATEWAY_URL}/connect/")), "{link}");
    // The Connection's status is written by its own controller, independently of the account.
    let redirect = eventually(
        Duration::from_secs(30),
        "the Connection's redirect URI",
        || async {
            let c = serde_json::to_value(conns.get("gmail").await.ok()?).ok()?;
            c.pointer("/status/redirectUri")?.as_str().map(str::to_owned)
        },
    )
    .await;
    assert_eq!(
        redirect,
        format!("{GATEWAY_URL}/oauth/callback/ns/{work_ns}/gmail")
    );
    let a = accounts.get("alice-gmail").await.unwrap();
    assert!(
        a.meta().finalizers.clone().unwrap_or_default().is_empty(),
        "no finalizer while nothing is stored for the account"
    );
    // A new account's first link has no Event; a re-issued one does (the Events RBAC at work).
    accounts
        .patch(
            "alice-gmail",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"agentauth.dev/reauthorize": "1"}}})),
        )
        .await
        .unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), work_ns);
    eventually(Duration::from_secs(30), "an Event about the account", || async {
        alive();
        let list = events.list(&Default::default()).await.unwrap();
        list.items
            .iter()
            .any(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("alice-gmail"))
            .then_some(())
    })
    .await;

    // Deletion: the operator removes its finalizer.
    accounts
        .delete("alice-gmail", &DeleteParams::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "the account deleted", || async {
        alive();
        accounts
            .get_opt("alice-gmail")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;

    let mut op = op.into_inner();
    op.kill();
    let log = std::fs::read_to_string(op.log_path()).unwrap_or_default();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator hit a permission it lacks:\n{log}"
    );
}

/// Both modes in one test, one after the other: a cluster-wide operator would also serve the
/// watched-namespace operator's accounts.
#[tokio::test]
async fn operator_runs_with_nothing_but_the_chart_rbac() {
    let env = setup("chart-op").await;
    let work = namespace(&env.client, "chart-op-w").await;
    let watch = format!("watchNamespaces={{{work}}}");
    operator_serves_with_chart_rbac(&env.client, &env.ns, &work, &[&watch]).await;

    let (own, work) = (
        namespace(&env.client, "chart-op2").await,
        namespace(&env.client, "chart-op2-w").await,
    );
    operator_serves_with_chart_rbac(&env.client, &own, &work, &[]).await;
}
