//! Command line of `agent-auth-operator`.

use std::process::ExitCode;

use agent_auth_operator::{api, telemetry};
use clap::{Parser, Subcommand};

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
    Run,
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
        Command::Run => {
            if let Err(e) = telemetry::init(cli.log_format, &cli.log_level) {
                eprintln!("error: cannot set up logging: {e}");
                return ExitCode::FAILURE;
            }
            tracing::error!("the operator is not implemented yet");
            ExitCode::FAILURE
        }
    }
}
