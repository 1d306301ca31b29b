//! An object stored in etcd that does not match the operator's types (written while the schema
//! was looser, e.g. by an older CRD version) is reported and skipped; it stops nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use agent_auth_operator::api::{self, AccountState, ConnectedAccount};
use common::fixtures::*;
use common::operator::stack;
use common::{eventually, setup};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn a_malformed_account_does_not_stop_the_controller() {
    let env = setup("malformed").await;
    let s = stack();
    let (client, ns, _, _) = env.parts();
    dex_connection(client, ns, "dex", &s.dex, &["openid"]).await;

    // Loosen the schema, store an account whose identifier is a number, restore the schema.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut loose = api::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "ConnectedAccount")
        .unwrap();
    let version = &mut loose.spec.versions[0];
    version.schema = serde_json::from_value(json!({"openAPIV3Schema": {
        "type": "object", "x-kubernetes-preserve-unknown-fields": true
    }}))
    .unwrap();
    let pp = PatchParams::apply("agentauth-tests").force();
    crds.patch("connectedaccounts.agentauth.dev", &pp, &Patch::Apply(&loose))
        .await
        .unwrap();
    let raw: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::erase::<ConnectedAccount>(&()),
    );
    let mut bad = DynamicObject::new("broken", &kube::api::ApiResource::erase::<ConnectedAccount>(&()));
    bad.data = json!({"spec": {"connectionRef": {"name": "dex"}, "identifier": 12345}});
    // Another, as if a credential had been stored for it before it went bad. (Its bad field has no
    // CEL rule: the API server refuses every update, even a finalizer removal, of an object whose
    // CEL rules fail to evaluate, so nothing could ever delete the first one.)
    let mut held = DynamicObject::new("held", &kube::api::ApiResource::erase::<ConnectedAccount>(&()));
    held.data = json!({"spec": {"connectionRef": {"name": "dex"}, "identifier": "h", "secretName": 12345}});
    held.metadata.finalizers = Some(vec!["agentauth.dev/cleanup".into()]);
    eventually(REACT, "malformed accounts stored", || async {
        raw.create(&PostParams::default(), &bad).await.ok()?;
        raw.create(&PostParams::default(), &held).await.ok().map(|_| ())
    })
    .await;
    common::install_crds(client).await;

    // The controller keeps serving valid accounts created after it.
    let accounts: Api<ConnectedAccount> = Api::namespaced(client.clone(), ns);
    account(client, ns, "fine", "dex", json!({})).await;
    wait_state(&accounts, "fine", AccountState::PendingAuth).await;
    // A bidi override or NUL in the identifier would print as another user: the API server says so.
    let spoof: ConnectedAccount = serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount", "metadata": {"name": "spoof"},
        "spec": {"connectionRef": {"name": "dex"}, "identifier": "user\u{202e}evil\u{0000}"}}))
    .unwrap();
    let refused = accounts.create(&PostParams::default(), &spoof).await.unwrap_err();
    assert!(refused.to_string().contains("spec.identifier"), "{refused}");
    // Odd Unicode in free-form fields is just data.
    account(
        client,
        ns,
        "odd",
        "dex",
        json!({"identifier": "ユーザー👩💻 <odd@example.com>"}),
    )
    .await;
    let odd = wait_account(&accounts, "odd", "link", |a| link(a).is_some()).await;
    let to_provider =
        common::dex::press_continue(&common::dex::browser_until(&s.dex.issuer), &link(&odd).unwrap())
            .await
            .unwrap();
    assert_eq!(to_provider.status(), 200);
    let to_provider = common::dex::provider_url(to_provider).await.unwrap();
    assert!(
        to_provider.as_str().starts_with(s.dex.authorization_url()),
        "{to_provider}"
    );
    eventually(REACT, "the malformed account reported in the log", || async {
        s.operator
            .logs()
            .contains("does not match the schema")
            .then_some(())
    })
    .await;

    // It can still be deleted: the operator removes what it stored and its finalizer without
    // being able to read the spec.
    raw.delete("held", &DeleteParams::default()).await.unwrap();
    wait_gone(&raw, "held").await;
}
