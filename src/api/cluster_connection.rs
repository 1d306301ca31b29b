//! `ClusterConnection`: a Connection owned by the platform team, usable from many namespaces (like
//! cert-manager's ClusterIssuer). Its Secret references resolve in the operator's namespace, which
//! tenants cannot read or write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::connection::{ConnectionSpec, ConnectionStatus, spec_rule};

/// One third-party app configuration for the whole cluster, owned by the platform team. Accounts
/// in any namespace (or those the `namespaceSelector` picks) refer to it with
/// `connectionRef: {kind: ClusterConnection, name: ...}`. Its `clientSecretRef` and
/// `customJWT.signingKeyRef` name Secrets in the operator's namespace. The namespaced-Connection
/// policy (`--connection-policy`) does not apply: whoever may write ClusterConnections is trusted
/// with the tokens of their accounts.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "agentauth.dev",
    version = "v1alpha1",
    kind = "ClusterConnection",
    status = "ConnectionStatus",
    shortname = "cconn",
    category = "agentauth",
    printcolumn = r#"{"name":"Auth","type":"string","jsonPath":".spec.authType"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Redirect URI","type":"string","jsonPath":".status.redirectUri","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = spec_rule(0),
    validation = spec_rule(1),
    validation = spec_rule(2),
    validation = spec_rule(3),
    validation = spec_rule(4),
    validation = spec_rule(5),
    validation = spec_rule(6),
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConnectionSpec {
    /// The same settings as a namespaced Connection.
    #[serde(flatten)]
    pub connection: ConnectionSpec,

    /// Namespaces whose accounts may use this ClusterConnection, by label (for example
    /// `matchLabels: {agentauth.dev/gmail: "true"}`). Default: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// Annotation on the Connection view of a ClusterConnection (see [`ClusterConnection::as_connection`]).
pub const CLUSTER_VIEW_ANNOTATION: &str = "agentauth.dev/cluster-connection";

impl ClusterConnection {
    /// This ClusterConnection as the rest of the operator sees a Connection: in the operator's
    /// namespace, so that its Secret references resolve there and only there, and marked so that
    /// its redirect URI and callback are the cluster ones.
    pub fn as_connection(&self, operator_ns: &str) -> super::Connection {
        let mut metadata = self.metadata.clone();
        metadata.namespace = Some(operator_ns.to_owned());
        metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(CLUSTER_VIEW_ANNOTATION.to_owned(), "true".to_owned());
        super::Connection {
            metadata,
            spec: self.spec.connection.clone(),
            status: self.status.clone(),
        }
    }

    /// Whether accounts in a namespace with `labels` may use it. A selector that does not parse
    /// admits nothing.
    pub fn admits(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        use kube::core::SelectorExt;
        match &self.spec.namespace_selector {
            None => true,
            Some(s) => kube::core::Selector::try_from(s.clone()).is_ok_and(|sel| sel.matches(labels)),
        }
    }
}

/// A namespaced Connection as read from the API or a cache, with the cluster-view marker removed:
/// a tenant can put any annotation on its own Connection, and must never pass for the platform.
/// Every namespaced Connection goes through this before the operator looks at it.
pub fn tenant_connection(mut conn: super::Connection) -> super::Connection {
    if let Some(a) = conn.metadata.annotations.as_mut() {
        a.remove(CLUSTER_VIEW_ANNOTATION);
    }
    conn
}

/// Whether `conn` is the Connection view of a ClusterConnection (made by
/// [`ClusterConnection::as_connection`]; namespaced Connections lose the marker through
/// [`tenant_connection`]).
pub fn is_cluster_view(conn: &super::Connection) -> bool {
    conn.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CLUSTER_VIEW_ANNOTATION))
        .is_some_and(|v| v == "true")
}
