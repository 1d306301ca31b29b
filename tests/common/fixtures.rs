//! Resources and waits that the OAuth tests share.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use agent_auth_operator::api::{AccountState, ConnectedAccount, Connection};
use agent_auth_operator::store::secret_ref::opt_in_labels;
use agentauth_testcluster::fixtures::{ConnectionFixture, labelled_secret};
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use super::dex::Dex;
use super::eventually;

/// How long a test waits for the operator to react.
pub const REACT: Duration = Duration::from_secs(30);

/// Creates the client-secret Secret and a Connection for Dex with `scopes`.
pub async fn dex_connection(
    client: &kube::Client,
    ns: &str,
    name: &str,
    dex: &Dex,
    scopes: &[&str],
) -> Connection {
    let oauth2 = json!({
        // One client per namespace: the operator refuses a client another namespace uses.
        "clientId": dex.next_client_id(),
        "authorizationUrl": dex.authorization_url(),
        "tokenUrl": dex.token_url(),
        "scopes": scopes,
        // Dex registers the shared callback of earlier releases (tests/tenancy.rs covers the
        // per-Connection one).
        "legacyRedirectUri": true,
    });
    oauth_connection(
        client,
        ns,
        name,
        &dex.client_secret,
        oauth2,
        json!({"authorizationLink": {"ttl": "1h"}}),
    )
    .await
}

/// An `OAuth2` Connection `name` whose client secret is in an opted-in Secret `<name>-oauth`:
/// `oauth2` is its `spec.oauth2` (without `clientSecretRef`), `extra` more of its spec.
pub async fn oauth_connection(
    client: &kube::Client,
    ns: &str,
    name: &str,
    client_secret: &str,
    oauth2: serde_json::Value,
    extra: serde_json::Value,
) -> Connection {
    ConnectionFixture::oauth2(name, client_secret, oauth2, opt_in_labels())
        .extra(extra)
        .create(client, ns)
        .await
        .unwrap()
}

/// The agent Secret of `account` as text, once it exists.
pub async fn published(client: &kube::Client, ns: &str, account: &str) -> BTreeMap<String, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s = eventually(REACT, &format!("{account} Secret"), || async {
        secrets
            .get_opt(&format!("{account}-credentials"))
            .await
            .ok()
            .flatten()
    })
    .await;
    secret_text(&s)
}

/// Creates (or keeps) a Secret the operator may read (`agentauth.dev/usable`), holding `key`.
pub async fn opted_in_secret(client: &kube::Client, ns: &str, name: &str, key: &str, value: &str) {
    labelled_secret(client, ns, name, opt_in_labels(), key, value)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Merge-patches Connection `name`.
pub async fn patch_connection(client: &kube::Client, ns: &str, name: &str, patch: serde_json::Value) {
    Api::<Connection>::namespaced(client.clone(), ns)
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
}

/// Creates a ConnectedAccount for `connection`.
pub async fn account(
    client: &kube::Client,
    ns: &str,
    name: &str,
    connection: &str,
    extra_spec: serde_json::Value,
) -> ConnectedAccount {
    let mut spec =
        json!({"connectionRef": {"name": connection}, "identifier": format!("{name}@example.com")});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        s.extend(extra.clone());
    }
    let a: ConnectedAccount = serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap();
    Api::<ConnectedAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &a)
        .await
        .unwrap()
}

/// Waits until the account satisfies `pred`, and returns it.
pub async fn wait_account(
    api: &Api<ConnectedAccount>,
    name: &str,
    what: &str,
    pred: impl Fn(&ConnectedAccount) -> bool,
) -> ConnectedAccount {
    eventually(REACT, &format!("{name}: {what}"), || async {
        let a = api.get_opt(name).await.ok().flatten()?;
        pred(&a).then_some(a)
    })
    .await
}

pub fn state(a: &ConnectedAccount) -> Option<AccountState> {
    a.status.as_ref().and_then(|s| s.state)
}

pub fn link(a: &ConnectedAccount) -> Option<String> {
    a.status.as_ref().and_then(|s| s.authorization_link.clone())
}

/// The Ready condition's (status, reason).
pub fn ready(a: &ConnectedAccount) -> Option<(String, String)> {
    let c = a
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone()))
}

/// The Ready condition's message ("" when there is none).
pub fn ready_message(a: &ConnectedAccount) -> String {
    let conditions = a.status.as_ref().map(|s| s.conditions.as_slice());
    conditions
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Waits for `state` with a link in the status, and returns the account.
pub async fn wait_state(api: &Api<ConnectedAccount>, name: &str, want: AccountState) -> ConnectedAccount {
    wait_account(api, name, &format!("state {want:?}"), |a| state(a) == Some(want)).await
}

/// The text data of a Secret.
pub fn secret_text(s: &Secret) -> BTreeMap<String, String> {
    s.data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

/// Reasons of the Events recorded for an object.
pub async fn event_reasons(client: &kube::Client, ns: &str, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    events
        .list(&lp)
        .await
        .map(|l| l.items.into_iter().filter_map(|e| e.reason).collect())
        .unwrap_or_default()
}

/// Waits until an Event with `reason` is recorded for `name` (Events are written in the background).
pub async fn wait_event(client: &kube::Client, ns: &str, name: &str, reason: &str) {
    eventually(REACT, &format!("{name}: Event {reason}"), || async {
        event_reasons(client, ns, name)
            .await
            .iter()
            .any(|r| r == reason)
            .then_some(())
    })
    .await
}

/// All Events of a namespace, as JSON text (for secret scans).
pub async fn events_text(client: &kube::Client, ns: &str) -> String {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default())
        .await
        .map(|l| serde_json::to_string(&l.items).unwrap_or_default())
        .unwrap_or_default()
}

/// Creates an account on `connection`, plays `user` through its link, and returns it once ACTIVE.
pub async fn authorized(
    client: &kube::Client,
    ns: &str,
    name: &str,
    connection: &str,
    user: &super::dex::DexUser,
) -> ConnectedAccount {
    let accounts: Api<ConnectedAccount> = Api::namespaced(client.clone(), ns);
    account(client, ns, name, connection, json!({})).await;
    let pending = wait_account(&accounts, name, "link", |a| link(a).is_some()).await;
    sign_in(&link(&pending).unwrap(), user).await;
    let active = wait_state(&accounts, name, AccountState::Active).await;
    remember_credentials(client, ns, &active).await;
    active
}

/// Remembers the account's access and refresh tokens for the exit-time hygiene scan.
pub async fn remember_credentials(client: &kube::Client, ns: &str, account: &ConnectedAccount) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    // `delivery: Broker` writes no agent Secret (and status names none).
    if let Some(name) = account.status.as_ref().and_then(|s| s.secret_name.clone()) {
        let published = eventually(REACT, "agent Secret", || async {
            secrets.get_opt(&name).await.ok().flatten()
        })
        .await;
        if let Some(t) = published.data.as_ref().and_then(|d| d.get("access_token")) {
            super::hygiene::remember(&String::from_utf8_lossy(&t.0));
        }
    }
    let r = credential_record(client, account).await;
    for key in ["accessToken", "refreshToken"] {
        if let Some(t) = r["tokens"][key].as_str() {
            super::hygiene::remember(t);
        }
    }
}

/// The operator's record of `account` (its copy in the operator's namespace), `null` if none.
pub async fn credential_record(client: &kube::Client, account: &ConnectedAccount) -> serde_json::Value {
    use kube::ResourceExt;
    let copies: Api<Secret> = Api::namespaced(client.clone(), super::operator::OPERATOR_NS);
    let copy = copies
        .get_opt(&format!("agentauth-{}", account.uid().unwrap_or_default()))
        .await
        .ok()
        .flatten();
    copy.and_then(|c| c.data)
        .and_then(|d| d.get("record.json").cloned())
        .and_then(|r| serde_json::from_slice(&r.0).ok())
        .unwrap_or_default()
}

/// Waits until the named object no longer exists.
pub async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(REACT, &format!("{name} gone"), || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await
}

/// Plays `user` through `link` at Dex and asserts the gateway's page says the account is connected.
pub async fn sign_in(link: &str, user: &super::dex::DexUser) {
    let page = super::dex::login(&super::dex::browser(), link, user)
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "authorization through {link}");
}
