//! Runtime settings of the operator process, from flags and environment (see `main.rs`).

use std::net::SocketAddr;

/// The default `--verify-audience`: platforms request their `/verify` token with it.
pub const DEFAULT_VERIFY_AUDIENCE: &str = "agentauth.dev/verify";

/// Settings shared by the controller and the gateway.
#[derive(Debug, Clone)]
pub struct Config {
    /// The operator's own namespace: signing key and credential copies live here.
    pub namespace: String,
    /// Watch only these namespaces for accounts and Connections; empty watches all.
    pub watch_namespaces: Vec<String>,
    /// The gateway's public base URL, e.g. `https://connect.example.com` (no trailing slash).
    pub gateway_url: url::Url,
    pub gateway_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// `/metrics` needs a Bearer token the API server accepts and allows `get /metrics`
    /// (`--metrics-auth`); off only behind a trusted network.
    pub metrics_auth: bool,
    /// Export the series labelled per account (`--metrics-account-labels`).
    pub metrics_account_labels: bool,
    /// The token broker's in-cluster listener.
    pub broker_addr: SocketAddr,
    /// The audience of the ServiceAccount tokens the broker accepts.
    pub broker_audience: String,
    /// The audience of the platform tokens `POST /verify` accepts (`--verify-audience`).
    pub verify_audience: String,
    /// Identity used in Events and leases (the pod name in a cluster).
    pub instance: String,
    /// Run the controllers only while holding the Lease (needed when replicas > 1).
    pub leader_election: bool,
    /// Most token-endpoint calls in flight at once.
    pub refresh_concurrency: usize,
    /// Where tenant-set URLs may point beyond the public internet (`--egress-allow`).
    pub egress: crate::egress::EgressPolicy,
    /// How far namespaced Connections are trusted (`--connection-policy`).
    pub connection_policy: ConnectionPolicy,
    /// Hosts that namespaced Connections may name explicitly under `presets-only`.
    pub connection_hosts: crate::egress::EgressPolicy,
    /// Origins the gateway may send users to after an authorization (a Connection's
    /// `successRedirectUrl` and `spec.verification.url`); empty allows none.
    pub allowed_redirect_origins: Vec<url::Origin>,
    /// The KEKs the operator's credential copies are sealed with (`--kek`); `None`: plaintext.
    pub keyring: Option<std::sync::Arc<crate::store::seal::Keyring>>,
    /// Most credential copies re-sealed per second after a KEK rotation (`--reseal-rate`).
    pub reseal_rate: u32,
    /// How often the leading controller rotates the link-signing key (`--signing-key-rotation`).
    pub signing_key_rotation: std::time::Duration,
    /// Which parts this process runs (`--role`).
    pub role: Role,
    /// How the gateway hands flow results to the controller.
    pub intake: IntakeConfig,
}

/// Which parts of the operator a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// Everything in one process: the demo and small installs.
    #[default]
    All,
    /// Controllers, the token broker and the intake; no internet-facing listener.
    Controller,
    /// The public gateway only; it holds no rights on credentials.
    Gateway,
}

impl Role {
    /// Whether this process runs the controllers, the broker and the intake.
    pub fn controls(self) -> bool {
        matches!(self, Role::All | Role::Controller)
    }

    /// Whether this process serves the public gateway.
    pub fn serves_gateway(self) -> bool {
        matches!(self, Role::All | Role::Gateway)
    }
}

/// The intake: the gateway-to-controller handoff (see [`crate::intake`]).
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// Controller: where the intake listens.
    pub addr: SocketAddr,
    /// Gateway: the controller's intake.
    pub url: Option<url::Url>,
    /// Gateway: its projected ServiceAccount token for the intake.
    pub token_file: std::path::PathBuf,
    /// The audience of that token.
    pub audience: String,
    /// Controller: the users the intake accepts.
    pub allow: Vec<String>,
}

impl Config {
    /// The OAuth redirect URI to register at providers.
    pub fn redirect_uri(&self) -> String {
        self.endpoint("oauth/callback")
    }

    /// `<gateway_url>/<path>`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}/{}", self.gateway_url.as_str().trim_end_matches('/'), path)
    }

    /// Whether the gateway is reached over HTTPS (cookies get `Secure`).
    pub fn secure(&self) -> bool {
        self.gateway_url.scheme() == "https"
    }
}

/// How far namespaced Connections are trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ConnectionPolicy {
    /// Every Connection editor is trusted with the credentials of its accounts.
    Any,
    /// Explicit endpoints only on allowlisted hosts; catalog endpoints otherwise.
    #[default]
    PresetsOnly,
    /// Namespaced Connections are refused; platform teams use ClusterConnections.
    Deny,
}
