//! Command line of `agent-auth-operator`.

use std::process::ExitCode;

use std::net::SocketAddr;

use agent_auth_operator::{api, config::Config, run, telemetry};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "agent-auth-operator", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t, global = true)]
    log_format: telemetry::LogFormat,
    /// Log filter in RUST_LOG syntax.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Run the operator: controller, gateway and admin listener.
    Run(Box<RunArgs>),
    /// Run in an agent pod: authorized tool calls, an API proxy and MCP for the mounted credentials.
    Sidecar(Box<SidecarArgs>),
}

#[derive(Args)]
struct SidecarArgs {
    /// An account: NAME=DIR or NAME=DIR:PROVIDER, where DIR is its mounted credential Secret
    /// (repeatable). Without :PROVIDER, the Secret's `provider` key names it.
    #[arg(long = "account", env = "SIDECAR_ACCOUNTS", value_delimiter = ',')]
    accounts: Vec<agent_auth_operator::sidecar::AccountArg>,
    /// A directory whose subdirectories are accounts, named after them.
    #[arg(long, env = "SIDECAR_ACCOUNTS_DIR")]
    accounts_dir: Option<std::path::PathBuf>,
    /// A directory of extra tool files (*.yaml, *.yml, *.json; a mounted ConfigMap); repeatable.
    #[arg(long = "tools-dir", env = "SIDECAR_TOOLS_DIR", value_delimiter = ',')]
    tools_dirs: Vec<std::path::PathBuf>,
    /// Address to serve on: loopback only, unless --allow-non-loopback.
    #[arg(long, env = "SIDECAR_LISTEN", default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Use this API base URL for a provider: PROVIDER=URL (repeatable; e.g. GitHub Enterprise).
    #[arg(long = "api-base", env = "SIDECAR_API_BASES", value_delimiter = ',')]
    api_bases: Vec<agent_auth_operator::sidecar::ApiBaseArg>,
    /// Serve on a non-loopback address and accept any Host header. Anyone who reaches the port
    /// acts as the mounted accounts: protect it yourself.
    #[arg(long)]
    allow_non_loopback: bool,
    /// Broker mode: fetch credentials at call time from the operator's token broker at this URL
    /// (e.g. http://agent-auth-operator-broker.agent-auth-system.svc:8082), for accounts named per
    /// call. Mounted accounts still work beside it.
    #[arg(long, env = "SIDECAR_BROKER_URL")]
    broker_url: Option<url::Url>,
    /// Broker mode: the projected ServiceAccount token (audience agentauth.dev), re-read on every
    /// broker call [default: /var/run/secrets/agentauth.dev/token].
    #[arg(long, env = "SIDECAR_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// Broker mode: the namespace of bare account names [default: the token's namespace].
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    /// The operator's own namespace (signing key and credential copies live here).
    #[arg(long, env = "POD_NAMESPACE", default_value = "agent-auth-system")]
    namespace: String,
    /// Watch only these namespaces (comma-separated) for ConnectedAccounts and Connections
    /// (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
    watch_namespaces: Vec<String>,
    /// Public base URL of the gateway, as users reach it (e.g. https://connect.example.com).
    #[arg(long, env = "GATEWAY_URL")]
    gateway_url: url::Url,
    /// Address the gateway listens on.
    #[arg(long, env = "GATEWAY_ADDR", default_value = "0.0.0.0:8080")]
    gateway_addr: SocketAddr,
    /// Address of the admin listener (/healthz, /readyz, /metrics).
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:8081")]
    admin_addr: SocketAddr,
    /// Require on /metrics a Bearer token that the API server accepts (TokenReview) and allows
    /// `get` on the non-resource URL /metrics (SubjectAccessReview). `--metrics-auth=false` serves
    /// it to anyone who reaches the admin port (a trusted network only).
    #[arg(long, env = "METRICS_AUTH", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    metrics_auth: bool,
    /// Also export the series labelled per account (namespace and name), e.g. each token's
    /// expiry: for small installs; their number grows with the accounts.
    #[arg(long, env = "METRICS_ACCOUNT_LABELS")]
    metrics_account_labels: bool,
    /// Address of the token broker (RFC 8693 token exchange for agent pods; in-cluster only, never
    /// expose it publicly).
    #[arg(long, env = "BROKER_ADDR", default_value = "0.0.0.0:8082")]
    broker_addr: SocketAddr,
    /// The audience agent pods' projected ServiceAccount tokens must carry for the broker.
    #[arg(long, env = "BROKER_AUDIENCE", default_value = agent_auth_operator::broker::DEFAULT_AUDIENCE)]
    broker_audience: String,
    /// The audience the platform's ServiceAccount tokens must carry for the gateway's `POST /verify`
    /// (a token requested for another audience, such as the API server's, is refused).
    #[arg(long, env = "VERIFY_AUDIENCE", default_value = agent_auth_operator::config::DEFAULT_VERIFY_AUDIENCE)]
    verify_audience: String,
    /// This instance's name in Events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME", default_value = "agent-auth-operator")]
    instance: String,
    /// Elect one replica to run the controllers (required when running more than one replica).
    #[arg(long, env = "LEADER_ELECTION")]
    leader_election: bool,
    /// At most this many token-endpoint calls (refreshes, client credentials, JWT exchanges) in
    /// flight at once, so a wave of expiring tokens does not flood a provider.
    #[arg(long, env = "REFRESH_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    refresh_concurrency: u16,
    /// Hosts (`idp.corp.internal`, `*.corp.internal`) and CIDRs (`10.20.0.0/16`) that tenant-set
    /// URLs (token, revocation, JWT exchange, form verification) may reach although they are
    /// internal, and over plain http. Everything else must be https to a public address.
    #[arg(long = "egress-allow", env = "EGRESS_ALLOW", value_delimiter = ',')]
    egress_allow: Vec<agent_auth_operator::egress::Allow>,
    /// How far namespaced Connections are trusted: `any` (every Connection editor may point
    /// accounts anywhere), `presets-only` (explicit endpoints only on --connection-host-allow
    /// hosts, catalog endpoints otherwise), `deny` (ClusterConnections only).
    #[arg(long, env = "CONNECTION_POLICY", value_enum, default_value_t)]
    connection_policy: agent_auth_operator::config::ConnectionPolicy,
    /// Hosts (`idp.example.com`, `*.example.com`) or CIDRs namespaced Connections may name in
    /// explicit endpoints under `--connection-policy=presets-only`.
    #[arg(
        long = "connection-host-allow",
        env = "CONNECTION_HOST_ALLOW",
        value_delimiter = ','
    )]
    connection_host_allow: Vec<agent_auth_operator::egress::Allow>,
    /// An origin (https://host[:port]) the gateway may send users to after an authorization: a
    /// Connection's successRedirectUrl and spec.verification.url must be on one (repeatable or
    /// comma-separated; default none: the gateway shows its own pages and says why).
    #[arg(long = "allowed-redirect-origin", env = "ALLOWED_REDIRECT_ORIGINS", value_delimiter = ',', value_parser = agent_auth_operator::intake::onward::parse_origin)]
    allowed_redirect_origins: Vec<url::Origin>,
    /// Which parts this process runs: `all` (one process, for the demo and small installs),
    /// `controller` (controllers, token broker, intake; no internet-facing listener) or `gateway`
    /// (the public gateway only, with no rights on credentials).
    #[arg(long, env = "ROLE", value_enum, default_value_t)]
    role: agent_auth_operator::config::Role,
    /// Controller role: address of the intake, where the gateway hands over flow results
    /// (in-cluster only).
    #[arg(long, env = "INTAKE_ADDR", default_value = "0.0.0.0:8083")]
    intake_addr: SocketAddr,
    /// Gateway role: the controller's intake, e.g. http://agent-auth-operator-intake.agent-auth-system.svc:8083.
    #[arg(long, env = "INTAKE_URL")]
    intake_url: Option<url::Url>,
    /// Gateway role: the projected ServiceAccount token presented to the intake (re-read on every call).
    #[arg(
        long,
        env = "INTAKE_TOKEN_FILE",
        default_value = "/var/run/secrets/agentauth.dev/intake/token"
    )]
    intake_token_file: std::path::PathBuf,
    /// The audience of the gateway's token at the intake.
    #[arg(long, env = "INTAKE_AUDIENCE", default_value = agent_auth_operator::intake::DEFAULT_AUDIENCE)]
    intake_audience: String,
    /// Controller role: the users (the gateway's ServiceAccount, system:serviceaccount:NS:NAME)
    /// the intake accepts (repeatable or comma-separated).
    #[arg(long = "intake-allow", env = "INTAKE_ALLOW", value_delimiter = ',')]
    intake_allow: Vec<String>,
    /// A key-encryption key that seals the operator's credential copies: ID=PATH, the file holding
    /// the standard base64 of 32 random bytes (repeatable or comma-separated; see
    /// docs/encryption.md). Without one, copies stay plaintext in the Secret.
    #[arg(long = "kek", env = "KEKS", value_delimiter = ',')]
    keks: Vec<agent_auth_operator::store::seal::KekArg>,
    /// The --kek id new and re-sealed copies use (default: the only --kek).
    #[arg(long, env = "KEK_PRIMARY")]
    kek_primary: Option<String>,
    /// Most credential copies re-sealed per second under the primary KEK (after a rotation).
    #[arg(long, env = "RESEAL_RATE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    reseal_rate: u32,
    /// How often the controller makes a new primary link-signing key (`720h`, at least `1h`);
    /// retired keys keep verifying for the longest token lifetime (7 days) plus an hour.
    #[arg(long, env = "SIGNING_KEY_ROTATION", default_value = "720h", value_parser = parse_rotation)]
    signing_key_rotation: agent_auth_operator::api::Duration,
}

/// A `--signing-key-rotation` value: a spec duration of at least an hour (shorter would pile
/// up keys: each verifies for 7 days after it stops signing).
fn parse_rotation(s: &str) -> Result<agent_auth_operator::api::Duration, String> {
    let d: agent_auth_operator::api::Duration = s.parse().map_err(|e| format!("{e}"))?;
    if d.to_std() < std::time::Duration::from_secs(3600) {
        return Err("the signing key rotation must be at least 1h".into());
    }
    Ok(d)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render CRDs: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Sidecar(args) => {
            // The MCP SDK logs every stateless request's lifecycle at info: quiet by default.
            let filter = if cli.log_level == "info" {
                "info,rmcp=warn"
            } else {
                cli.log_level.as_str()
            };
            if let Err(e) = telemetry::init(cli.log_format, filter) {
                eprintln!("error: cannot set up logging: {e}");
                return ExitCode::FAILURE;
            }
            let broker = match agent_auth_operator::sidecar::BrokerArgs::from_flags(
                args.broker_url,
                args.token_file,
                args.namespace,
            ) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let config = agent_auth_operator::sidecar::Config {
                accounts: args.accounts,
                accounts_dir: args.accounts_dir,
                tools_dirs: args.tools_dirs,
                listen: args.listen,
                api_bases: args.api_bases,
                allow_non_loopback: args.allow_non_loopback,
                broker,
            };
            match agent_auth_operator::sidecar::run(config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "sidecar failed");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => {
            let args = *args;
            if let Err(e) = telemetry::init(cli.log_format, &cli.log_level) {
                eprintln!("error: cannot set up logging: {e}");
                return ExitCode::FAILURE;
            }
            // Before anything touches the cluster: a KEK that cannot be loaded stops the process
            // with nothing written.
            let keyring = match agent_auth_operator::store::seal::Keyring::load(
                &args.keks,
                args.kek_primary.as_deref(),
            ) {
                Ok(k) => k.map(std::sync::Arc::new),
                Err(e) => {
                    tracing::error!(error = %e, "cannot load the key-encryption keys");
                    eprintln!("error: cannot load the key-encryption keys: {e}");
                    return ExitCode::from(2);
                }
            };
            let config = Config {
                keyring,
                reseal_rate: args.reseal_rate,
                namespace: args.namespace,
                watch_namespaces: args
                    .watch_namespaces
                    .into_iter()
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty())
                    .collect(),
                gateway_url: args.gateway_url,
                gateway_addr: args.gateway_addr,
                admin_addr: args.admin_addr,
                metrics_auth: args.metrics_auth,
                metrics_account_labels: args.metrics_account_labels,
                broker_addr: args.broker_addr,
                broker_audience: args.broker_audience,
                verify_audience: args.verify_audience,
                instance: args.instance,
                leader_election: args.leader_election,
                refresh_concurrency: usize::from(args.refresh_concurrency),
                egress: agent_auth_operator::egress::EgressPolicy::new(args.egress_allow),
                connection_policy: args.connection_policy,
                connection_hosts: agent_auth_operator::egress::EgressPolicy::new(args.connection_host_allow),
                allowed_redirect_origins: args.allowed_redirect_origins,
                role: args.role,
                intake: agent_auth_operator::config::IntakeConfig {
                    addr: args.intake_addr,
                    url: args.intake_url,
                    token_file: args.intake_token_file,
                    audience: args.intake_audience,
                    allow: args
                        .intake_allow
                        .into_iter()
                        .map(|a| a.trim().to_owned())
                        .filter(|a| !a.is_empty())
                        .collect(),
                },
                signing_key_rotation: args.signing_key_rotation.to_std(),
            };
            if config.role == agent_auth_operator::config::Role::Gateway && config.intake.url.is_none() {
                eprintln!("error: --role=gateway needs --intake-url (the controller's intake)");
                return ExitCode::from(2);
            }
            match run::run(config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "operator failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn sidecar_broker_flags() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "agent-auth-operator",
            "sidecar",
            "--broker-url=http://broker.svc:8082",
            "--token-file=/run/token",
            "--namespace=team-a",
        ])
        .unwrap();
        let Command::Sidecar(a) = cli.command else {
            panic!("not the sidecar command")
        };
        let b = agent_auth_operator::sidecar::BrokerArgs::from_flags(a.broker_url, a.token_file, a.namespace)
            .unwrap()
            .unwrap();
        assert_eq!(b.endpoint.as_str(), "http://broker.svc:8082/token");
        assert_eq!(b.token_file, std::path::PathBuf::from("/run/token"));
        assert_eq!(b.namespace.as_deref(), Some("team-a"));
        assert!(Cli::try_parse_from(["agent-auth-operator", "sidecar", "--broker-url=not a url"]).is_err());
    }

    #[test]
    fn kek_flags() {
        let cli = Cli::try_parse_from([
            "agent-auth-operator",
            "run",
            "--gateway-url=https://connect.example.com",
            "--kek=k1=/kek/k1.key,k2=/kek/k2.key",
            "--kek=k3=/kek/k3.key",
            "--kek-primary=k2",
            "--reseal-rate=5",
        ])
        .unwrap();
        let Command::Run(a) = cli.command else {
            panic!("not the run command")
        };
        let ids: Vec<&str> = a.keks.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["k1", "k2", "k3"]);
        assert_eq!(a.keks[1].path, std::path::PathBuf::from("/kek/k2.key"));
        assert_eq!(a.kek_primary.as_deref(), Some("k2"));
        assert_eq!(a.reseal_rate, 5);
        let bad = [
            "agent-auth-operator",
            "run",
            "--gateway-url=https://c.example.com",
            "--kek=/no/id",
        ];
        assert!(Cli::try_parse_from(bad).is_err());
    }

    #[test]
    fn signing_key_rotation_flag() {
        let run = |extra: &[&str]| {
            let mut argv = vec!["agent-auth-operator", "run", "--gateway-url=https://c.example"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Run(a) => a.signing_key_rotation.to_std(),
                _ => panic!("not the run command"),
            })
        };
        assert_eq!(run(&[]).unwrap(), std::time::Duration::from_secs(720 * 3600));
        assert_eq!(
            run(&["--signing-key-rotation=90m"]).unwrap(),
            std::time::Duration::from_secs(5400)
        );
        assert!(run(&["--signing-key-rotation=30m"]).is_err(), "under an hour");
        assert!(run(&["--signing-key-rotation=soon"]).is_err());
    }
}
