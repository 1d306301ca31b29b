//! Command line of `kubectl agentauth`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Inspect ConnectedAccounts and hand out their authorization links.
#[derive(Parser, Debug, Clone, PartialEq, Eq)]
#[command(name = "kubectl-agentauth", bin_name = "kubectl agentauth", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where to find the cluster, accepted before or after the command.
#[derive(Args, Debug, Clone, PartialEq, Eq, Default)]
pub struct GlobalArgs {
    /// Namespace of the account (default: the namespace of the kubeconfig context, else "default").
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
}

/// The commands.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Show an account's state, credentials Secret, timings and recent Events (never the
    /// credentials or the link itself).
    Status {
        /// Name of the ConnectedAccount.
        account: String,
        /// Output format: `text` for people, `json` for the account's status as JSON.
        #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Print the account's current authorization link (to send to the user).
    Link {
        /// Name of the ConnectedAccount.
        account: String,
    },
    /// Ask the operator for a fresh authorization link; the current credentials keep working.
    Reauthorize {
        /// Name of the ConnectedAccount.
        account: String,
        /// Wait until the new link is in the status, and print it.
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits (e.g. `30s`, `2m`).
        #[arg(long, value_parser = timeout, default_value = "30s", value_name = "DURATION")]
        timeout: Duration,
    },
    /// Get or create the account of a user on a Connection, and print its state and authorization
    /// link (once the operator issued it). With --wait, also wait until the user authorized.
    Connect {
        /// Name of the Connection (with --cluster: of the ClusterConnection).
        connection: String,
        /// The user, as the account's spec.identifier (e.g. alice@example.com, user_123).
        identifier: String,
        /// The connection is a ClusterConnection.
        #[arg(long)]
        cluster: bool,
        /// Wait until the account is ACTIVE.
        #[arg(long)]
        wait: bool,
        /// How long each wait lasts [default: 30s for the link; 10m for ACTIVE with --wait].
        #[arg(long, value_parser = timeout, value_name = "DURATION")]
        timeout: Option<Duration>,
        /// Output format: `text` for people, `json` for one JSON object per line.
        #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
}

/// `connect`'s waits: for the link by default, for ACTIVE with `--wait`.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(30);
pub const ACTIVE_TIMEOUT: Duration = Duration::from_secs(600);

/// Output formats of `status` and `connect`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Human-readable summary.
    #[default]
    Text,
    /// `status` of the ConnectedAccount, as JSON.
    Json,
}

/// `--timeout`: a duration as specs write them (`30s`, `2m`).
fn timeout(s: &str) -> Result<Duration, crate::api::InvalidDuration> {
    s.parse::<crate::api::Duration>().map(|d| d.to_std())
}

/// A timeout as the user wrote it back (`30s`, `2m`).
pub fn show(d: Duration) -> String {
    jiff::SignedDuration::try_from(d).map_or_else(|_| format!("{}s", d.as_secs()), |d| format!("{d:#}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn timeouts_are_read_and_shown_as_written() {
        let d = super::timeout("2m").unwrap();
        assert_eq!(d, std::time::Duration::from_secs(120));
        assert_eq!(super::show(d), "2m");
        assert_eq!(super::show(std::time::Duration::from_secs(30)), "30s");
        assert!(super::timeout("soon").is_err());
    }

    use super::*;

    #[test]
    fn global_flags_are_accepted_after_the_command() {
        let cli = Cli::try_parse_from(["kubectl-agentauth", "link", "alice", "-n", "agents"]).unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("agents"));
        assert_eq!(
            cli.command,
            Command::Link {
                account: "alice".into()
            }
        );
        let cli = Cli::try_parse_from([
            "kubectl-agentauth",
            "--context",
            "prod",
            "--kubeconfig",
            "/tmp/kc",
            "status",
            "alice",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.global.context.as_deref(), Some("prod"));
        assert_eq!(cli.global.kubeconfig, Some(PathBuf::from("/tmp/kc")));
        assert!(matches!(
            cli.command,
            Command::Status {
                output: OutputFormat::Json,
                ..
            }
        ));
    }

    #[test]
    fn reauthorize_wait_defaults_to_thirty_seconds() {
        let cli = Cli::try_parse_from(["kubectl-agentauth", "reauthorize", "alice", "--wait"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Reauthorize {
                account: "alice".into(),
                wait: true,
                timeout: Duration::from_secs(30)
            }
        );
        let cli =
            Cli::try_parse_from(["kubectl-agentauth", "reauthorize", "alice", "--timeout", "2m"]).unwrap();
        assert!(
            matches!(cli.command, Command::Reauthorize { timeout, wait: false, .. } if timeout == Duration::from_secs(120))
        );
        assert!(
            Cli::try_parse_from(["kubectl-agentauth", "reauthorize", "alice", "--timeout", "soon"]).is_err()
        );
    }

    #[test]
    fn connect_arguments() {
        let cli = Cli::try_parse_from([
            "kubectl-agentauth",
            "connect",
            "gmail",
            "alice@example.com",
            "-n",
            "agents",
        ])
        .unwrap();
        assert_eq!(
            cli.command,
            Command::Connect {
                connection: "gmail".into(),
                identifier: "alice@example.com".into(),
                cluster: false,
                wait: false,
                timeout: None,
                output: OutputFormat::Text
            }
        );
        let cli = Cli::try_parse_from([
            "kubectl-agentauth",
            "connect",
            "google",
            "u1",
            "--cluster",
            "--wait",
            "--timeout",
            "2m",
            "-o",
            "json",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Connect { cluster: true, wait: true, timeout: Some(t), output: OutputFormat::Json, .. }
                if t == Duration::from_secs(120)
        ));
        assert!(Cli::try_parse_from(["kubectl-agentauth", "connect", "gmail"]).is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
