//! `make demo`: the product on one machine until Ctrl-C (see `agentauth_testcluster::demo`).
//!
//!     demo [--non-interactive] [path/to/agent-auth-operator]   (default: target/debug/agent-auth-operator)

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli: Vec<String> = std::env::args().skip(1).collect();
    let non_interactive = cli.iter().any(|a| a == "--non-interactive");
    let operator_bin = cli
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| "target/debug/agent-auth-operator".into());
    match agentauth_testcluster::demo::run(&operator_bin, non_interactive) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}
