//! What a tenant or an agent pod might try: revoked grants, re-created objects, and ClusterConnections
//! used from namespaces they do not admit.

use super::*;

/// The reviews' caches do not outlive what they cache by more than their TTL: a deleted
/// RoleBinding, a deleted and re-created ServiceAccount of the same name, and an account deleted
/// and re-created under the same name (a new UID, no credential yet) all stop the old answer.
#[tokio::test]
async fn revoked_grants_and_recreated_objects_stop_the_old_answer() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::RoleBinding;
    let env = setup("broker-revoke").await;
    let s = stack();
    let (client, ns, accounts, _) = env.parts();
    dex_connection(client, ns, "mail", &s.dex, &["openid", "email", "offline_access"]).await;
    patch_connection(client, ns, "mail", json!({"spec": {"delivery": "Broker"}})).await;
    authorized(client, ns, "erin", "mail", &s.dex.user(3)).await;
    service_account(client, ns, "agent", &["use"], None).await;
    let erin = named(ns, "erin");
    let agent = token(client, ns, "agent", Some(AUDIENCE)).await;
    let first = exchange(&agent, &[("resource", &erin)]).await;
    assert_eq!(first.0, 200, "{}", first.1);
    let old_access = first.1["access_token"].as_str().unwrap().to_owned();
    common::hygiene::remember(&old_access);
    // The cache TTL is 10 s; a second of slack for the API server's own RBAC cache.
    let within = Duration::from_secs(12);

    // The RoleBinding goes: refused within the TTL.
    let bindings: kube::Api<RoleBinding> = kube::Api::namespaced(client.clone(), ns);
    let started = std::time::Instant::now();
    bindings.delete("agent", &Default::default()).await.unwrap();
    eventually(within, "refused once the RoleBinding is gone", || async {
        (exchange(&agent, &[("resource", &erin)]).await.0 == 403).then_some(())
    })
    .await;
    assert!(started.elapsed() <= within);

    // The ServiceAccount is deleted and re-created under the same name, with its grant back: the
    // old ServiceAccount's token stops within the TTL; the new one's works.
    let sas: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), ns);
    sas.delete("agent", &Default::default()).await.unwrap();
    common::fixtures::wait_gone(&sas, "agent").await;
    kube::Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(client.clone(), ns)
        .delete("agent", &Default::default())
        .await
        .unwrap();
    service_account(client, ns, "agent", &["use"], None).await;
    let started = std::time::Instant::now();
    eventually(within, "the deleted ServiceAccount's token refused", || async {
        (exchange(&agent, &[("resource", &erin)]).await.0 == 401).then_some(())
    })
    .await;
    assert!(started.elapsed() <= within);
    let renewed = token(client, ns, "agent", Some(AUDIENCE)).await;
    eventually(within, "the new ServiceAccount's grant", || async {
        (exchange(&renewed, &[("resource", &erin)]).await.0 == 200).then_some(())
    })
    .await;

    // The account is deleted and re-created under the same name: the new one (a new UID, never
    // authorized) never hands out the old one's token.
    accounts.delete("erin", &Default::default()).await.unwrap();
    common::fixtures::wait_gone(accounts, "erin").await;
    account(client, ns, "erin", "mail", json!({})).await;
    wait_account(accounts, "erin", "link", |a| link(a).is_some()).await;
    let pending = eventually(REACT, "the re-created account is PENDING_AUTH", || async {
        let a = exchange(&renewed, &[("resource", &erin)]).await;
        assert!(
            a.1["access_token"].as_str() != Some(old_access.as_str()),
            "the re-created account handed out the deleted one's token"
        );
        (a.0 == 409).then_some(a)
    })
    .await;
    assert_eq!(pending.1["state"], "PENDING_AUTH");
}

/// A ClusterConnection serves only the namespaces its selector picks, through the broker too:
/// an account in a namespace it does not admit is refused (ERROR), and one whose namespace stops
/// being admitted stops being served, whatever RBAC its callers have.
#[tokio::test]
async fn a_cluster_connection_is_brokered_only_to_the_namespaces_it_admits() {
    use agent_auth_operator::api::ClusterConnection;
    use common::operator::{OPERATOR_NS, PLATFORM_CONNECTION};
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use kube::api::{ObjectMeta, PostParams};
    let allowed = setup("broker-cc-in").await;
    let other = setup("broker-cc-out").await;
    let s = stack();
    let client = &allowed.client;
    let label = |v: Option<&str>| json!({"metadata": {"labels": {"agentauth.dev/broker-dex": v}}});
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    let pp = PatchParams::default();
    namespaces
        .patch(&allowed.ns, &pp, &Patch::Merge(label(Some("true"))))
        .await
        .unwrap();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("broker-dex-oauth".into()),
            labels: Some(agent_auth_operator::store::secret_ref::opt_in_labels()),
            ..Default::default()
        },
        string_data: Some([("client-secret".to_owned(), s.dex.client_secret.clone())].into()),
        ..Default::default()
    };
    kube::Api::<Secret>::namespaced(client.clone(), OPERATOR_NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let cc: ClusterConnection = serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "ClusterConnection",
        "metadata": {"name": PLATFORM_CONNECTION},
        "spec": {"authType": "OAuth2", "delivery": "Broker",
            "oauth2": {"clientId": s.dex.next_client_id(), "clientSecretRef": {"name": "broker-dex-oauth", "key": "client-secret"},
                "authorizationUrl": s.dex.authorization_url(), "tokenUrl": s.dex.token_url(),
                "scopes": ["openid", "email", "offline_access"]},
            "namespaceSelector": {"matchLabels": {"agentauth.dev/broker-dex": "true"}}}}))
    .unwrap();
    let ccs: kube::Api<ClusterConnection> = kube::Api::all(client.clone());
    ccs.create(&PostParams::default(), &cc).await.unwrap();
    let cluster_ref = json!({"connectionRef": {"kind": "ClusterConnection", "name": PLATFORM_CONNECTION}});
    account(
        client,
        &allowed.ns,
        "frank",
        PLATFORM_CONNECTION,
        cluster_ref.clone(),
    )
    .await;
    let pending = wait_account(&allowed.accounts, "frank", "link", |a| link(a).is_some()).await;
    common::fixtures::sign_in(&link(&pending).unwrap(), &s.dex.user(4)).await;
    let active = wait_state(&allowed.accounts, "frank", AccountState::Active).await;
    common::fixtures::remember_credentials(client, &allowed.ns, &active).await;
    service_account(client, &allowed.ns, "agent", &["use"], None).await;
    let agent = token(client, &allowed.ns, "agent", Some(AUDIENCE)).await;
    let frank = named(&allowed.ns, "frank");
    let served = exchange(&agent, &[("resource", &frank)]).await;
    assert_eq!(served.0, 200, "{}", served.1);
    common::hygiene::remember(served.1["access_token"].as_str().unwrap());

    // The platform's `delivery: Broker` is a floor: an account asking for a Secret (as its tenant
    // may) gets none, and the broker still serves it.
    let asked = allowed
        .accounts
        .patch(
            "frank",
            &pp,
            &Patch::Merge(json!({"spec": {"delivery": "SecretAndBroker"}})),
        )
        .await
        .unwrap();
    let generation = asked.metadata.generation;
    let seen = wait_account(&allowed.accounts, "frank", "the new generation reconciled", |a| {
        a.status.as_ref().and_then(|s| s.observed_generation) == generation
    })
    .await;
    assert!(
        seen.status.as_ref().unwrap().secret_name.is_none(),
        "{:?}",
        seen.status
    );
    let agent_secret = allowed.secrets.get_opt("frank-credentials").await.unwrap();
    assert!(
        agent_secret.is_none(),
        "a tenant pulled the platform's credential into its namespace"
    );
    assert_eq!(exchange(&agent, &[("resource", &frank)]).await.0, 200);

    // A namespace the selector does not pick: ERROR, and the broker says so.
    account(client, &other.ns, "gina", PLATFORM_CONNECTION, cluster_ref).await;
    wait_state(&other.accounts, "gina", AccountState::Error).await;
    service_account(client, &other.ns, "agent", &["use"], None).await;
    let outsider = token(client, &other.ns, "agent", Some(AUDIENCE)).await;
    let gina = exchange(&outsider, &[("resource", &named(&other.ns, "gina"))]).await;
    assert_eq!(
        (refused(&gina, 409).as_str(), gina.1["state"].as_str()),
        ("account_not_active", Some("ERROR"))
    );

    // The namespace stops being picked: its account is no longer served.
    namespaces
        .patch(&allowed.ns, &pp, &Patch::Merge(label(None)))
        .await
        .unwrap();
    let stopped = eventually(
        REACT,
        "frank refused once its namespace is not admitted",
        || async {
            let a = exchange(&agent, &[("resource", &frank)]).await;
            (a.0 != 200).then_some(a)
        },
    )
    .await;
    assert_eq!(
        (refused(&stopped, 409).as_str(), stopped.1["state"].as_str()),
        ("account_not_active", Some("ERROR"))
    );
    ccs.delete(PLATFORM_CONNECTION, &Default::default())
        .await
        .unwrap();
}
