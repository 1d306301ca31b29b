//! Objects the integration tests and the benchmark suite create the same way: the operator's CRDs,
//! and Connections whose client secret is in a Secret of their own. The caller passes the
//! operator's types and labels (this crate does not link the operator), so both suites share one
//! copy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// Server-side applies `crds` and waits until each is Established (30 s each).
pub async fn install_crds(
    client: &kube::Client,
    crds: impl IntoIterator<Item = CustomResourceDefinition>,
) -> Result<(), String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply("agentauth-tests").force();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &pp, &Patch::Apply(&crd))
            .await
            .map_err(|e| format!("apply CRD {name}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut wait = Duration::from_millis(20);
        loop {
            let established = api
                .get(&name)
                .await
                .ok()
                .and_then(|c| c.status?.conditions)
                .is_some_and(|conditions| {
                    conditions
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("timed out after 30s waiting for CRD {name} Established"));
            }
            tokio::time::sleep(wait).await; // poll interval
            wait = (wait * 2).min(Duration::from_millis(250));
        }
    }
    Ok(())
}

/// Creates a Secret `name` holding `key: value` with `labels`; one that exists already is kept.
pub async fn labelled_secret(
    client: &kube::Client,
    ns: &str,
    name: &str,
    labels: BTreeMap<String, String>,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
        ..Default::default()
    };
    match Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(format!("create Secret {name}: {e}")),
    }
}

/// A Connection `name` of the OAuth 2.0 family whose client secret is in the Secret
/// `<name>-oauth` under `client-secret`.
#[derive(Clone, Debug)]
pub struct ConnectionFixture {
    pub name: String,
    /// `spec.authType`, `OAuth2` unless set.
    pub auth_type: String,
    pub client_secret: String,
    /// `spec.oauth2` without `clientSecretRef`.
    pub oauth2: Value,
    /// More of the spec.
    pub extra: Value,
    /// Labels of the client-secret Secret (the operator's opt-in).
    pub secret_labels: BTreeMap<String, String>,
}

impl ConnectionFixture {
    /// An `OAuth2` Connection with nothing in its spec but `oauth2`.
    pub fn oauth2(
        name: &str,
        client_secret: &str,
        oauth2: Value,
        secret_labels: BTreeMap<String, String>,
    ) -> ConnectionFixture {
        ConnectionFixture {
            name: name.to_owned(),
            auth_type: "OAuth2".to_owned(),
            client_secret: client_secret.to_owned(),
            oauth2,
            extra: json!({}),
            secret_labels,
        }
    }

    pub fn auth_type(mut self, auth_type: &str) -> ConnectionFixture {
        self.auth_type = auth_type.to_owned();
        self
    }

    pub fn extra(mut self, extra: Value) -> ConnectionFixture {
        self.extra = extra;
        self
    }

    /// The Secret holding the client secret.
    pub fn secret_name(&self) -> String {
        format!("{}-oauth", self.name)
    }

    /// The Connection as a JSON document.
    pub fn document(&self) -> Value {
        let mut oauth2 = self.oauth2.clone();
        oauth2["clientSecretRef"] = json!({"name": self.secret_name(), "key": "client-secret"});
        let mut spec = self.extra.clone();
        spec["authType"] = json!(self.auth_type);
        spec["oauth2"] = oauth2;
        json!({
            "apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection",
            "metadata": {"name": self.name},
            "spec": spec,
        })
    }

    /// Creates the Secret (kept if it exists), then the Connection as `K` (the operator's type).
    pub async fn create<K>(&self, client: &kube::Client, ns: &str) -> Result<K, String>
    where
        K: kube::Resource<Scope = NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
        K::DynamicType: Default,
    {
        let labels = self.secret_labels.clone();
        labelled_secret(
            client,
            ns,
            &self.secret_name(),
            labels,
            "client-secret",
            &self.client_secret,
        )
        .await?;
        let conn: K =
            serde_json::from_value(self.document()).map_err(|e| format!("Connection {}: {e}", self.name))?;
        Api::<K>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &conn)
            .await
            .map_err(|e| format!("create Connection {}: {e}", self.name))
    }
}
