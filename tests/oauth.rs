//! The OAuth 2.0 lifecycle end to end: real kube-apiserver, real Dex, the operator binary, and a
//! scripted user. Every assertion is something a platform engineer or user would see.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use agent_auth_operator::api::{AccountState, Connection};
use agentauth_testcluster::recorder::{Answer, Recorder, Reply};
use common::dex::{browser, login};
use common::fixtures::*;
use common::operator::{OPERATOR_NS, Operator, stack};
use common::{eventually, setup};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

async fn credential_copies(client: &kube::Client, uid: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), OPERATOR_NS)
        .get_opt(&format!("agentauth-{uid}"))
        .await
        .unwrap()
}

#[tokio::test]
async fn user_authorizes_token_refreshes_reauthorize_disconnect_delete() {
    let env = setup("oauth-life").await;
    let s = stack();
    let (client, ns, accounts, secrets) = env.parts();
    let user = s.dex.user(0);

    dex_connection(client, ns, "dex", &s.dex, &["openid", "email", "offline_access"]).await;
    let conns: Api<Connection> = Api::namespaced(client.clone(), ns);
    let conn = eventually(REACT, "Connection Ready", || async {
        let c = conns.get("dex").await.ok()?;
        let st = c.status.clone()?;
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(c)
    })
    .await;
    assert_eq!(
        conn.status.unwrap().redirect_uri.unwrap(),
        format!("{}/oauth/callback", s.operator.gateway_url)
    );

    account(client, ns, "alice", "dex", json!({})).await;
    let pending = wait_state(accounts, "alice", AccountState::PendingAuth).await;
    let first_link = link(&pending).expect("a link while PENDING_AUTH");
    assert!(first_link.starts_with(&format!("{}/connect/", s.operator.gateway_url)));
    assert!(
        pending
            .status
            .as_ref()
            .unwrap()
            .authorization_link_expires_at
            .is_some()
    );
    assert_eq!(
        ready(&pending),
        Some(("False".into(), "AwaitingAuthorization".into()))
    );

    // The user opens the link and signs in at Dex.
    let page = login(&browser(), &first_link, &user).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Account connected"));

    let active = wait_state(accounts, "alice", AccountState::Active).await;
    let st = active.status.clone().unwrap();
    assert_eq!(st.secret_name.as_deref(), Some("alice-credentials"));
    assert!(st.authorization_link.is_none(), "the link is spent");
    assert!(st.expires_at.is_some() && st.next_refresh_at.is_some() && st.last_refreshed_at.is_some());
    assert_eq!(ready(&active), Some(("True".into(), "Active".into())));

    let secret = eventually(REACT, "agent Secret", || async {
        secrets.get_opt("alice-credentials").await.unwrap()
    })
    .await;
    let data = secret_text(&secret);
    for key in [
        "authorization",
        "access_token",
        "token_type",
        "expires_at",
        "scope",
        "credentials.json",
    ] {
        assert!(data.contains_key(key), "agent Secret has {key}");
    }
    assert_eq!(data["authorization"], format!("Bearer {}", data["access_token"]));
    assert_eq!(
        secret.labels()["app.kubernetes.io/managed-by"],
        "agent-auth-operator"
    );
    let me: serde_json::Value = reqwest::Client::new()
        .get(s.dex.userinfo_url())
        .header("Authorization", &data["authorization"])
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        me["email"], user.email,
        "the published token works at the provider"
    );

    // The operator's copy holds the refresh token; the agent Secret does not.
    let copy = credential_copies(client, &active.uid().unwrap())
        .await
        .expect("operator-side copy");
    let record: serde_json::Value = serde_json::from_slice(&copy.data.unwrap()["record.json"].0).unwrap();
    let refresh_token = record["tokens"]["refreshToken"]
        .as_str()
        .expect("refresh token stored")
        .to_owned();
    common::hygiene::remember(&refresh_token);
    common::hygiene::remember(&data["access_token"]);
    assert!(data.values().all(|v| !v.contains(&refresh_token)));

    // Refresh before expiry: same Secret, new access token.
    let uid_before = secret.uid();
    let refreshed = eventually(
        std::time::Duration::from_secs(60),
        "access token refreshed",
        || async {
            let s = secrets.get_opt("alice-credentials").await.ok()??;
            (secret_text(&s)["access_token"] != data["access_token"]).then_some(s)
        },
    )
    .await;
    assert_eq!(refreshed.uid(), uid_before, "updated in place");
    let after = accounts.get("alice").await.unwrap();
    assert_eq!(state(&after), Some(AccountState::Active));
    wait_event(client, ns, "alice", "Refreshed").await;

    // Reauthorize: a fresh link while the old credentials keep working.
    let patch = json!({"metadata": {"annotations": {"agentauth.dev/reauthorize": "1"}}});
    accounts
        .patch("alice", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let reauth = wait_account(accounts, "alice", "reauthorization link", |a| link(a).is_some()).await;
    assert_eq!(state(&reauth), Some(AccountState::Active));
    assert!(secrets.get_opt("alice-credentials").await.unwrap().is_some());
    let page = login(&browser(), &link(&reauth).unwrap(), &user).await.unwrap();
    assert_eq!(page.status(), 200);
    wait_account(accounts, "alice", "link spent after re-authorization", |a| {
        link(a).is_none() && state(a) == Some(AccountState::Active)
    })
    .await;

    // A spent link is refused.
    let reused = browser().get(link(&reauth).unwrap()).send().await.unwrap();
    assert_eq!(reused.status(), 410);

    // Disconnect removes every copy; clearing it issues a new link.
    let patch = json!({"spec": {"disconnected": true}});
    accounts
        .patch("alice", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let disconnected = wait_state(accounts, "alice", AccountState::Disconnected).await;
    assert!(link(&disconnected).is_none());
    wait_gone(secrets, "alice-credentials").await;
    assert!(
        credential_copies(client, &disconnected.uid().unwrap())
            .await
            .is_none()
    );
    let patch = json!({"spec": {"disconnected": false}});
    accounts
        .patch("alice", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let again = wait_account(accounts, "alice", "new link after reconnect", |a| {
        state(a) == Some(AccountState::PendingAuth) && link(a).is_some()
    })
    .await;
    assert_ne!(link(&again), Some(first_link));
    let page = login(&browser(), &link(&again).unwrap(), &user).await.unwrap();
    assert_eq!(page.status(), 200);
    let active = wait_state(accounts, "alice", AccountState::Active).await;
    let metrics = s.operator.metrics().await.unwrap();
    assert!(
        metrics.contains(&format!(
            r#"agentauth_accounts{{namespace="{ns}",connection="dex",state="ACTIVE"}} 1"#
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        r#"agentauth_token_expiry_timestamp_seconds{{namespace="{ns}",name="alice"}}"#
    )));

    // Delete: the finalizer removes every stored copy, then the account goes.
    let uid = active.uid().unwrap();
    eventually(REACT, "credential copy present", || async {
        credential_copies(client, &uid).await
    })
    .await;
    accounts.delete("alice", &DeleteParams::default()).await.unwrap();
    wait_gone(accounts, "alice").await;
    assert!(credential_copies(client, &uid).await.is_none());
    wait_gone(secrets, "alice-credentials").await;

    // Metrics report what happened.
    let metrics = s.operator.metrics().await.unwrap();
    let refreshes =
        format!(r#"agentauth_refreshes_total{{namespace="{ns}",connection="dex",result="success"}}"#);
    assert!(metrics.contains(&refreshes), "refresh counter in:\n{metrics}");
    assert!(metrics.contains(r#"agentauth_gateway_requests_total{route="/connect/{token}",status="200"}"#));
    assert!(
        metrics
            .contains(r#"agentauth_gateway_requests_total{route="/connect/{token}/continue",status="200"}"#)
    );
    assert!(metrics.contains(r#"agentauth_gateway_requests_total{route="/oauth/callback",status="200"}"#));
    assert!(metrics.contains(r#"agentauth_reconcile_duration_seconds_count{controller="account"}"#));

    // Nothing secret leaked into logs, Events, status or metrics.
    let logs = s.operator.logs();
    let events = events_text(client, ns).await;
    let statuses =
        serde_json::to_string(&accounts.list(&ListParams::default()).await.unwrap().items).unwrap();
    for (what, value) in [
        ("access token", data["access_token"].as_str()),
        (
            "refreshed access token",
            secret_text(&refreshed)["access_token"].as_str(),
        ),
        ("refresh token", refresh_token.as_str()),
        ("client secret", s.dex.client_secret.as_str()),
    ] {
        for (place, text) in [
            ("operator logs", &logs),
            ("events", &events),
            ("status", &statuses),
        ] {
            assert!(!text.contains(value), "{what} appears in {place}");
        }
    }
}

#[tokio::test]
async fn token_revoked_at_the_provider_ends_in_expired_with_a_new_link() {
    let env = setup("oauth-revoked").await;
    let s = stack();
    let (client, ns, accounts, _) = env.parts();
    let user = s.dex.user(1);
    dex_connection(client, ns, "dex", &s.dex, &["openid", "email", "offline_access"]).await;
    authorized(client, ns, "bob", "dex", &user).await;

    s.dex.revoke_refresh_tokens(&user).unwrap();
    let expired = eventually(std::time::Duration::from_secs(60), "bob EXPIRED", || async {
        let a = accounts.get("bob").await.ok()?;
        (state(&a) == Some(AccountState::Expired)).then_some(a)
    })
    .await;
    assert!(link(&expired).is_some(), "a new link for the user");
    assert_eq!(ready(&expired), Some(("False".into(), "RefreshRejected".into())));
    wait_event(client, ns, "bob", "RefreshRejected").await;

    // The user authorizes again through the new link.
    sign_in(&link(&expired).unwrap(), &user).await;
    wait_state(accounts, "bob", AccountState::Active).await;
}

#[tokio::test]
async fn missing_connection_is_an_error_until_it_appears() {
    let env = setup("oauth-noconn").await;
    let s = stack();
    let (client, ns, accounts, _) = env.parts();
    account(client, ns, "carol", "later", json!({})).await;
    let err = wait_state(accounts, "carol", AccountState::Error).await;
    assert_eq!(ready(&err), Some(("False".into(), "ConnectionNotFound".into())));
    assert!(link(&err).is_none());
    wait_event(client, ns, "carol", "ConnectionNotFound").await;

    dex_connection(client, ns, "later", &s.dex, &["openid"]).await;
    let fixed = wait_state(accounts, "carol", AccountState::PendingAuth).await;
    assert!(link(&fixed).is_some());
}

#[tokio::test]
async fn connection_without_its_client_secret_marks_only_its_own_accounts() {
    let env = setup("oauth-badconn").await;
    let s = stack();
    let (client, ns, accounts, _) = env.parts();
    dex_connection(client, ns, "good", &s.dex, &["openid"]).await;
    let mut broken: Connection = serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection", "metadata": {"name": "broken"},
        "spec": {"authType": "OAuth2", "oauth2": {
            "clientId": "x", "clientSecretRef": {"name": "nope", "key": "k"},
            "authorizationUrl": s.dex.authorization_url(), "tokenUrl": s.dex.token_url()}}
    }))
    .unwrap();
    broken = Api::<Connection>::namespaced(client.clone(), ns)
        .create(&Default::default(), &broken)
        .await
        .unwrap();
    account(client, ns, "on-broken", &broken.name_any(), json!({})).await;
    account(client, ns, "on-good", "good", json!({})).await;
    // The Connection controller's finding reaches the account.
    let bad = wait_account(accounts, "on-broken", "ERROR naming the missing Secret", |a| {
        state(a) == Some(AccountState::Error) && ready_message(a).contains("Secret nope not found")
    })
    .await;
    assert_eq!(ready(&bad).unwrap().1, "ConnectionNotReady");
    wait_state(accounts, "on-good", AccountState::PendingAuth).await;
}

#[tokio::test]
async fn added_scopes_ask_for_reauthorization_while_the_old_token_keeps_working() {
    let env = setup("oauth-scopes").await;
    let s = stack();
    let (client, ns, accounts, secrets) = env.parts();
    let user = s.dex.user(2);
    dex_connection(client, ns, "dex", &s.dex, &["openid", "offline_access"]).await;
    let active = authorized(client, ns, "dan", "dex", &user).await;
    assert_eq!(
        active.status.unwrap().granted_scopes,
        vec!["openid", "offline_access"]
    );

    let patch = json!({"spec": {"oauth2": {"scopes": ["openid", "offline_access", "email"]}}});
    Api::<Connection>::namespaced(client.clone(), ns)
        .patch("dex", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let changed = wait_account(accounts, "dan", "ScopesChanged", |a| {
        ready(a).is_some_and(|r| r.1 == "ScopesChanged")
    })
    .await;
    assert_eq!(
        state(&changed),
        Some(AccountState::Active),
        "the old token keeps working"
    );
    assert!(link(&changed).is_some());
    assert!(secrets.get_opt("dan-credentials").await.unwrap().is_some());

    sign_in(&link(&changed).unwrap(), &user).await;
    let done = wait_account(accounts, "dan", "Ready after re-consent", |a| {
        ready(a).is_some_and(|r| r.0 == "True")
    })
    .await;
    assert!(done.status.unwrap().granted_scopes.contains(&"email".to_owned()));
}

#[tokio::test]
async fn a_secret_the_operator_did_not_create_is_never_overwritten() {
    let env = setup("oauth-conflict").await;
    let s = stack();
    let (client, ns, accounts, secrets) = env.parts();
    let theirs: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shared"}, "stringData": {"password": "hunter2"}
    }))
    .unwrap();
    secrets.create(&Default::default(), &theirs).await.unwrap();
    dex_connection(client, ns, "dex", &s.dex, &["openid", "offline_access"]).await;
    account(client, ns, "erin", "dex", json!({"secretName": "shared"})).await;
    // Found before a user is sent a link: nobody is told "connected" for a credential that cannot
    // be published.
    let err = wait_account(accounts, "erin", "SecretConflict", |a| {
        ready(a).is_some_and(|r| r.1 == "SecretConflict")
    })
    .await;
    assert_eq!(state(&err), Some(AccountState::Error));
    assert_eq!(link(&err), None);
    assert_eq!(ready(&err).unwrap().1, "SecretConflict");
    let still = secrets.get("shared").await.unwrap();
    assert_eq!(
        secret_text(&still),
        [("password".to_owned(), "hunter2".to_owned())].into()
    );
    assert!(still.owner_references().is_empty());
}

#[tokio::test]
async fn the_api_server_rejects_malformed_connections_with_a_message() {
    let env = setup("oauth-schema").await;
    let conns: Api<kube::api::DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &env.ns,
        &kube::api::ApiResource::erase::<Connection>(&()),
    );
    let cases = [
        (json!({"authType": "OAuth2"}), "spec.oauth2 must be set"),
        (
            json!({"authType": "Kerberos", "oauth2": {"clientId": "c"}}),
            "Unsupported value",
        ),
        (
            json!({"authType": "OAuth2", "oauth2": {"clientId": "c", "authorizationUrl": "not a url", "tokenUrl": "https://t.test/token"}}),
            "must be an http(s) URL",
        ),
        (
            json!({"authType": "OAuth2", "oauth2": {"clientId": "c"}}),
            "authorizationUrl and tokenUrl are required",
        ),
        (
            json!({"authType": "OAuth2", "provider": "google", "oauth2": {"clientId": "c"}, "authorizationLink": {"ttl": "tomorrow"}}),
            "spec.authorizationLink.ttl",
        ),
        (
            json!({"authType": "OAuth2", "provider": "google", "oauth2": {"clientId": "c"}, "authorizationLink": {"ttl": "169h"}}),
            "a link lives at most 168h (7 days)",
        ),
    ];
    for (i, (spec, expected)) in cases.into_iter().enumerate() {
        let mut obj = kube::api::DynamicObject::new(
            &format!("bad-{i}"),
            &kube::api::ApiResource::erase::<Connection>(&()),
        );
        obj.data = json!({"spec": spec});
        let err = conns
            .create(&Default::default(), &obj)
            .await
            .expect_err("rejected")
            .to_string();
        assert!(err.contains(expected), "case {i}: expected {expected:?} in {err}");
    }
}

#[tokio::test]
async fn a_converged_account_costs_no_writes_and_status_has_one_field_manager() {
    let env = setup("oauth-quiet").await;
    let s = stack();
    let (client, ns, accounts, _) = env.parts();
    dex_connection(client, ns, "dex", &s.dex, &["openid"]).await;
    account(client, ns, "leo", "dex", json!({})).await;
    let converged = wait_account(accounts, "leo", "link", |a| link(a).is_some()).await;
    let managers: Vec<String> = converged
        .metadata
        .managed_fields
        .clone()
        .unwrap()
        .into_iter()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(
        managers,
        vec!["agent-auth-operator"],
        "status is applied by one named field manager"
    );

    // A label change triggers a reconcile that has nothing to do: the status stays byte-identical
    // and the only new resourceVersion is our own patch.
    let reconciles = || {
        s.operator
            .logs()
            .lines()
            .filter(|l| l.contains("\"leo\"") && l.contains("reconciled"))
            .count()
    };
    let before = reconciles();
    let patch = json!({"metadata": {"labels": {"touched": "yes"}}});
    let touched = accounts
        .patch("leo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let rv = touched.resource_version();
    // Wait until the operator has reconciled the change, then check it wrote nothing.
    eventually(REACT, "reconcile of the touched account", || async {
        (reconciles() > before).then_some(())
    })
    .await;
    let after = accounts.get("leo").await.unwrap();
    assert_eq!(after.resource_version(), rv, "no write after a no-op reconcile");
    assert_eq!(after.status, converged.status);
}

#[tokio::test]
async fn deleting_an_account_revokes_its_token_at_the_provider() {
    let env = setup("oauth-revoke").await;
    let s = stack();
    let (client, ns, accounts, _) = env.parts();
    let user = s.dex.user(6);

    let conn = dex_connection(client, ns, "dex", &s.dex, &["openid", "offline_access"]).await;
    let client_id = conn.spec.oauth2.unwrap().client_id;
    // Dex has no RFC 7009 endpoint: serve one that checks the client's credentials and the form,
    // then revokes at Dex through its admin API.
    let expected_auth = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:{}", client_id, s.dex.client_secret)
        )
    );
    let expected = expected_auth.clone();
    let revoked_user = user.clone();
    let revoker = Recorder::loopback(Answer::with_async(move |req| {
        let authed = req.header("authorization") == Some(expected.as_str());
        let user = revoked_user.clone();
        async move {
            if (req.method.as_str(), req.path()) != ("POST", "/revoke") {
                return Reply::status(404);
            }
            if !authed {
                return Reply::status(401);
            }
            tokio::task::spawn_blocking(move || stack().dex.revoke_refresh_tokens(&user))
                .await
                .unwrap()
                .unwrap();
            Reply::status(200)
        }
    }))
    .await
    .unwrap();
    let revocation_url = format!("{}/revoke", revoker.url());

    let patch = json!({"spec": {"oauth2": {"revocationUrl": revocation_url}}});
    Api::<Connection>::namespaced(client.clone(), ns)
        .patch("dex", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let active = authorized(client, ns, "mia", "dex", &user).await;
    let uid = active.uid().unwrap();
    let copy = eventually(REACT, "credential copy", || async {
        credential_copies(client, &uid).await
    })
    .await;
    let record: serde_json::Value = serde_json::from_slice(&copy.data.unwrap()["record.json"].0).unwrap();
    assert!(record["tokens"]["refreshToken"].is_string());

    accounts.delete("mia", &DeleteParams::default()).await.unwrap();
    wait_gone(accounts, "mia").await;
    let seen: Vec<(bool, String, String)> = revoker
        .requests()
        .iter()
        .filter(|r| r.path() == "/revoke")
        .map(|r| {
            let authed = r.header("authorization") == Some(expected_auth.as_str());
            let hint = r.form_param("token_type_hint").unwrap_or_default();
            (authed, hint, r.form_param("token").unwrap_or_default())
        })
        .collect();
    assert_eq!(
        seen.len(),
        1,
        "one revocation call; operator said: {}",
        s.operator
            .logs()
            .lines()
            .filter(|l| l.contains("mia") || l.contains("revo"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let (authed, hint, token) = &seen[0];
    assert!(*authed, "client authenticated at the revocation endpoint");
    assert_eq!(hint, "refresh_token");
    // The operator may have rotated the token since we read it; it sends the one it holds.
    assert!(!token.is_empty());
    let current = token.clone();
    let refresh = reqwest::Client::new()
        .post(s.dex.token_url())
        .basic_auth(&client_id, Some(&s.dex.client_secret))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", current.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        refresh.status(),
        400,
        "the revoked refresh token no longer works at Dex"
    );
    assert!(credential_copies(client, &uid).await.is_none());
}

#[tokio::test]
async fn a_deleted_agent_secret_is_rebuilt_from_the_operators_copy() {
    let env = setup("oauth-rebuild").await;
    let s = stack();
    let (client, ns, accounts, secrets) = env.parts();
    dex_connection(client, ns, "dex", &s.dex, &["openid", "offline_access"]).await;
    authorized(client, ns, "nia", "dex", &s.dex.user(7)).await;
    let original = eventually(REACT, "agent Secret", || async {
        secrets.get_opt("nia-credentials").await.unwrap()
    })
    .await;

    secrets
        .delete("nia-credentials", &DeleteParams::default())
        .await
        .unwrap();
    let rebuilt = eventually(REACT, "agent Secret rebuilt", || async {
        secrets
            .get_opt("nia-credentials")
            .await
            .unwrap()
            .filter(|s| s.uid() != original.uid())
    })
    .await;
    assert!(secret_text(&rebuilt)["authorization"].starts_with("Bearer "));
    assert_eq!(
        state(&accounts.get("nia").await.unwrap()),
        Some(AccountState::Active)
    );
}

/// Accounts in `ns` as `agentauth_accounts` counts them now (summed over states).
async fn counted(operator: &Operator, ns: &str) -> f64 {
    let text = operator.metrics().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("agentauth_accounts{") && l.contains(&format!("namespace=\"{ns}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_deleted_account_without_a_finalizer_leaves_no_metrics() {
    let env = setup("metrics-gone").await;
    let s = stack();
    dex_connection(&env.client, &env.ns, "dex", &s.dex, &["openid"]).await;
    account(&env.client, &env.ns, "gus", "dex", json!({})).await;
    let pending = wait_account(&env.accounts, "gus", "link", |a| link(a).is_some()).await;
    assert!(
        pending.finalizers().is_empty(),
        "PENDING_AUTH holds nothing to clean up"
    );
    let op = &s.operator;
    eventually(REACT, "counted in agentauth_accounts", || async {
        (counted(op, &env.ns).await == 1.0).then_some(())
    })
    .await;
    env.accounts
        .delete("gus", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&env.accounts, "gus").await;
    eventually(REACT, "no longer counted", || async {
        (counted(op, &env.ns).await == 0.0).then_some(())
    })
    .await;
}
