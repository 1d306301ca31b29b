//! `testcluster`: run the test control plane by hand, for debugging.
//!
//!     cargo run -p agentauth-testcluster
//!
//! Prints the kubeconfig path and waits; Ctrl-C (or SIGTERM) stops every process and removes the
//! cluster directory.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cluster = match agentauth_testcluster::shared() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("testcluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("export KUBECONFIG={}", cluster.kubeconfig_path().display());
    println!(
        "# API server {} ; logs in {}",
        cluster.server(),
        cluster.dir().display()
    );
    println!("# Ctrl-C stops the control plane.");
    agentauth_testcluster::wait_for_signal();
    cluster.stop();
    ExitCode::SUCCESS
}
