//! Attacks by a namespace tenant (issue #12), each reproduced on the real API server with the
//! operator binary: the tenant is impersonated with `kubectl --as` under a Role that allows only
//! Connections, ConnectedAccounts and ConfigMaps in its own namespace, and every attack aims the
//! operator at a local endpoint that records what it receives. Each test asserts that the endpoint
//! received nothing secret (for most: nothing at all), and that no remote text reached status or
//! Events. The hygiene scan of every log and object stays on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use agentauth_testcluster::cli::Tool;
use std::time::{Duration, Instant};

use agent_auth_operator::api::{AccountState, ConnectedAccount, Connection};
use common::fixtures::*;
use common::operator::stack;
use common::recorder::{BANNER, attacker};
use common::token_server::{TokenServer, TokenServerConfig};
use common::{TestEnv, eventually, hygiene, setup};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::json;

/// Gives `user` the tenant's rights in `ns`: Connections, ConnectedAccounts and ConfigMaps, nothing else.
async fn tenant(env: &TestEnv, user: &str) {
    let ns = &env.ns;
    let role = Role {
        metadata: ObjectMeta {
            name: Some("tenant".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["agentauth.dev".into(), "".into()]),
            resources: Some(vec![
                "connections".into(),
                "connectedaccounts".into(),
                "configmaps".into(),
            ]),
            verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("tenant-{user}")),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "tenant".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: user.into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // The tenant really is narrow: it cannot read Secrets.
    let denied = kubectl_as(user, ns, &["get", "secrets"], None);
    assert!(!denied.0, "a tenant must not read Secrets: {}", denied.1);
}

/// Runs the real kubectl as `user` (`--as`; "" for the admin) in `ns`; (success, stdout+stderr).
fn kubectl_as(user: &str, ns: &str, args: &[&str], stdin: Option<String>) -> (bool, String) {
    let kubeconfig = agentauth_testcluster::shared()
        .unwrap()
        .kubeconfig_path()
        .to_owned();
    let mut tool = Tool::kubectl(&kubeconfig).unwrap();
    if !user.is_empty() {
        tool = tool.leading_arg(format!("--as={user}"));
    }
    let out = tool
        .leading_arg("-n")
        .leading_arg(ns)
        .run(args, stdin.as_deref())
        .unwrap();
    (out.success(), out.combined())
}

/// `kubectl --as apply` of JSON documents; panics if the API server refuses.
fn apply_as(user: &str, ns: &str, docs: &[serde_json::Value]) {
    for doc in docs {
        let (ok, out) = kubectl_as(user, ns, &["apply", "-f", "-"], Some(doc.to_string()));
        assert!(ok, "kubectl --as={user} apply: {out}");
    }
}

/// `kubectl --as patch --type=merge` of one object; panics if the API server refuses.
fn patch_as(user: &str, ns: &str, kind: &str, name: &str, patch: &str) {
    let (ok, out) = kubectl_as(
        user,
        ns,
        &["patch", kind, name, "--type=merge", "-p", patch],
        None,
    );
    assert!(ok, "kubectl --as={user} patch {kind} {name}: {out}");
}

/// A Secret the platform team creates in the tenant's namespace; `usable` adds the opt-in label.
async fn platform_secret(env: &TestEnv, name: &str, data: &[(&str, &str)], usable: bool) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: usable.then(agent_auth_operator::store::secret_ref::opt_in_labels),
            ..Default::default()
        },
        string_data: Some(data.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()),
        ..Default::default()
    };
    env.secrets.create(&PostParams::default(), &secret).await.unwrap();
}

/// Waits for the Connection's Ready condition to be False with `reason`; returns its message.
async fn refused(env: &TestEnv, name: &str, reason: &str) -> String {
    let conns: Api<Connection> = Api::namespaced(env.client.clone(), &env.ns);
    eventually(
        REACT,
        &format!("Connection {name} refused with {reason}"),
        || async {
            let c = conns.get(name).await.ok()?;
            let ready = c.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
            (ready.status == "False" && ready.reason == reason).then_some(ready.message)
        },
    )
    .await
}

/// No banner text of a remote endpoint in the namespace's accounts, Connections and Events.
async fn no_remote_text(env: &TestEnv) {
    let conns: Api<Connection> = Api::namespaced(env.client.clone(), &env.ns);
    let text = format!(
        "{}{}{}",
        serde_json::to_string(&env.accounts.list(&Default::default()).await.unwrap().items).unwrap(),
        serde_json::to_string(&conns.list(&Default::default()).await.unwrap().items).unwrap(),
        events_text(&env.client, &env.ns).await
    );
    assert!(!text.contains(BANNER), "remote text reached status or Events");
}

fn ready_of(a: &ConnectedAccount) -> (String, String, String) {
    let (status, reason) = ready(a).unwrap_or_default();
    (status, reason, ready_message(a))
}

#[tokio::test]
async fn editing_a_connection_never_redirects_an_existing_grant() {
    let env = setup("tenancy-pin").await;
    let s = stack();
    tenant(&env, "tenant-pin").await;
    let (client, ns, accounts, _) = env.parts();
    dex_connection(client, ns, "dex", &s.dex, &["openid", "email", "offline_access"]).await;
    let active = authorized(client, ns, "alice", "dex", &s.dex.user(0)).await;
    let first_refresh = active.status.unwrap().last_refreshed_at.unwrap().0;

    // Finding 1: the tenant points the token and revocation endpoints at itself and asks for a
    // refresh right away.
    let attacker = attacker("127.0.0.1").await;
    let patch = json!({"spec": {
        "oauth2": {"tokenUrl": format!("{}/token", attacker.url()), "revocationUrl": format!("{}/revoke", attacker.url())},
        "refresh": {"before": "19s"},
    }});
    patch_as("tenant-pin", ns, "connection", "dex", &patch.to_string());

    // The account says so and offers a new link, and keeps being renewed at Dex only.
    let changed = wait_account(accounts, "alice", "ConnectionChanged", |a| {
        ready(a).is_some_and(|(_, r)| r == "ConnectionChanged") && link(a).is_some()
    })
    .await;
    assert_eq!(state(&changed), Some(AccountState::Active));
    let renewed = eventually(
        Duration::from_secs(60),
        "a refresh at the pinned endpoint",
        || async {
            let a = accounts.get("alice").await.ok()?;
            let at = a.status.as_ref()?.last_refreshed_at.as_ref()?.0;
            (at > first_refresh && state(&a) == Some(AccountState::Active)).then_some(a)
        },
    )
    .await;
    assert_eq!(ready(&renewed).unwrap().1, "ConnectionChanged");

    // Disconnecting revokes only where the grant came from (Dex has no revocation endpoint).
    patch_as(
        "tenant-pin",
        ns,
        "connectedaccount",
        "alice",
        r#"{"spec":{"disconnected":true}}"#,
    );
    wait_state(accounts, "alice", AccountState::Disconnected).await;
    attacker.assert_untouched("tokenUrl/revocationUrl patched by a tenant");
    let events = events_text(client, ns).await;
    assert!(!events.contains("Revoked"), "no revocation was claimed: {events}");
}

#[tokio::test]
async fn a_secret_that_did_not_opt_in_is_never_read_or_sent() {
    let env = setup("tenancy-optin").await;
    stack();
    tenant(&env, "tenant-optin").await;
    let ns = env.ns.clone();
    hygiene::remember("db-password-value-5521");
    platform_secret(&env, "db-creds", &[("password", "db-password-value-5521")], false).await;
    let attacker = attacker("127.0.0.1").await;

    // Finding 2: a ClientCredentials Connection whose client secret is someone else's Secret, a
    // CustomJWT signing key from it, and an account copying it through credentialsRef.
    apply_as(
        "tenant-optin",
        &ns,
        &[
            json!({"apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection", "metadata": {"name": "steal"},
                "spec": {"authType": "ClientCredentials", "oauth2": {"clientId": "x",
                    "clientSecretRef": {"name": "db-creds", "key": "password"},
                    "tokenUrl": format!("{}/token", attacker.url())}}}),
            json!({"apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection", "metadata": {"name": "sign"},
                "spec": {"authType": "CustomJWT", "customJWT": {"signingKeyRef": {"name": "db-creds", "key": "password"},
                    "algorithm": "HS256", "issuer": "i",
                    "exchange": {"tokenUrl": format!("{}/token", attacker.url()), "style": "JwtBearer"}}}}),
            json!({"apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection", "metadata": {"name": "form"},
                "spec": {"authType": "APIKey", "apiKey": {"fields": [{"name": "password"}]}}}),
            json!({"apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount", "metadata": {"name": "m2m"},
                "spec": {"connectionRef": {"name": "steal"}, "identifier": "svc"}}),
            json!({"apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount", "metadata": {"name": "jwt"},
                "spec": {"connectionRef": {"name": "sign"}, "identifier": "svc"}}),
            json!({"apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount", "metadata": {"name": "copy"},
                "spec": {"connectionRef": {"name": "form"}, "identifier": "svc", "credentialsRef": {"name": "db-creds"}}}),
        ],
    );
    for name in ["steal", "sign"] {
        let message = refused(&env, name, "ClientSecretUnavailable").await;
        assert!(message.contains("agentauth.dev/usable"), "{message}");
    }
    let copy = wait_account(&env.accounts, "copy", "refusal of credentialsRef", |a| {
        ready_message(a).contains("agentauth.dev/usable")
    })
    .await;
    assert_ne!(state(&copy), Some(AccountState::Active));
    for name in ["m2m", "jwt"] {
        let a = wait_state(&env.accounts, name, AccountState::Error).await;
        assert_eq!(ready_of(&a).0, "False");
    }
    assert!(env.secrets.get_opt("copy-credentials").await.unwrap().is_none());
    attacker.assert_untouched("Secret references without the opt-in label");

    // An operator-managed Secret is refused even when someone labels it.
    let mut labelled = env.secrets.get("db-creds").await.unwrap();
    labelled.metadata.labels = Some(agent_auth_operator::store::secret_ref::opt_in_labels());
    labelled.metadata.labels.as_mut().unwrap().insert(
        "app.kubernetes.io/managed-by".into(),
        "agent-auth-operator".into(),
    );
    labelled.metadata.managed_fields = None;
    env.secrets
        .replace("db-creds", &PostParams::default(), &labelled)
        .await
        .unwrap();
    let message = refused(&env, "steal", "ClientSecretUnavailable").await;
    eventually(REACT, "an operator-managed Secret refused", || async {
        let m = refused(&env, "steal", "ClientSecretUnavailable").await;
        m.contains("managed by the operator").then_some(())
    })
    .await;
    let _ = message;
    attacker.assert_untouched("an operator-managed Secret");
}

#[tokio::test]
async fn internal_addresses_are_refused_with_no_read_channel() {
    let env = setup("tenancy-ssrf").await;
    stack();
    tenant(&env, "tenant-ssrf").await;
    let ns = env.ns.clone();
    // 127.0.0.2 is not on the test operator's egress allowlist (127.0.0.1/32): it stands for an
    // internal service, a metadata endpoint, a cluster address.
    let internal = attacker("127.0.0.2").await;
    platform_secret(&env, "cc", &[("secret", "cc-secret-value-8812")], true).await;
    hygiene::remember("cc-secret-value-8812");
    let cc = |name: &str, token_url: String| {
        json!({"apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection", "metadata": {"name": name},
            "spec": {"authType": "ClientCredentials", "oauth2": {"clientId": "x",
                "clientSecretRef": {"name": "cc", "key": "secret"}, "tokenUrl": token_url}}})
    };
    let port = internal.addr().port();
    apply_as(
        "tenant-ssrf",
        &ns,
        &[
            cc("plain", format!("http://127.0.0.2:{port}/token")),
            cc("literal", format!("https://127.0.0.2:{port}/token")),
            cc("metadata", "https://169.254.169.254/latest/meta-data/iam".into()),
            cc("named", format!("https://localhost:{port}/token")),
            cc("elsewhere", "https://attacker.example.net/token".into()),
            json!({"apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount", "metadata": {"name": "svc"},
                "spec": {"connectionRef": {"name": "named"}, "identifier": "svc"}}),
        ],
    );
    // Hosts outside the operator's allowlist for namespaced Connections are refused by policy.
    let elsewhere = refused(&env, "elsewhere", "PolicyDenied").await;
    assert!(elsewhere.contains("presets-only"), "{elsewhere}");
    let plain = refused(&env, "plain", "EgressDenied").await;
    assert!(plain.contains("https"), "{plain}");
    let literal = refused(&env, "literal", "EgressDenied").await;
    assert!(literal.contains("egress policy"), "{literal}");
    // The metadata address is not even a host namespaced Connections may name.
    refused(&env, "metadata", "PolicyDenied").await;
    // A closed port answers in a fixed phrase, never the socket's "connection refused" (that
    // would make a port-scan oracle). (`localhost` resolves to the allowlisted 127.0.0.1 here; a
    // name resolving to a refused address is refused at resolution: `egress::tests`.)
    let svc = wait_account(&env.accounts, "svc", "a failed credential", |a| {
        ready_message(a).contains("could not be reached")
    })
    .await;
    assert_eq!(state(&svc), Some(AccountState::Error));
    assert!(
        !ready_message(&svc).to_lowercase().contains("refused"),
        "{}",
        ready_message(&svc)
    );
    internal.assert_untouched("tenant URLs aimed at internal addresses");
    no_remote_text(&env).await;
}

#[tokio::test]
async fn one_oauth_client_per_namespace_and_states_stay_with_their_connection() {
    let a = setup("tenancy-mixa").await;
    let b = setup("tenancy-mixb").await;
    let s = stack();
    tenant(&b, "tenant-b").await;
    let attacker = attacker("127.0.0.1").await;
    let client_id = s.dex.next_client_id();
    // Tenant A's app, on its own redirect URI.
    platform_secret(&a, "dex-oauth", &[("client-secret", &s.dex.client_secret)], true).await;
    let conn_a: Connection = serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection", "metadata": {"name": "app"},
        "spec": {"authType": "OAuth2", "oauth2": {"clientId": client_id,
            "clientSecretRef": {"name": "dex-oauth", "key": "client-secret"},
            "authorizationUrl": s.dex.authorization_url(), "tokenUrl": s.dex.token_url(), "scopes": ["openid"]}}}))
    .unwrap();
    Api::<Connection>::namespaced(a.client.clone(), &a.ns)
        .create(&PostParams::default(), &conn_a)
        .await
        .unwrap();
    let conns_a: Api<Connection> = Api::namespaced(a.client.clone(), &a.ns);
    let redirect = eventually(REACT, "A's redirect URI", || async {
        conns_a.get("app").await.ok()?.status?.redirect_uri
    })
    .await;
    assert_eq!(
        redirect,
        format!("{}/oauth/callback/ns/{}/app", s.operator.gateway_url, a.ns)
    );

    // Finding 3: tenant B wraps A's public client id and the real authorization URL in its own
    // token endpoint.
    apply_as(
        "tenant-b",
        &b.ns,
        &[
            json!({"apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection", "metadata": {"name": "app"},
                "spec": {"authType": "OAuth2", "oauth2": {"clientId": client_id,
                    "authorizationUrl": s.dex.authorization_url(), "tokenUrl": format!("{}/token", attacker.url()),
                    "tokenEndpointAuthMethod": "None"}}}),
            json!({"apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount", "metadata": {"name": "victim"},
                "spec": {"connectionRef": {"name": "app"}, "identifier": "victim@example.com"}}),
        ],
    );
    let message = refused(&b, "app", "ClientIdInUse").await;
    assert!(message.contains(&a.ns), "{message}");
    let victim = wait_state(&b.accounts, "victim", AccountState::Error).await;
    assert_eq!(link(&victim), None, "no link to phish with");

    // A state issued for A's Connection is refused at any other callback before a code is spent.
    account(&a.client, &a.ns, "alice", "app", json!({})).await;
    let pending = wait_account(&a.accounts, "alice", "link", |x| link(x).is_some()).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap();
    let to_dex = common::dex::press_continue(&http, &link(&pending).unwrap())
        .await
        .unwrap();
    let cookie = to_dex.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let location = common::dex::provider_url(to_dex).await.unwrap();
    let q: std::collections::BTreeMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(q["redirect_uri"], redirect);
    let gw = &s.operator.gateway_url;
    let issued = &q["state"];
    for callback in [
        format!("{gw}/oauth/callback/ns/{}/app", b.ns),
        format!("{gw}/oauth/callback"),
        format!("{gw}/oauth/callback/ns/{}/other", a.ns),
    ] {
        let resp = http
            .get(format!(
                "{callback}?code=stolen-code&state={issued}&iss=http://127.0.0.1"
            ))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{callback}");
        let page = resp.text().await.unwrap();
        assert!(page.contains("does not belong to this app"), "{callback}: {page}");
    }
    // At its own callback, an `iss` of another authorization server is refused too (RFC 9207).
    let resp = http
        .get(format!(
            "{gw}/oauth/callback/ns/{}/app?code=c&state={issued}&iss=https://evil.example",
            a.ns
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let alice = a.accounts.get("alice").await.unwrap();
    assert_eq!(state(&alice), Some(AccountState::PendingAuth));
    attacker.assert_untouched("a mix-up through a shared client id");
}

#[tokio::test]
async fn a_refresh_before_longer_than_the_lifetime_does_not_loop() {
    let env = setup("tenancy-loop").await;
    stack();
    let server = TokenServer::start(TokenServerConfig {
        expires_in: Duration::from_secs(10),
        ..Default::default()
    })
    .await;
    platform_secret(&env, "cc", &[("secret", "test-secret")], true).await;
    let conn: Connection = serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection", "metadata": {"name": "cc"},
        "spec": {"authType": "ClientCredentials", "refresh": {"before": "30s"},
            "oauth2": {"clientId": "test-client", "clientSecretRef": {"name": "cc", "key": "secret"},
                "tokenUrl": server.token_url()}}}))
    .unwrap();
    Api::<Connection>::namespaced(env.client.clone(), &env.ns)
        .create(&PostParams::default(), &conn)
        .await
        .unwrap();
    account(&env.client, &env.ns, "svc", "cc", json!({})).await;
    eventually(REACT, "the first token", || async {
        (server.issued() >= 1).then_some(())
    })
    .await;
    let first = Instant::now();
    eventually(Duration::from_secs(60), "two renewals", || async {
        (server.issued() >= 3).then_some(())
    })
    .await;
    // A 10 s token with `before` 30 s is renewed at half its life: two renewals take at least 10 s
    // (before the clamp, 66 refreshes happened in under 3 s).
    assert!(
        first.elapsed() >= Duration::from_secs(9),
        "renewed {} times in {:?}",
        server.issued(),
        first.elapsed()
    );
}

#[tokio::test]
async fn a_cluster_connection_serves_selected_namespaces_from_the_operators_secrets() {
    use agent_auth_operator::api::ClusterConnection;
    use common::operator::{OPERATOR_NS, PLATFORM_CONNECTION};
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Patch, PatchParams};
    let allowed = setup("tenancy-cc-in").await;
    let other = setup("tenancy-cc-out").await;
    let s = stack();
    tenant(&allowed, "tenant-cc").await;
    let label = json!({"metadata": {"labels": {"agentauth.dev/platform-dex": "true"}}});
    Api::<Namespace>::all(allowed.client.clone())
        .patch(&allowed.ns, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    // The platform team's client secret lives in the operator's namespace.
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("platform-dex-oauth".into()),
            labels: Some(agent_auth_operator::store::secret_ref::opt_in_labels()),
            ..Default::default()
        },
        string_data: Some([("client-secret".to_owned(), s.dex.client_secret.clone())].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(allowed.client.clone(), OPERATOR_NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let client_id = s.dex.next_client_id();
    let cc: ClusterConnection = serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "ClusterConnection",
        "metadata": {"name": PLATFORM_CONNECTION},
        "spec": {"authType": "OAuth2",
            "oauth2": {"clientId": client_id, "clientSecretRef": {"name": "platform-dex-oauth", "key": "client-secret"},
                "authorizationUrl": s.dex.authorization_url(), "tokenUrl": s.dex.token_url(),
                "scopes": ["openid", "email", "offline_access"]},
            "namespaceSelector": {"matchLabels": {"agentauth.dev/platform-dex": "true"}}}}))
    .unwrap();
    let ccs: Api<ClusterConnection> = Api::all(allowed.client.clone());
    ccs.create(&PostParams::default(), &cc).await.unwrap();
    let redirect = eventually(REACT, "the ClusterConnection Ready", || async {
        let st = ccs.get(PLATFORM_CONNECTION).await.ok()?.status?;
        let ready = st
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(st.redirect_uri?)
    })
    .await;
    assert_eq!(
        redirect,
        format!(
            "{}/oauth/callback/cluster/{PLATFORM_CONNECTION}",
            s.operator.gateway_url
        )
    );

    // A tenant cannot create or change ClusterConnections, and cannot read the client secret.
    let (ok, out) = kubectl_as(
        "tenant-cc",
        &allowed.ns,
        &["delete", "clusterconnection", PLATFORM_CONNECTION],
        None,
    );
    assert!(!ok && out.contains("forbidden"), "{out}");
    // It can use it from a selected namespace: a real sign-in at Dex through the cluster callback.
    apply_as(
        "tenant-cc",
        &allowed.ns,
        &[
            json!({"apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount", "metadata": {"name": "alice"},
            "spec": {"connectionRef": {"kind": "ClusterConnection", "name": PLATFORM_CONNECTION}, "identifier": "user1@example.com"}}),
        ],
    );
    let pending = wait_account(&allowed.accounts, "alice", "link", |a| link(a).is_some()).await;
    sign_in(&link(&pending).unwrap(), &s.dex.user(1)).await;
    let active = wait_state(&allowed.accounts, "alice", AccountState::Active).await;
    remember_credentials(&allowed.client, &allowed.ns, &active).await;
    assert!(
        allowed
            .secrets
            .get_opt("alice-credentials")
            .await
            .unwrap()
            .is_some()
    );
    // A namespace the selector does not pick gets no link.
    account(
        &other.client,
        &other.ns,
        "bob",
        PLATFORM_CONNECTION,
        json!({"connectionRef": {"kind": "ClusterConnection", "name": PLATFORM_CONNECTION}}),
    )
    .await;
    let bob = wait_state(&other.accounts, "bob", AccountState::Error).await;
    assert_eq!(ready(&bob).unwrap().1, "NamespaceNotAllowed");
    assert_eq!(link(&bob), None);
    // The platform's client is its own: a tenant's namespaced Connection with it is refused.
    apply_as(
        "tenant-cc",
        &allowed.ns,
        &[
            json!({"apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection", "metadata": {"name": "copy"},
            "spec": {"authType": "OAuth2", "oauth2": {"clientId": client_id, "tokenEndpointAuthMethod": "None",
                "authorizationUrl": s.dex.authorization_url(), "tokenUrl": s.dex.token_url()}}}),
        ],
    );
    refused(&allowed, "copy", "ClientIdInUse").await;
    // `kubectl get agentauth` lists it beside the namespace's objects.
    let (ok, out) = kubectl_as("", &allowed.ns, &["get", "agentauth"], None);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("clusterconnection.agentauth.dev/{PLATFORM_CONNECTION}")),
        "{out}"
    );
}

#[tokio::test]
async fn the_agent_secret_stays_the_operators_and_agrees_with_status() {
    use common::operator::OPERATOR_NS;
    use kube::ResourceExt;
    use kube::api::{DeleteParams, Patch, PatchParams};
    let env = setup("tenancy-secret").await;
    let s = stack();
    let (client, ns, accounts, secrets) = env.parts();
    dex_connection(client, ns, "dex", &s.dex, &["openid", "email", "offline_access"]).await;

    // A foreign Secret under the account's name is found before a user is sent a link.
    platform_secret(&env, "bob-credentials", &[("note", "someone else's")], false).await;
    account(client, ns, "bob", "dex", json!({})).await;
    let bob = wait_state(accounts, "bob", AccountState::Error).await;
    assert_eq!(ready(&bob).unwrap().1, "SecretConflict");
    assert_eq!(link(&bob), None, "no link while the Secret name is taken");

    let alice = authorized(client, ns, "alice", "dex", &s.dex.user(2)).await;
    // A planted key is removed: the operator owns the whole data map.
    let planted = json!({"data": {"planted": "ZXZpbA=="}});
    secrets
        .patch(
            "alice-credentials",
            &PatchParams::default(),
            &Patch::Merge(&planted),
        )
        .await
        .unwrap();
    eventually(REACT, "the planted key removed", || async {
        let secret = secrets.get("alice-credentials").await.ok()?;
        (!secret.data?.contains_key("planted")).then_some(())
    })
    .await;
    // A removed label is repaired; ownership is the owner reference, so no false SecretConflict.
    let unlabel = json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}});
    secrets
        .patch(
            "alice-credentials",
            &PatchParams::default(),
            &Patch::Merge(&unlabel),
        )
        .await
        .unwrap();
    eventually(REACT, "the label repaired", || async {
        let secret = secrets.get("alice-credentials").await.ok()?;
        (secret
            .labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str)
            == Some("agent-auth-operator"))
        .then_some(())
    })
    .await;
    assert_eq!(
        state(&accounts.get("alice").await.unwrap()),
        Some(AccountState::Active)
    );

    // The operator's copy deleted by hand: the agent Secret goes too, and a new link is issued.
    let copy = format!("agentauth-{}", alice.uid().unwrap());
    Api::<Secret>::namespaced(client.clone(), OPERATOR_NS)
        .delete(&copy, &DeleteParams::default())
        .await
        .unwrap();
    let pending = wait_state(accounts, "alice", AccountState::PendingAuth).await;
    assert!(link(&pending).is_some());
    eventually(REACT, "the agent Secret removed", || async {
        secrets
            .get_opt("alice-credentials")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_form_credential_is_never_sent_to_endpoints_added_later() {
    let env = setup("tenancy-form").await;
    stack();
    tenant(&env, "tenant-form").await;
    let ns = env.ns.clone();
    hygiene::remember("sk-team-key-4417");
    platform_secret(&env, "team-key", &[("api_key", "sk-team-key-4417")], true).await;
    apply_as(
        "tenant-form",
        &ns,
        &[
            json!({"apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection", "metadata": {"name": "crm"},
                "spec": {"authType": "APIKey", "apiKey": {"fields": [{"name": "api_key"}]}}}),
            json!({"apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount", "metadata": {"name": "team"},
                "spec": {"connectionRef": {"name": "crm"}, "identifier": "team", "credentialsRef": {"name": "team-key"}}}),
        ],
    );
    wait_state(&env.accounts, "team", AccountState::Active).await;
    // The tenant turns the Connection into an OAuth 2.0 one whose endpoints are its own, then
    // disconnects: the stored API key must not be "revoked" there.
    let attacker = attacker("127.0.0.1").await;
    let patch = json!({"spec": {"authType": "OAuth2", "apiKey": null, "oauth2": {"clientId": "x",
        "tokenEndpointAuthMethod": "None",
        "authorizationUrl": format!("{}/auth", attacker.url()), "tokenUrl": format!("{}/token", attacker.url()),
        "revocationUrl": format!("{}/revoke", attacker.url())}}});
    patch_as("tenant-form", &ns, "connection", "crm", &patch.to_string());
    // A tenant's Connection cannot pass for a ClusterConnection by annotation.
    let (ok, out) = kubectl_as(
        "tenant-form",
        &ns,
        &[
            "annotate",
            "connection",
            "crm",
            "agentauth.dev/cluster-connection=true",
        ],
        None,
    );
    assert!(ok, "{out}");
    patch_as(
        "tenant-form",
        &ns,
        "connectedaccount",
        "team",
        r#"{"spec":{"disconnected":true}}"#,
    );
    wait_state(&env.accounts, "team", AccountState::Disconnected).await;
    let conns: Api<Connection> = Api::namespaced(env.client.clone(), &ns);
    let redirect = eventually(REACT, "the Connection's own redirect URI", || async {
        conns.get("crm").await.ok()?.status?.redirect_uri
    })
    .await;
    assert!(
        redirect.contains(&format!("/oauth/callback/ns/{ns}/crm")),
        "{redirect}"
    );
    attacker.assert_untouched("endpoints added to a form Connection after its key was stored");
}
