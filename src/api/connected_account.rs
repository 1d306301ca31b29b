//! `ConnectedAccount`: one user's authorization to one Connection.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Setting this annotation to a new value issues a fresh authorization link while the current
/// credentials keep working.
pub const REAUTHORIZE_ANNOTATION: &str = "agentauth.dev/reauthorize";

/// One user's authorization to one app. The operator publishes an authorization link in the status,
/// and once the user has authorized, keeps the credential fresh in the Secret named by
/// `status.secretName` for agent pods to mount.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "agentauth.dev",
    version = "v1alpha1",
    kind = "ConnectedAccount",
    namespaced,
    status = "ConnectedAccountStatus",
    shortname = "acct",
    category = "agentauth",
    printcolumn = r#"{"name":"Connection","type":"string","jsonPath":".spec.connectionRef.name"}"#,
    printcolumn = r#"{"name":"Identifier","type":"string","jsonPath":".spec.identifier"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Link","type":"string","jsonPath":".status.authorizationLink","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ConnectedAccountSpec {
    /// The Connection (in this namespace) or ClusterConnection this account authorizes. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("connectionRef is immutable"))]
    pub connection_ref: ConnectionRef,

    /// The user's ID in your platform (for example an email or a user UUID). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("identifier is immutable"))]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[^\p{Cc}\p{Cf}\p{Zl}\p{Zp}]+$")
    )]
    pub identifier: String,

    /// Name of the Secret the credential is published in, in this namespace. Default
    /// `<metadata.name>-credentials`. A Secret of that name that the operator did not create is
    /// never overwritten: the account goes to `ERROR` with reason `SecretConflict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,

    /// A Secret in this namespace that already holds the credential, for `APIKey` and
    /// `BearerToken` Connections: its keys are the form's field names. The account becomes
    /// `ACTIVE` without a user, and changes to that Secret are picked up within five minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_ref: Option<LocalSecretRef>,

    /// Set to `true` to revoke and remove the credentials (state `DISCONNECTED`). Clearing it issues
    /// a new authorization link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected: Option<bool>,

    /// Overrides the Connection's `delivery` for this account: `Secret`, `Broker` (no agent Secret;
    /// pods ask the token broker) or `SecretAndBroker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<super::Delivery>,
}

/// A reference to a Connection in the same namespace, or to a ClusterConnection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct ConnectionRef {
    /// `Connection` (default: in this namespace) or `ClusterConnection` (the platform team's).
    #[serde(default, skip_serializing_if = "ConnectionKind::is_default")]
    pub kind: ConnectionKind,
    /// Name of the Connection or ClusterConnection.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The kinds an account can refer to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash, schemars::JsonSchema)]
pub enum ConnectionKind {
    /// A Connection in the account's namespace.
    #[default]
    Connection,
    /// A cluster-scoped ClusterConnection of the platform team.
    ClusterConnection,
}

impl ConnectionKind {
    fn is_default(&self) -> bool {
        *self == ConnectionKind::Connection
    }
}

/// A Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct LocalSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Where an account is in its lifecycle. The words match those of hosted agent-auth products.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccountState {
    /// Waiting for the user to open `authorizationLink` and authorize.
    PendingAuth,
    /// The user authorized; the credential is held back until the platform confirms who the user
    /// is (`spec.verification`, `POST /verify`).
    PendingVerification,
    /// The credential is valid and published in the Secret.
    Active,
    /// The provider rejected the refresh; a new link is waiting for the user.
    Expired,
    /// `spec.disconnected` is set; credentials were removed.
    Disconnected,
    /// The account cannot proceed; see the Ready condition.
    Error,
}

impl AccountState {
    /// `ACTIVE`, `PENDING_AUTH`, ... as in the CRD (and in metrics and the broker's answers).
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::PendingAuth => "PENDING_AUTH",
            AccountState::PendingVerification => "PENDING_VERIFICATION",
            AccountState::Active => "ACTIVE",
            AccountState::Expired => "EXPIRED",
            AccountState::Disconnected => "DISCONNECTED",
            AccountState::Error => "ERROR",
        }
    }
}

/// Observed state of a ConnectedAccount. Never contains credential material.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectedAccountStatus {
    /// Lifecycle state: PENDING_AUTH, PENDING_VERIFICATION, ACTIVE, EXPIRED, DISCONNECTED or ERROR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<AccountState>,
    /// The one-time link to send to the user. Valid until it expires or an authorization completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_link: Option<String>,
    /// When `authorizationLink` stops working; a new one is issued then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_link_expires_at: Option<Time>,
    /// The Secret agent pods mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// When the current access token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// When the operator will renew the access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_refresh_at: Option<Time>,
    /// When the access token was last obtained or renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refreshed_at: Option<Time>,
    /// Scopes the provider granted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub granted_scopes: Vec<String>,
    /// Who the user is at the provider, as the provider said after the last authorization (the
    /// OpenID Connect `id_token` or userinfo endpoint). Never a credential; the platform compares
    /// it with its own user at the verification step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_identity: Option<ProviderIdentity>,
    /// The `agentauth.dev/reauthorize` annotation value that the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reauthorize_request: Option<String>,
    /// `Ready` and others, with reason and message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The provider's identity of the user who authorized: what its OpenID Connect `id_token` (or
/// userinfo endpoint) said. Informational, never a credential and never trusted for access.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderIdentity {
    /// The provider's stable id of the user (OIDC `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The user's email address as the provider reported it (OIDC `email`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Who issued the identity (OIDC `iss`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::AccountState::*;

    #[test]
    fn state_names_are_the_serialized_ones() {
        for s in [
            PendingAuth,
            PendingVerification,
            Active,
            Expired,
            Disconnected,
            Error,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
