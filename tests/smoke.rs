//! Proves the test cluster is a real Kubernetes control plane: CRDs from `agent-auth-operator crd`
//! install and become Established, resources round-trip through etcd, the status subresource,
//! schema and CEL validation work, and the garbage collector deletes owned objects.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use agent_auth_operator::api::{AccountState, ConnectedAccount, ConnectedAccountStatus};
use common::{eventually, setup};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

fn account(name: &str) -> ConnectedAccount {
    serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1",
        "kind": "ConnectedAccount",
        "metadata": {"name": name},
        "spec": {"connectionRef": {"name": "gmail"}, "identifier": "user-42"}
    }))
    .unwrap()
}

#[tokio::test]
async fn api_server_reports_the_version_it_was_built_as() {
    let env = setup("smoke-version").await;
    let v = env.client.apiserver_version().await.unwrap();
    assert_eq!(v.git_version, "v1.36.3", "kube-apiserver /version");
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "36"));
}

#[tokio::test]
async fn custom_resource_round_trips_with_status() {
    let env = setup("smoke-crud").await;
    let accounts: Api<ConnectedAccount> = Api::namespaced(env.client.clone(), &env.ns);

    let created = accounts
        .create(&PostParams::default(), &account("alice"))
        .await
        .unwrap();
    assert!(created.uid().is_some());
    let got = accounts.get("alice").await.unwrap();
    assert_eq!(got.spec.identifier, "user-42");
    assert!(got.status.is_none(), "status is not set on create");

    let status = ConnectedAccountStatus {
        state: Some(AccountState::PendingAuth),
        ..Default::default()
    };
    let patch = json!({"apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount", "status": status});
    accounts
        .patch_status(
            "alice",
            &PatchParams::apply("agentauth-tests").force(),
            &Patch::Apply(&patch),
        )
        .await
        .unwrap();
    let got = accounts.get("alice").await.unwrap();
    assert_eq!(got.status.and_then(|s| s.state), Some(AccountState::PendingAuth));

    // A spec change through the main resource bumps generation; status writes do not.
    assert_eq!(got.metadata.generation, Some(1));

    accounts.delete("alice", &DeleteParams::default()).await.unwrap();
    eventually(Duration::from_secs(10), "alice deleted", || async {
        accounts.get_opt("alice").await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn api_server_rejects_invalid_objects_with_a_message() {
    let env = setup("smoke-invalid").await;
    let accounts: Api<ConnectedAccount> = Api::namespaced(env.client.clone(), &env.ns);
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &env.ns,
        &kube::api::ApiResource::erase::<ConnectedAccount>(&()),
    );

    // Schema: identifier is required and must not be empty.
    let mut bad =
        kube::api::DynamicObject::new("bob", &kube::api::ApiResource::erase::<ConnectedAccount>(&()));
    bad.data = json!({"spec": {"connectionRef": {"name": "gmail"}}});
    let err = raw.create(&PostParams::default(), &bad).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("spec.identifier") && text.contains("Required"),
        "unexpected error: {text}"
    );

    bad.data = json!({"spec": {"connectionRef": {"name": "gmail"}, "identifier": "x".repeat(300)}});
    let text = raw
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("spec.identifier") && text.contains("253"),
        "unexpected error: {text}"
    );

    bad.data = json!({"spec": {"connectionRef": {"name": "gmail"}, "identifier": "alice", "secretName": "../etc/passwd"}});
    let text = raw
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("spec.secretName"), "unexpected error: {text}");

    bad.data = json!({"spec": {"connectionRef": {"name": "gmail"}, "identifier": ""}});
    let text = raw
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("spec.identifier"), "unexpected error: {text}");

    // CEL: the identifier cannot change after creation.
    accounts
        .create(&PostParams::default(), &account("carol"))
        .await
        .unwrap();
    let change = json!({"spec": {"identifier": "someone-else"}});
    let text = accounts
        .patch("carol", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("identifier is immutable"),
        "unexpected error: {text}"
    );
}

#[tokio::test]
async fn garbage_collector_deletes_secrets_owned_by_a_deleted_account() {
    let env = setup("smoke-gc").await;
    let accounts: Api<ConnectedAccount> = Api::namespaced(env.client.clone(), &env.ns);
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);

    let owner = accounts
        .create(&PostParams::default(), &account("dave"))
        .await
        .unwrap();
    let owner_ref: OwnerReference = owner.controller_owner_ref(&()).unwrap();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("dave-credentials".into()),
            owner_references: Some(vec![owner_ref]),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(
            "authorization".to_owned(),
            "Bearer test".to_owned(),
        )])),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &secret).await.unwrap();

    accounts
        .delete("dave", &DeleteParams::background())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "owned Secret garbage-collected",
        || async {
            secrets
                .get_opt("dave-credentials")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn api_server_rejects_inconsistent_auth_method_settings_with_a_message() {
    let env = setup("smoke-methods").await;
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &env.ns,
        &kube::api::ApiResource::erase::<agent_auth_operator::api::Connection>(&()),
    );
    let reject = |spec: serde_json::Value, want: &'static str| {
        let raw = raw.clone();
        async move {
            let mut c = kube::api::DynamicObject::new(
                "c",
                &kube::api::ApiResource::erase::<agent_auth_operator::api::Connection>(&()),
            );
            c.data = json!({ "spec": spec });
            let text = raw
                .create(&PostParams::default(), &c)
                .await
                .unwrap_err()
                .to_string();
            assert!(text.contains(want), "{spec}: unexpected error: {text}");
        }
    };
    let jwt = json!({"signingKeyRef": {"name": "k", "key": "k"}, "algorithm": "RS256", "issuer": "i"});
    reject(
        json!({"authType": "APIKey", "oauth2": {"clientId": "x"}}),
        "spec.oauth2 must be set exactly when",
    )
    .await;
    reject(
        json!({"authType": "OAuth2", "provider": "google", "oauth2": {"clientId": "x"}, "apiKey": {}}),
        "spec.apiKey is only for authType APIKey",
    )
    .await;
    reject(
        json!({"authType": "CustomJWT"}),
        "spec.customJWT must be set exactly when",
    )
    .await;
    reject(
        json!({"authType": "ClientCredentials", "oauth2": {"clientId": "x"}}),
        "tokenUrl is required for ClientCredentials",
    )
    .await;
    reject(
        json!({"authType": "CustomJWT", "customJWT": jwt, "verification": {"url": "https://p.example/v"}}),
        "spec.verification needs a user",
    )
    .await;
    reject(
        json!({"authType": "APIKey", "apiKey": {"fields": [{"name": "k"}, {"name": "k"}]}}),
        "Duplicate value",
    )
    .await;
    reject(
        json!({"authType": "APIKey", "apiKey": {"fields": [{"name": "authorization"}]}}),
        "reserved for the agent Secret",
    )
    .await;
    reject(
        json!({"authType": "APIKey", "apiKey": {"fields": [{"name": "Bad-Name"}]}}),
        "spec.apiKey.fields[0].name",
    )
    .await;
    let mut bad_claims = jwt.clone();
    bad_claims["claims"] = json!({"exp": "1"});
    reject(
        json!({"authType": "CustomJWT", "customJWT": bad_claims}),
        "registered claims are set by",
    )
    .await;
    let mut bad_alg = jwt;
    bad_alg["algorithm"] = json!("none");
    reject(
        json!({"authType": "CustomJWT", "customJWT": bad_alg}),
        "spec.customJWT.algorithm",
    )
    .await;
}

#[tokio::test]
async fn api_server_rejects_out_of_bounds_refresh_settings_with_a_message() {
    let env = setup("smoke-refresh").await;
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &env.ns,
        &kube::api::ApiResource::erase::<agent_auth_operator::api::Connection>(&()),
    );
    let cases = [
        (
            json!({"timeout": "1h"}),
            "refresh.timeout must be between 1s and 10m",
        ),
        (
            json!({"timeout": "500ms"}),
            "refresh.timeout must be between 1s and 10m",
        ),
        (json!({"timeout": "9".repeat(40) + "s"}), "spec.refresh.timeout"),
        (
            json!({"rotation": {"policy": "Grace"}}),
            "rotation.window is set exactly when policy is Grace",
        ),
        (
            json!({"rotation": {"policy": "Strict", "window": "1m"}}),
            "rotation.window is set exactly when policy is Grace",
        ),
        (
            json!({"rotation": {"policy": "Grace", "window": "48h"}}),
            "rotation.window is at most 24h",
        ),
        (
            json!({"rotation": {"policy": "Sometimes"}}),
            "spec.refresh.rotation.policy",
        ),
        // Durations the operator's parser would not read are refused by the schema itself.
        (json!({"before": "30m1h"}), "spec.refresh.before"),
        (json!({"before": "1.5m"}), "spec.refresh.before"),
        (json!({"before": "1h 30m"}), "spec.refresh.before"),
        (json!({"before": "1d"}), "spec.refresh.before"),
    ];
    for (i, (refresh, words)) in cases.into_iter().enumerate() {
        let mut bad = kube::api::DynamicObject::new(
            &format!("c{i}"),
            &kube::api::ApiResource::erase::<agent_auth_operator::api::Connection>(&()),
        );
        bad.data = json!({"spec": {"authType": "OAuth2", "provider": "google",
            "oauth2": {"clientId": "c", "clientSecretRef": {"name": "s", "key": "k"}},
            "refresh": refresh}});
        let text = raw
            .create(&PostParams::default(), &bad)
            .await
            .unwrap_err()
            .to_string();
        assert!(text.contains(words), "{refresh}: unexpected error: {text}");
    }
}
