//! `kubectl agentauth` end to end: the real kubectl dispatches to the `kubectl-agentauth` binary,
//! which talks to the real control plane where the operator and Dex run accounts through their
//! lifecycle.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::path::{Path, PathBuf};

use agent_auth_operator::api::{AccountState, Connection, REAUTHORIZE_ANNOTATION};
use agentauth_testcluster::cli::{Output, Tool};
use agentauth_testcluster::recorder::{Answer, Recorder, Reply};
use common::dex::{browser, login};
use common::fixtures::*;
use common::operator::stack;
use common::{eventually, setup};
use kube::ResourceExt;
use kube::api::Api;
use serde_json::json;

/// Runs the real kubectl with the plugin's directory first on `PATH` and the test cluster's
/// kubeconfig, so that `kubectl agentauth ...` runs the `kubectl-agentauth` built for this test.
async fn kubectl(args: &[&str]) -> Output {
    let kubeconfig = agentauth_testcluster::shared()
        .unwrap()
        .kubeconfig_path()
        .to_owned();
    let plugin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-agentauth"))
        .parent()
        .unwrap()
        .to_owned();
    let path = std::env::join_paths(std::iter::once(plugin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let tool = Tool::kubectl(&kubeconfig).unwrap().env("PATH", path);
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tool.run(&args, None).unwrap_or_else(|e| panic!("{e}"))
    })
    .await
    .unwrap()
}

/// Creates the Dex Connection `dex` and waits until it is Ready.
async fn ready_connection(client: &kube::Client, ns: &str) {
    dex_connection(
        client,
        ns,
        "dex",
        &stack().dex,
        &["openid", "email", "offline_access"],
    )
    .await;
    let conns: Api<Connection> = Api::namespaced(client.clone(), ns);
    eventually(REACT, "Connection Ready", || async {
        let c = conns.get("dex").await.ok()?;
        c.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn link_status_and_reauthorize_through_kubectl() {
    let env = setup("plugin").await;
    let s = stack();
    let (client, ns, accounts, secrets) = env.parts();
    ready_connection(client, ns).await;

    // A PENDING_AUTH account: `link` prints exactly the status link.
    account(client, ns, "pending", "dex", json!({})).await;
    let pending = wait_account(accounts, "pending", "PENDING_AUTH with a link", |a| {
        state(a) == Some(AccountState::PendingAuth) && link(a).is_some()
    })
    .await;
    let pending_link = link(&pending).unwrap();
    let out = kubectl(&["agentauth", "link", "pending", "-n", ns]).await;
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout, format!("{pending_link}\n"));

    // `status` shows the state, the Connection, the Secret and the Events, but not the link. A new
    // account's first link is in its status only (no Event: at thousands of accounts that would
    // be thousands of writes).
    let status = {
        let out = kubectl(&["agentauth", "status", "pending", "-n", ns]).await;
        assert!(out.success(), "{out:?}");
        out.stdout
    };
    for want in [
        "Account:            pending\n",
        &format!("Namespace:          {ns}\n"),
        "Connection:         dex (Ready)\n",
        "Identifier:         pending@example.com\n",
        "State:              PENDING_AUTH\n",
        "Ready:              False (AwaitingAuthorization",
        "Secret:             pending-credentials (does not exist)\n",
        "Link:               pending, expires at ",
        "Events:             <none>\n",
    ] {
        assert!(status.contains(want), "status lacks {want:?}:\n{status}");
    }
    assert!(
        !status.contains(&pending_link),
        "status must not print the link:\n{status}"
    );

    // Without --wait, reauthorize only sets the annotation; the operator replaces the link.
    let out = kubectl(&["agentauth", "reauthorize", "pending", "-n", ns]).await;
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains(REAUTHORIZE_ANNOTATION), "{out:?}");
    let replaced = wait_account(accounts, "pending", "a replaced link", |a| {
        link(a).is_some_and(|l| l != pending_link)
    })
    .await;
    // A replaced link is an Event.
    eventually(REACT, "status lists the LinkIssued Event", || async {
        let out = kubectl(&["agentauth", "status", "pending", "-n", ns]).await;
        (out.stdout.contains("Events:\n  TYPE ") && out.stdout.contains("LinkIssued")).then_some(())
    })
    .await;
    let annotation = replaced.annotations()[REAUTHORIZE_ANNOTATION].clone();
    assert!(
        annotation.parse::<jiff::Timestamp>().is_ok(),
        "RFC 3339: {annotation}"
    );

    // An ACTIVE account.
    account(client, ns, "alice", "dex", json!({})).await;
    let a = wait_account(accounts, "alice", "a link", |a| link(a).is_some()).await;
    let page = login(&browser(), &link(&a).unwrap(), &s.dex.user(0))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    wait_state(accounts, "alice", AccountState::Active).await;
    let token_before = eventually(REACT, "agent Secret", || async {
        let secret = secrets.get_opt("alice-credentials").await.unwrap()?;
        Some(secret_text(&secret)["access_token"].clone())
    })
    .await;

    // The transition to ACTIVE is an Event, recorded in the background.
    let out = eventually(REACT, "status lists the transition to ACTIVE", || async {
        let out = kubectl(&["agentauth", "status", "alice", "-n", ns]).await;
        assert!(out.success(), "{out:?}");
        out.stdout.contains("state ACTIVE").then_some(out)
    })
    .await;
    let token_after = secret_text(&secrets.get("alice-credentials").await.unwrap())["access_token"].clone();
    for want in [
        "State:              ACTIVE\n",
        "Connection:         dex (Ready)\n",
        "Ready:              True (Active",
        "Secret:             alice-credentials (exists)\n",
        "Granted Scopes:     openid, email, offline_access\n",
        "Link:               <none>\n",
        "Active",
    ] {
        assert!(
            out.stdout.contains(want),
            "status lacks {want:?}:\n{}",
            out.stdout
        );
    }
    for field in ["Expires At:", "Next Refresh At:", "Last Refreshed At:"] {
        let line = out.stdout.lines().find(|l| l.starts_with(field)).unwrap();
        assert!(!line.contains("<none>"), "{line}");
    }
    for token in [&token_before, &token_after] {
        assert!(
            !out.stdout.contains(token.as_str()),
            "status printed the access token"
        );
    }
    assert!(!out.stdout.contains("Bearer"));

    let out = kubectl(&["agentauth", "status", "alice", "-n", ns, "-o", "json"]).await;
    assert!(out.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["state"], "ACTIVE");
    assert_eq!(json["secretName"], "alice-credentials");

    // No pending link: `link` says what to do instead.
    let out = kubectl(&["agentauth", "link", "alice", "-n", ns]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "alice is ACTIVE and has no pending link; use `kubectl agentauth reauthorize alice -n {ns}`"
        )),
        "{out:?}"
    );

    // `reauthorize --wait` prints the new link; the account stays ACTIVE meanwhile.
    let out = kubectl(&["agentauth", "reauthorize", "alice", "-n", ns, "--wait"]).await;
    assert!(out.success(), "{out:?}");
    let new_link = out.stdout.trim_end();
    assert!(
        new_link.starts_with(&format!("{}/connect/", s.operator.gateway_url)),
        "{out:?}"
    );
    assert_eq!(out.stdout.lines().count(), 1, "only the link on stdout: {out:?}");
    let after = accounts.get("alice").await.unwrap();
    assert_eq!(link(&after).as_deref(), Some(new_link));
    assert_eq!(state(&after), Some(AccountState::Active));
    assert_eq!(
        after.status.as_ref().unwrap().reauthorize_request.as_deref(),
        Some(after.annotations()[REAUTHORIZE_ANNOTATION].as_str())
    );
    let out = kubectl(&["agentauth", "link", "alice", "-n", ns]).await;
    assert_eq!(out.stdout.trim_end(), new_link, "{out:?}");
}

#[tokio::test]
async fn errors_are_clear() {
    let env = setup("plugin-errors").await;
    let ns = env.ns.as_str();

    let missing = format!("connectedaccount \"nope\" not found in namespace \"{ns}\"");
    for cmd in ["status", "link", "reauthorize"] {
        let out = kubectl(&["agentauth", cmd, "nope", "-n", ns]).await;
        assert_eq!(out.code, Some(1), "{cmd}: {out:?}");
        assert!(out.stderr.contains(&missing), "{cmd}: {out:?}");
        assert!(out.stdout.is_empty(), "{cmd}: {out:?}");
    }

    // Nothing listens at the server of this kubeconfig.
    let cluster = agentauth_testcluster::shared().unwrap();
    let port = agentauth_testcluster::free_port().unwrap();
    let dead = format!("https://127.0.0.1:{port}");
    let kubeconfig = std::fs::read_to_string(cluster.kubeconfig_path())
        .unwrap()
        .replace(cluster.server(), &dead);
    let dead_kc = write_file(&format!("dead-{}.kubeconfig", std::process::id()), &kubeconfig);
    let out = kubectl(&[
        "agentauth",
        "status",
        "alice",
        "--kubeconfig",
        dead_kc.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("cannot reach the Kubernetes API server at {dead}")),
        "{out:?}"
    );

    // A server without the agentauth.dev API (answers 404 to everything, as kube-apiserver does for
    // an unknown group).
    let bare = bare_api_server().await;
    let server = bare.url();
    let bare_kc = write_file(
        &format!("bare-{}.kubeconfig", std::process::id()),
        &format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: bare\n\
             clusters: [{{name: bare, cluster: {{server: '{server}'}}}}]\n\
             users: [{{name: bare, user: {{}}}}]\n\
             contexts: [{{name: bare, context: {{cluster: bare, user: bare, namespace: team}}}}]\n"
        ),
    );
    let out = kubectl(&[
        "agentauth",
        "link",
        "alice",
        "--kubeconfig",
        bare_kc.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("is not installed in this cluster"), "{out:?}");

    // Usage errors are clap's (exit status 2).
    let out = kubectl(&["agentauth", "status"]).await;
    assert_eq!(out.code, Some(2), "{out:?}");

    // kubectl finds the plugin (its exit status also reflects warnings about unrelated PATH entries,
    // such as cargo's `kubectl-agentauth.d` next to the binary, so only the listing is checked).
    let out = kubectl(&["plugin", "list"]).await;
    let plugin = env!("CARGO_BIN_EXE_kubectl-agentauth");
    assert!(out.stdout.lines().any(|l| l.trim() == plugin), "{out:?}");

    let _ = std::fs::remove_file(dead_kc);
    let _ = std::fs::remove_file(bare_kc);
}

fn write_file(name: &str, content: &str) -> PathBuf {
    let path = agentauth_testcluster::shared().unwrap().dir().join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// A plain-HTTP server that answers every request with kube-apiserver's `404 page not found`.
async fn bare_api_server() -> Recorder {
    let reply = Reply::text(404, "404 page not found\n").header("connection", "close");
    Recorder::loopback(Answer::canned(reply)).await.unwrap()
}

#[tokio::test]
async fn connect_gets_or_creates_the_account_of_a_user() {
    let env = setup("plugin-connect").await;
    let s = stack();
    let (client, ns, accounts, _) = env.parts();
    ready_connection(client, ns).await;

    // A new user: an account with a deterministic name, its state and link.
    let name = agent_auth_operator::plugin::format::account_name("dex", "user3@example.com");
    assert!(name.starts_with("dex-user3-example-com-"), "{name}");
    let out = kubectl(&["agentauth", "connect", "dex", "user3@example.com", "-n", ns]).await;
    assert!(out.success(), "{out:?}");
    let created = accounts.get(&name).await.unwrap();
    assert_eq!(
        (
            created.spec.connection_ref.name.as_str(),
            created.spec.identifier.as_str()
        ),
        ("dex", "user3@example.com")
    );
    let managers: Vec<_> = created
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains(&"kubectl-agentauth".to_owned()), "{managers:?}");
    let link3 =
        link(&created).unwrap_or_else(|| panic!("no link after connect: {out:?}\n{:?}", created.status));
    assert_eq!(
        out.stdout,
        format!("account: {name} (created)\nstate:   PENDING_AUTH\nlink:    {link3}\n")
    );

    // `kubectl agentauth connect dex <identifier> -o json`, which must succeed.
    let connect_json = |identifier: &'static str| async move {
        let out = kubectl(&["agentauth", "connect", "dex", identifier, "-n", ns, "-o", "json"]).await;
        assert!(out.success(), "{out:?}");
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()
    };
    // Again: the same account, nothing created.
    let j = connect_json("user3@example.com").await;
    assert_eq!(
        (&j["name"], &j["created"], &j["state"], &j["link"]),
        (&json!(name), &json!(false), &json!("PENDING_AUTH"), &json!(link3))
    );

    // An account of that user under another name is the one used.
    account(
        client,
        ns,
        "handmade",
        "dex",
        json!({"identifier": "user4@example.com"}),
    )
    .await;
    let j = connect_json("user4@example.com").await;
    assert_eq!(
        (&j["name"], &j["created"]),
        (&json!("handmade"), &json!(false)),
        "{j}"
    );
    assert!(accounts.list(&Default::default()).await.unwrap().items.len() == 2);

    // --wait: the user authorizes while the plugin waits; it ends once the account is ACTIVE.
    let wait_args = [
        "agentauth",
        "connect",
        "dex",
        "user3@example.com",
        "-n",
        ns,
        "--wait",
        "-o",
        "json",
    ];
    let (out, page) = tokio::join!(kubectl(&wait_args), async {
        login(&browser(), &link3, &s.dex.user(3)).await.unwrap()
    });
    assert_eq!(page.status(), 200);
    assert!(out.success(), "{out:?}");
    let last: serde_json::Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        (&last["state"], &last["link"]),
        (&json!("ACTIVE"), &json!(null)),
        "{out:?}"
    );
    let out = kubectl(&[
        "agentauth",
        "connect",
        "dex",
        "user3@example.com",
        "-n",
        ns,
        "--wait",
    ])
    .await;
    assert_eq!(
        out.stdout,
        format!("account: {name} (existing)\nstate:   ACTIVE\n"),
        "{out:?}"
    );

    // Names the API server would refuse are refused first.
    let out = kubectl(&["agentauth", "connect", "Not_A_Name", "u", "-n", ns]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("is not a Connection name"), "{out:?}");
}
