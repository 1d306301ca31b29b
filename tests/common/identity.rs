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
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let mut spec = json!({"expirationSeconds": 600});
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
