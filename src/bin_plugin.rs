//! Entry point of the `kubectl-agentauth` binary; the logic lives in `agent_auth_operator::plugin`.
//!
//! Exit status: 0 on success, 1 on any error (printed on stderr), 2 on a usage error.

use std::process::ExitCode;

use agent_auth_operator::plugin::{self, Cli};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
    match runtime.block_on(plugin::run(cli, &mut out, &mut err)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(plugin::Error::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
