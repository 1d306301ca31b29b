//! ServiceAccounts, their RBAC grants on ConnectedAccounts, and their tokens from the real
//! TokenRequest API: the identities the gateway's `/verify` and the token broker trust.

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::json;

/// Creates ServiceAccount `name` in `ns` and, with `verbs`, a Role and RoleBinding granting them
/// on `connectedaccounts` (only on `resource_names` when given).
pub async fn service_account(
    client: &kube::Client,
    ns: &str,
    name: &str,
    verbs: &[&str],
    resource_names: Option<&[&str]>,
) {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    sas.create(&PostParams::default(), &sa).await.unwrap();
    if verbs.is_empty() {
        return;
    }
    let mut rule =
        json!({"apiGroups": ["agentauth.dev"], "resources": ["connectedaccounts"], "verbs": verbs});
    if let Some(names) = resource_names {
        rule["resourceNames"] = json!(names);
    }
    let role: Role = serde_json::from_value(json!({"metadata": {"name": name}, "rules": [rule]})).unwrap();
    Api::<Role>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// A 10-minute token of ServiceAccount `ns/name` from the TokenRequest API, for `audience` (default:
/// the API server's own). Remembered for the hygiene scan.
pub async fn token(client: &kube::Client, ns: &str, name: &str, audience: Option<&str>) -> String {
    token_lasting(client, ns, name, audience, 600).await
}

/// [`token`], valid for `seconds`.
pub async fn token_lasting(
    client: &kube::Client,
    ns: &str,
    name: &str,
    audience: Option<&str>,
    seconds: i64,
) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let mut spec = json!({"expirationSeconds": seconds});
    if let Some(a) = audience {
        spec["audiences"] = json!([a]);
    }
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    let issued: TokenRequest = sas
        .create_subresource("token", name, &PostParams::default(), &request)
        .await
        .unwrap();
    let token = issued.status.unwrap().token.unwrap();
    super::hygiene::remember(&token);
    token
}

/// The ClusterRole a scraper of the operator's `/metrics` needs (the chart's
/// `<fullname>-metrics-reader`, docs/metrics.md).
pub const METRICS_READER: &str = "agentauth-test-metrics-reader";

/// Binds ServiceAccount `ns/name` to [`METRICS_READER`] (created when missing), as a user would
/// bind Prometheus' ServiceAccount.
pub async fn metrics_reader(client: &kube::Client, ns: &str, name: &str) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": METRICS_READER},
        "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    }))
    .unwrap();
    match Api::<ClusterRole>::all(client.clone())
        .create(&PostParams::default(), &role)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("cannot create {METRICS_READER}: {e}"),
    }
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("metrics-reader-{ns}-{name}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": METRICS_READER},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}
