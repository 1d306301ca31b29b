//! The gateway and the controller as two processes (`run --role=gateway` / `--role=controller`),
//! the gateway under nothing but its own ServiceAccount's RBAC from the chart.
//!
//! What a user sees: the whole OAuth (Dex), hosted-form and verification flows work through the
//! split pair; `kubectl auth can-i` proves the gateway's identity cannot read any Secret but the
//! link signing key, nor write anything; the controller's intake refuses every caller but the
//! gateway.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::path::{Path, PathBuf};

use agent_auth_operator::api::{AccountState, ConnectedAccount};
use agentauth_testcluster::cli::Tool;
use agentauth_testcluster::free_port;
use common::dex::{Dex, DexOptions};
use common::fixtures::{account, dex_connection, link, sign_in, wait_account, wait_state};
use common::forms::{self, app_api, crm_spec, form_connection, platform_token, submit};
use common::operator::{OPERATOR_NS, Operator, OperatorOptions, platform_origin, prepare_cluster};
use common::{identity, setup};
use serde_json::json;

/// The chart's release name in this test; the gateway's ServiceAccount is `<release>-agent-auth-operator-gateway`.
const RELEASE: &str = "split";
const GATEWAY_SA: &str = "split-agent-auth-operator-gateway";

/// The chart's gateway RBAC (ServiceAccount, roles, bindings), applied to the test cluster.
fn apply_gateway_rbac() {
    let cluster = common::cluster().unwrap();
    let helm = Tool::helm(cluster.kubeconfig_path()).unwrap();
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/agent-auth-operator");
    let rendered = helm
        .run(
            &[
                "template",
                RELEASE,
                &chart.display().to_string(),
                "--namespace",
                OPERATOR_NS,
                "--set",
                "gateway.url=https://connect.example.com",
            ],
            None,
        )
        .unwrap()
        .expect_ok();
    let kinds = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    let items: Vec<serde_json::Value> = serde_saphyr::from_multiple::<serde_json::Value>(&rendered)
        .unwrap()
        .into_iter()
        .filter(|d| kinds.contains(&d["kind"].as_str().unwrap_or_default()))
        .filter(|d| {
            d["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .contains("gateway")
        })
        .collect();
    assert!(
        items.len() >= 4,
        "the chart renders the gateway's ServiceAccount and RBAC:\n{rendered}"
    );
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
    let kubectl = Tool::kubectl(cluster.kubeconfig_path()).unwrap();
    kubectl
        .run(
            &["apply", "--server-side", "--field-manager=split-test", "-f", "-"],
            Some(&list),
        )
        .unwrap()
        .expect_ok();
}

/// A kubeconfig that authenticates as `token` (the cluster's server and CA, no client certificate).
fn token_kubeconfig(dir: &Path, token: &str) -> PathBuf {
    let cluster = common::cluster().unwrap();
    let admin = std::fs::read_to_string(cluster.kubeconfig_path()).unwrap();
    let (head, rest) = admin.split_once("users:").unwrap();
    let (_, contexts) = rest.split_once("contexts:").unwrap();
    let text = format!("{head}users:\n- name: admin\n  user:\n    token: {token}\ncontexts:{contexts}");
    let path = dir.join("gateway.kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

/// `kubectl auth can-i` as the gateway's ServiceAccount: true for "yes".
fn gateway_can(args: &[&str]) -> bool {
    let cluster = common::cluster().unwrap();
    let kubectl = Tool::kubectl(cluster.kubeconfig_path()).unwrap();
    let who = format!("--as=system:serviceaccount:{OPERATOR_NS}:{GATEWAY_SA}");
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    all.push(&who);
    let out = kubectl.run(&all, None).unwrap();
    out.combined().trim().starts_with("yes")
}

struct Split {
    dex: Dex,
    controller: Operator,
    gateway: Operator,
    intake_url: String,
    intake_token_file: PathBuf,
}

/// The controller, then the gateway under its own identity, then Dex pointing at the gateway.
async fn start(client: &kube::Client) -> Split {
    let cluster = prepare_cluster().unwrap();
    apply_gateway_rbac();
    let (gateway_port, intake_port) = (free_port().unwrap(), free_port().unwrap());
    let gateway_url = format!("http://127.0.0.1:{gateway_port}");
    let intake_url = format!("http://127.0.0.1:{intake_port}");
    let controller = Operator::start_with(
        cluster,
        OperatorOptions {
            gateway_url: Some(gateway_url.clone()),
            instance: Some("controller".into()),
            extra_args: vec![
                "--role=controller".into(),
                format!("--intake-addr=127.0.0.1:{intake_port}"),
                format!("--intake-allow=system:serviceaccount:{OPERATOR_NS}:{GATEWAY_SA}"),
            ],
            ..Default::default()
        },
    )
    .unwrap();
    let dir = cluster.dir().join("split-gateway");
    std::fs::create_dir_all(&dir).unwrap();
    let api_token = identity::token(client, OPERATOR_NS, GATEWAY_SA, None).await;
    let intake_token = identity::token(
        client,
        OPERATOR_NS,
        GATEWAY_SA,
        Some(agent_auth_operator::intake::DEFAULT_AUDIENCE),
    )
    .await;
    let token_file = dir.join("intake-token");
    std::fs::write(&token_file, &intake_token).unwrap();
    let gateway = Operator::start_with(
        cluster,
        OperatorOptions {
            gateway_url: Some(gateway_url.clone()),
            gateway_port: Some(gateway_port),
            instance: Some("gateway".into()),
            kubeconfig: Some(token_kubeconfig(&dir, &api_token)),
            extra_args: vec![
                "--role=gateway".into(),
                format!("--intake-url={intake_url}"),
                format!("--intake-token-file={}", token_file.display()),
            ],
            ..Default::default()
        },
    )
    .unwrap();
    let dex = Dex::start_with(
        &format!("{gateway_url}/oauth/callback"),
        DexOptions {
            id_token_ttl: common::operator::TOKEN_TTL,
            ..Default::default()
        },
    )
    .unwrap();
    Split {
        dex,
        controller,
        gateway,
        intake_url,
        intake_token_file: token_file,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_works_with_no_rights_on_credentials() {
    let env = setup("split").await;
    let (client, ns, accounts, secrets) = env.parts();
    let split = start(client).await;

    // What the gateway's identity may do, as `kubectl auth can-i` says.
    let signing_key = "secret/agent-auth-operator-signing-key";
    assert!(gateway_can(&["get", signing_key, "-n", OPERATOR_NS]));
    for denied in [
        vec!["list", "secrets", "-n", ns],
        vec!["get", "secrets", "-n", ns],
        vec!["list", "secrets", "-n", OPERATOR_NS],
        vec!["get", "secret/agentauth-anything", "-n", OPERATOR_NS],
        vec!["list", "secrets", "--all-namespaces"],
        vec!["create", "secrets", "-n", OPERATOR_NS],
        vec!["update", signing_key, "-n", OPERATOR_NS],
        vec!["patch", "connectedaccounts.agentauth.dev", "-n", ns],
        vec!["update", "connectedaccounts.agentauth.dev/status", "-n", ns],
        vec!["create", "configmaps", "-n", ns],
        vec!["create", "events", "-n", ns],
    ] {
        assert!(!gateway_can(&denied), "the gateway may not {denied:?}");
    }
    assert!(gateway_can(&[
        "list",
        "connectedaccounts.agentauth.dev",
        "-n",
        ns
    ]));

    // OAuth at Dex, through the gateway process; the controller exchanges the code.
    dex_connection(
        client,
        ns,
        "dex",
        &split.dex,
        &["openid", "email", "offline_access"],
    )
    .await;
    account(client, ns, "alice", "dex", json!({})).await;
    let pending = wait_account(accounts, "alice", "link", |a| link(a).is_some()).await;
    let alice_link = link(&pending).unwrap();
    assert!(alice_link.starts_with(&split.gateway.gateway_url), "{alice_link}");
    sign_in(&alice_link, &split.dex.user(0)).await;
    let active = wait_state(accounts, "alice", AccountState::Active).await;
    common::fixtures::remember_credentials(client, ns, &active).await;
    assert!(secrets.get_opt("alice-credentials").await.unwrap().is_some());

    // A hosted form with a credential check, then a verification by the platform.
    let app = app_api().await;
    let mut spec = crm_spec(app.url());
    spec["verification"] = json!({"url": format!("{}/verify", platform_origin())});
    form_connection(client, ns, "crm", spec).await;
    account(client, ns, "bob", "crm", json!({})).await;
    let pending = wait_account(accounts, "bob", "link", |a| link(a).is_some()).await;
    let http = forms::client();
    // A link holder cannot use the operator to try keys against the app: ten checks per link.
    let bob_link = link(&pending).unwrap();
    for attempt in 1..=11 {
        let resp = submit(
            &http,
            &bob_link,
            &[("api_key", "guessed-key"), ("subdomain", "acme")],
        )
        .await;
        let want = if attempt <= 10 { 422 } else { 429 };
        assert_eq!(resp.status(), want, "attempt {attempt}");
    }
    let checks = app.requests().iter().filter(|r| r.path() == "/me").count();
    assert_eq!(checks, 10, "the app saw exactly ten checks");
    // The limit is per link: a new link (the account re-created) checks again.
    accounts.delete("bob", &Default::default()).await.unwrap();
    common::fixtures::wait_gone(accounts, "bob").await;
    account(client, ns, "bob", "crm", json!({})).await;
    let pending = wait_account(accounts, "bob", "link", |a| link(a).is_some()).await;
    let resp = submit(
        &http,
        &link(&pending).unwrap(),
        &[("api_key", "good-key"), ("subdomain", "acme")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    let next = forms::continue_href(&page);
    let request_id = url::Url::parse(&next)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "request_id")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    wait_state(accounts, "bob", AccountState::PendingVerification).await;
    assert!(
        app.requests().iter().any(|r| r.path() == "/me"),
        "the controller checked the key with the app"
    );
    let platform = platform_token(client, ns, "platform", true).await;
    let bob: ConnectedAccount = accounts.get("bob").await.unwrap();
    // A compromised gateway (it holds the intake token) cannot confirm the user itself: the
    // controller checks the platform's token again, and neither a forged one nor the gateway's
    // own passes. Nothing changes.
    let gateway_intake_token = std::fs::read_to_string(&split.intake_token_file).unwrap();
    for forged in ["forged".to_owned(), gateway_intake_token.clone()] {
        let answer: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/v1/verify", split.intake_url))
            .bearer_auth(&gateway_intake_token)
            .json(&json!({"requestId": request_id, "identifier": bob.spec.identifier, "platform": forged}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer, json!("forbidden"));
    }
    assert_eq!(
        common::fixtures::state(&accounts.get("bob").await.unwrap()),
        Some(AccountState::PendingVerification)
    );
    // The platform confirms; the browser that started the flow comes back: published.
    let back = forms::confirm_and_return(
        &http,
        &split.gateway.gateway_url,
        &platform,
        &request_id,
        &bob.spec.identifier,
    )
    .await;
    assert_eq!(back.status(), 200);
    wait_state(accounts, "bob", AccountState::Active).await;

    // The intake admits the gateway only: no token, another ServiceAccount's token, or the
    // gateway's token for another audience are refused.
    let intake = reqwest::Client::new();
    let spent = |token: Option<String>| {
        let mut req = intake
            .post(format!("{}/v1/spent", split.intake_url))
            .json(&json!({"uid": "x", "link": "y"}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(spent(None).await.unwrap().status(), 401);
    identity::service_account(client, ns, "intruder", &[], None).await;
    let intruder = identity::token(
        client,
        ns,
        "intruder",
        Some(agent_auth_operator::intake::DEFAULT_AUDIENCE),
    )
    .await;
    assert_eq!(spent(Some(intruder)).await.unwrap().status(), 403);
    let wrong_audience = identity::token(client, OPERATOR_NS, GATEWAY_SA, None).await;
    assert_eq!(spent(Some(wrong_audience)).await.unwrap().status(), 403);

    // The gateway never hit a permission error: it needed nothing it does not have.
    let logs = split.gateway.logs();
    assert!(!logs.contains("forbidden"), "gateway logs:\n{logs}");
    drop(split.controller);
}
