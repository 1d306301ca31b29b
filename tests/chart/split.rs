//! The chart's default `mode: split`: the public gateway and the controller in Deployments and
//! ServiceAccounts of their own (issue #17).
//! - rendered: which pod gets which role, port, identity, Secret-free volume and NetworkPolicy;
//! - an upgrade from the single Deployment of `mode: all` to the split, then uninstall.
//!
//! The gateway's rights on the API server are in `gateway_rbac.rs`.

use super::*;

/// The one document of `kind` named `name`.
fn doc<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", identities(docs)))
}

/// `name -> value` (or the whole entry, for `valueFrom`) of the first container's environment.
fn env(dep: &Value) -> BTreeMap<String, Value> {
    dep["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let v = e.get("value").cloned().unwrap_or_else(|| e.clone());
            (e["name"].as_str().unwrap().to_owned(), v)
        })
        .collect()
}

/// `name -> containerPort` of the first container.
fn ports(dep: &Value) -> BTreeMap<String, i64> {
    dep["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Whether a label selector (a JSON map) matches a Deployment's pod template.
fn selects(selector: &Value, dep: &Value) -> bool {
    let labels = &dep["spec"]["template"]["metadata"]["labels"];
    selector.as_object().unwrap().iter().all(|(k, v)| &labels[k] == v)
}

#[test]
fn split_is_the_default_and_gives_each_component_its_own_pod_identity_and_ports() {
    let t = Tools::offline();
    let docs = documents(&t.template("ops", &[]).expect_ok());
    let ids = identities(&docs);
    let kinds = |kind: &str| -> Vec<String> {
        let mut v: Vec<String> = ids
            .iter()
            .filter(|(k, _, _)| k == kind)
            .map(|(_, _, n)| n.clone())
            .collect();
        v.sort();
        v
    };
    assert_eq!(kinds("Deployment"), [CONTROLLER, GATEWAY]);
    assert_eq!(kinds("ServiceAccount"), [CONTROLLER, GATEWAY]);
    assert_eq!(kinds("NetworkPolicy"), [CONTROLLER, GATEWAY]);
    let mut services = ["broker", "gateway", "intake", "metrics"].map(|s| format!("{FULLNAME}-{s}"));
    services.sort();
    assert_eq!(kinds("Service"), services);

    let (ctl, gw) = (
        doc(&docs, "Deployment", CONTROLLER),
        doc(&docs, "Deployment", GATEWAY),
    );
    let pod = |d: &Value| d["spec"]["template"]["spec"].clone();
    assert_eq!(pod(ctl)["serviceAccountName"], CONTROLLER);
    assert_eq!(pod(gw)["serviceAccountName"], GATEWAY);
    let args = |d: &Value| d["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    assert_eq!(args(ctl), json!(["run", "--role=controller"]));
    assert_eq!(args(gw), json!(["run", "--role=gateway"]));
    assert_eq!(
        ports(ctl),
        BTreeMap::from([
            ("admin".into(), 8081),
            ("broker".into(), 8082),
            ("intake".into(), 8083)
        ])
    );
    assert_eq!(
        ports(gw),
        BTreeMap::from([("admin".into(), 8081), ("gateway".into(), 8080)])
    );
    // Controller pods must never be gateway pods: distinct selectors, neither matching the other.
    let sel = |d: &Value| d["spec"]["selector"]["matchLabels"].clone();
    assert!(selects(&sel(ctl), ctl) && !selects(&sel(ctl), gw));
    assert!(selects(&sel(gw), gw) && !selects(&sel(gw), ctl));
    assert_eq!(
        ctl["spec"]["strategy"]["type"], "Recreate",
        "one un-elected controller"
    );
    assert_eq!(
        gw["spec"]["strategy"]["type"], "RollingUpdate",
        "the gateway is stateless"
    );

    // The handoff: the gateway calls the intake Service with a token of its own audience, and the
    // controller admits only the gateway's ServiceAccount.
    let (ce, ge) = (env(ctl), env(gw));
    assert_eq!(ce["INTAKE_ADDR"], "0.0.0.0:8083");
    assert_eq!(ce["INTAKE_ALLOW"], format!("system:serviceaccount:ops:{GATEWAY}"));
    assert_eq!(ce["INTAKE_AUDIENCE"], "agentauth.dev/intake");
    assert_eq!(ge["INTAKE_URL"], format!("http://{FULLNAME}-intake.ops.svc:8083"));
    assert_eq!(
        ge["INTAKE_TOKEN_FILE"],
        "/var/run/secrets/agentauth.dev/intake/token"
    );
    assert_eq!(ge["INTAKE_AUDIENCE"], "agentauth.dev/intake");
    assert_eq!(
        pod(gw)["volumes"],
        json!([{"name": "intake-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": "agentauth.dev/intake", "expirationSeconds": 3600, "path": "token"}}]}}]),
        "the gateway mounts its intake token and nothing else"
    );
    assert_eq!(
        pod(gw)["containers"][0]["volumeMounts"],
        json!([{"name": "intake-token", "mountPath": "/var/run/secrets/agentauth.dev/intake", "readOnly": true}])
    );
    // Each process gets only its own role's settings; both the public URL and secure metrics.
    for key in [
        "BROKER_ADDR",
        "LEADER_ELECTION",
        "REFRESH_CONCURRENCY",
        "INTAKE_ALLOW",
    ] {
        assert!(ce.contains_key(key) && !ge.contains_key(key), "{key}");
    }
    assert!(ge.contains_key("GATEWAY_ADDR") && !ce.contains_key("GATEWAY_ADDR"));
    for e in [&ce, &ge] {
        assert_eq!(e["GATEWAY_URL"], GATEWAY_URL);
        assert_eq!(e["METRICS_AUTH"], "true");
        assert_eq!(e["METRICS_ACCOUNT_LABELS"], "false");
    }

    // Services: the public one (same name as in mode all) on gateway pods, broker and intake on
    // controller pods, metrics on both.
    let svc = |s: &str| doc(&docs, "Service", &format!("{FULLNAME}-{s}"))["spec"]["selector"].clone();
    assert!(selects(&svc("gateway"), gw) && !selects(&svc("gateway"), ctl));
    for s in ["broker", "intake"] {
        assert!(selects(&svc(s), ctl) && !selects(&svc(s), gw), "{s}");
    }
    assert!(selects(&svc("metrics"), ctl) && selects(&svc("metrics"), gw));
    assert_eq!(
        doc(&docs, "Service", &format!("{FULLNAME}-intake"))["spec"]["ports"],
        json!([{"name": "intake", "port": 8083, "targetPort": "intake", "protocol": "TCP"}])
    );
}

#[test]
fn split_network_policies_limit_both_directions() {
    let t = Tools::offline();
    let docs = documents(&t.template("ops", &[]).expect_ok());
    let (ctl, gw) = (
        doc(&docs, "Deployment", CONTROLLER),
        doc(&docs, "Deployment", GATEWAY),
    );
    let (pc, pg) = (
        doc(&docs, "NetworkPolicy", CONTROLLER),
        doc(&docs, "NetworkPolicy", GATEWAY),
    );
    assert!(selects(&pg["spec"]["podSelector"]["matchLabels"], gw));
    assert!(!selects(&pg["spec"]["podSelector"]["matchLabels"], ctl));
    assert!(selects(&pc["spec"]["podSelector"]["matchLabels"], ctl));
    for p in [pc, pg] {
        assert_eq!(p["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    }
    let ingress_ports = |p: &Value| -> Vec<String> {
        p["spec"]["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["ports"].as_array().unwrap().iter())
            .map(|port| port["port"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ingress_ports(pg), ["gateway", "admin"]);
    assert_eq!(ingress_ports(pc), ["broker", "intake", "admin"]);
    // The broker admits in-cluster pods; the intake only gateway pods.
    assert_eq!(
        pc["spec"]["ingress"][0]["from"],
        json!([{"namespaceSelector": {}}])
    );
    let intake_from = &pc["spec"]["ingress"][1]["from"];
    assert_eq!(intake_from.as_array().unwrap().len(), 1);
    assert!(selects(&intake_from[0]["podSelector"]["matchLabels"], gw));
    assert!(!selects(&intake_from[0]["podSelector"]["matchLabels"], ctl));

    // The gateway's egress: the API server, DNS, the controller's intake; every rule has a `to`.
    let egress = |p: &Value| p["spec"]["egress"].as_array().unwrap().clone();
    let ge = egress(pg);
    assert_eq!(ge.len(), 3, "{ge:?}");
    assert!(
        ge.iter().all(|r| r.get("to").is_some()),
        "no egress to anywhere: {ge:?}"
    );
    let api = &ge[0];
    assert_eq!(
        api["to"],
        json!([{"ipBlock": {"cidr": "10.0.0.0/8"}}, {"ipBlock": {"cidr": "172.16.0.0/12"}}, {"ipBlock": {"cidr": "192.168.0.0/16"}}])
    );
    assert_eq!(
        api["ports"],
        json!([{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}])
    );
    assert_eq!(
        ge[1]["to"],
        json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}])
    );
    assert_eq!(
        ge[1]["ports"],
        json!([{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}])
    );
    assert!(selects(&ge[2]["to"][0]["podSelector"]["matchLabels"], ctl));
    assert_eq!(ge[2]["ports"], json!([{"port": 8083, "protocol": "TCP"}]));
    // The controller's: the same two, then providers on 443 anywhere.
    let ce = egress(pc);
    assert_eq!(ce[..2], ge[..2]);
    assert_eq!(ce[2], json!({"ports": [{"port": 443, "protocol": "TCP"}]}));
    assert_eq!(ce.len(), 3);

    // Values: the API server's address, scrapers, extra egress for the controller only.
    let docs = documents(
        &t.template(
            "ops",
            &[
                "networkPolicy.apiServer.cidrs={203.0.113.7/32}",
                "networkPolicy.apiServer.ports={6443}",
                "networkPolicy.admin.from[0].namespaceSelector.matchLabels.team=monitoring",
                "networkPolicy.extraEgress[0].to[0].ipBlock.cidr=198.51.100.0/24",
                "networkPolicy.extraEgress[0].ports[0].port=8443",
            ],
        )
        .expect_ok(),
    );
    let (pc, pg) = (
        doc(&docs, "NetworkPolicy", CONTROLLER),
        doc(&docs, "NetworkPolicy", GATEWAY),
    );
    for p in [pc, pg] {
        assert_eq!(
            p["spec"]["egress"][0],
            json!({"to": [{"ipBlock": {"cidr": "203.0.113.7/32"}}], "ports": [{"port": 6443, "protocol": "TCP"}]})
        );
        let admin = p["spec"]["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["ports"][0]["port"] == "admin")
            .unwrap();
        assert_eq!(
            admin["from"],
            json!([{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}])
        );
    }
    assert_eq!(
        pc["spec"]["egress"][3],
        json!({"to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}], "ports": [{"port": 8443}]})
    );
    assert_eq!(pg["spec"]["egress"].as_array().unwrap().len(), 3);

    // Policies off: the broker port alone stays narrowed, on controller pods.
    let docs = documents(&t.template("ops", &["networkPolicy.enabled=false"]).expect_ok());
    let policies: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "NetworkPolicy").collect();
    assert_eq!(policies.len(), 1);
    let broker = policies[0];
    assert_eq!(broker["metadata"]["name"], format!("{FULLNAME}-broker"));
    assert!(selects(
        &broker["spec"]["podSelector"]["matchLabels"],
        doc(&docs, "Deployment", CONTROLLER)
    ));
    assert_eq!(broker["spec"]["policyTypes"], json!(["Ingress"]));
}

#[test]
fn split_options_mode_all_encryption_metrics_and_replicas() {
    let t = Tools::offline();

    // mode all: one Deployment, one ServiceAccount, no intake, the Services on its pods.
    let docs = documents(&t.template("ops", &["mode=all"]).expect_ok());
    let ids = identities(&docs);
    let named = |kind: &str| -> Vec<&str> {
        ids.iter()
            .filter(|(k, _, _)| k == kind)
            .map(|(_, _, n)| n.as_str())
            .collect()
    };
    assert_eq!(named("Deployment"), [FULLNAME]);
    assert_eq!(named("ServiceAccount"), [FULLNAME]);
    assert!(!named("Service").contains(&format!("{FULLNAME}-intake").as_str()));
    let dep = doc(&docs, "Deployment", FULLNAME);
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["run"])
    );
    assert!(!env(dep).contains_key("INTAKE_URL"));
    for s in ["gateway", "broker", "metrics"] {
        let svc = doc(&docs, "Service", &format!("{FULLNAME}-{s}"));
        assert!(selects(&svc["spec"]["selector"], dep), "{s}");
    }

    // Encryption keys: flags, volumes and mounts on the controller only.
    let docs = documents(
        &t.template(
            "ops",
            &[
                "encryption.keks[0].id=k1",
                "encryption.keks[0].path=/keys/a/k1",
                "encryption.keks[1].id=k2",
                "encryption.keks[1].path=/keys/b/k2",
                "encryption.primary=k2",
                "encryption.volumes[0].name=keys",
                "encryption.volumes[0].csi.driver=secrets-store.csi.k8s.io",
                "encryption.volumeMounts[0].name=keys",
                "encryption.volumeMounts[0].mountPath=/keys",
                "encryption.volumeMounts[0].readOnly=true",
            ],
        )
        .expect_ok(),
    );
    let (ctl, gw) = (
        doc(&docs, "Deployment", CONTROLLER),
        doc(&docs, "Deployment", GATEWAY),
    );
    assert_eq!(env(ctl)["KEKS"], "k1=/keys/a/k1,k2=/keys/b/k2");
    assert_eq!(env(ctl)["KEK_PRIMARY"], "k2");
    assert_eq!(
        ctl["spec"]["template"]["spec"]["volumes"],
        json!([{"name": "keys", "csi": {"driver": "secrets-store.csi.k8s.io"}}])
    );
    assert_eq!(
        ctl["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/keys"
    );
    assert!(!env(gw).contains_key("KEKS") && !env(gw).contains_key("KEK_PRIMARY"));
    let gw_volumes = gw["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(!gw_volumes.contains("keys"), "{gw_volumes}");

    // Metrics: plain when not secure; per-account labels when asked; the reader role and its
    // binding; the ServiceMonitor sends a token only when /metrics wants one.
    let monitor = |sets: &[&str]| {
        let mut all = vec!["metrics.serviceMonitor.enabled=true"];
        all.extend_from_slice(sets);
        let docs = documents(&t.template("ops", &all).expect_ok());
        let sm = doc(&docs, "ServiceMonitor", FULLNAME)["spec"]["endpoints"][0].clone();
        (docs, sm)
    };
    let (docs, sm) = monitor(&[
        "metrics.reader.subjects[0].kind=ServiceAccount",
        "metrics.reader.subjects[0].name=prometheus",
        "metrics.reader.subjects[0].namespace=monitoring",
    ]);
    assert_eq!(
        sm["bearerTokenFile"],
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    );
    let reader = format!("ops-{FULLNAME}-metrics-reader");
    assert_eq!(
        doc(&docs, "ClusterRole", &reader)["rules"],
        json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}])
    );
    let crb = doc(&docs, "ClusterRoleBinding", &reader);
    assert_eq!(crb["roleRef"]["name"], reader.as_str());
    assert_eq!(
        crb["subjects"],
        json!([{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}])
    );
    let (_, sm) = monitor(&[
        "metrics.serviceMonitor.authorization.type=Bearer",
        "metrics.serviceMonitor.authorization.credentials.name=scrape",
        "metrics.serviceMonitor.authorization.credentials.key=token",
    ]);
    assert_eq!(
        sm["authorization"],
        json!({"type": "Bearer", "credentials": {"name": "scrape", "key": "token"}})
    );
    assert!(sm.get("bearerTokenFile").is_none());
    let (docs, sm) = monitor(&["metrics.secure=false", "metrics.accountLabels=true"]);
    assert!(sm.get("bearerTokenFile").is_none() && sm.get("authorization").is_none());
    for name in [CONTROLLER, GATEWAY] {
        let e = env(doc(&docs, "Deployment", name));
        assert_eq!(
            (e["METRICS_AUTH"].as_str(), e["METRICS_ACCOUNT_LABELS"].as_str()),
            (Some("false"), Some("true"))
        );
    }
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "ClusterRoleBinding" && d["metadata"]["name"] == reader),
        "no binding without subjects"
    );

    // Replicas and PodDisruptionBudgets per component; the Ingress on the gateway Service.
    let docs = documents(
        &t.template(
            "ops",
            &["replicaCount=2", "gateway.replicaCount=3", "ingress.enabled=true"],
        )
        .expect_ok(),
    );
    let (ctl, gw) = (
        doc(&docs, "Deployment", CONTROLLER),
        doc(&docs, "Deployment", GATEWAY),
    );
    assert_eq!(
        (ctl["spec"]["replicas"].as_i64(), gw["spec"]["replicas"].as_i64()),
        (Some(2), Some(3))
    );
    assert_eq!(env(ctl)["LEADER_ELECTION"], "true");
    for (name, dep) in [(CONTROLLER, ctl), (GATEWAY, gw)] {
        let pdb = doc(&docs, "PodDisruptionBudget", name);
        assert!(selects(&pdb["spec"]["selector"]["matchLabels"], dep), "{name}");
    }
    let ing = doc(&docs, "Ingress", &format!("{FULLNAME}-gateway"));
    assert_eq!(
        ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
        format!("{FULLNAME}-gateway")
    );
    let docs = documents(&t.template("ops", &["replicaCount=2"]).expect_ok());
    let pdbs: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"] == "PodDisruptionBudget")
        .collect();
    assert_eq!(pdbs.len(), 1, "no gateway PDB with one gateway replica");
}

// ---------------------------------------------------------------------------------------------
// upgrade from the single Deployment

#[tokio::test]
async fn upgrade_from_mode_all_to_split_then_uninstall() {
    let env = setup("chart-split").await;
    let (client, ns, _, _) = env.parts();
    let t = Tools::cluster();
    let url = format!("gateway.url={GATEWAY_URL}");
    t.helm_release("install", ns, &[&url, "crds.install=false", "mode=all"]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    assert!(deployments.get_opt(FULLNAME).await.unwrap().is_some());

    // The upgrade docs/helm.md describes: the same release, `mode: split`.
    let notes = t
        .helm(&[
            "upgrade",
            RELEASE,
            CHART,
            "-n",
            ns,
            "--reuse-values",
            "--set",
            "mode=split",
            "--timeout",
            "60s",
        ])
        .expect_ok();
    assert!(notes.contains(&format!("deployment/{GATEWAY}")), "NOTES: {notes}");
    let names = |list: Vec<Deployment>| -> Vec<String> {
        let mut v: Vec<String> = list.into_iter().filter_map(|d| d.metadata.name).collect();
        v.sort();
        v
    };
    let lp = kube::api::ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}"));
    assert_eq!(
        names(deployments.list(&lp).await.unwrap().items),
        [CONTROLLER, GATEWAY],
        "the single Deployment replaced by the two"
    );
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    assert!(
        sas.get_opt(FULLNAME).await.unwrap().is_none(),
        "the old ServiceAccount removed"
    );
    for sa in [CONTROLLER, GATEWAY] {
        assert!(sas.get_opt(sa).await.unwrap().is_some(), "{sa}");
    }
    // The public Service kept its name and now selects only gateway pods.
    let template_labels = |d: Deployment| d.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    let gw_labels = template_labels(deployments.get(GATEWAY).await.unwrap());
    let ctl_labels = template_labels(deployments.get(CONTROLLER).await.unwrap());
    let selector = |name: String| {
        let services = services.clone();
        async move { services.get(&name).await.unwrap().spec.unwrap().selector.unwrap() }
    };
    let matches = |sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>| {
        sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    let gw_sel = selector(format!("{FULLNAME}-gateway")).await;
    assert!(matches(&gw_sel, &gw_labels) && !matches(&gw_sel, &ctl_labels));
    for s in ["broker", "intake"] {
        let sel = selector(format!("{FULLNAME}-{s}")).await;
        assert!(matches(&sel, &ctl_labels) && !matches(&sel, &gw_labels), "{s}");
    }
    // Applied as rendered: the API server kept the gateway's projected token and policies.
    let gw_pod = deployments
        .get(GATEWAY)
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let projected = gw_pod.volumes.unwrap()[0].projected.clone().unwrap();
    let token = projected.sources.unwrap()[0]
        .service_account_token
        .clone()
        .unwrap();
    assert_eq!(
        (
            token.audience.as_deref(),
            token.expiration_seconds,
            token.path.as_str()
        ),
        (Some("agentauth.dev/intake"), Some(3600), "token")
    );
    let policies = t
        .kubectl(&["get", "networkpolicies", "-n", ns, "-o", "name"], None)
        .expect_ok();
    let mut policies: Vec<&str> = policies.lines().collect();
    policies.sort();
    assert_eq!(
        policies,
        [
            format!("networkpolicy.networking.k8s.io/{CONTROLLER}"),
            format!("networkpolicy.networking.k8s.io/{GATEWAY}"),
        ]
    );

    t.helm(&["uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "60s"])
        .expect_ok();
    eventually(Duration::from_secs(30), "the split objects deleted", || async {
        let left = deployments.list(&lp).await.unwrap().items.len()
            + sas.list(&lp).await.unwrap().items.len()
            + services.list(&lp).await.unwrap().items.len();
        (left == 0).then_some(())
    })
    .await;
}
