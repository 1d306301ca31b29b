//! `testcluster`: run the test control plane by hand, for debugging.
//!
//!     cargo run -p agentauth-testcluster [-- --node [IMAGE.tar...]]
//!
//! `--node` adds a real node (containerd, kubelet, kube-proxy) and imports the OCI archives named
//! after it.
//! Prints the kubeconfig path and waits; Ctrl-C (or SIGTERM) stops every process and removes the
//! cluster directory.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let started = match args.split_first() {
        Some((flag, images)) if flag == "--node" => {
            agentauth_testcluster::Cluster::start_with(agentauth_testcluster::ClusterOptions {
                node: Some(agentauth_testcluster::NodeOptions {
                    images: images.iter().map(Into::into).collect(),
                }),
                ..Default::default()
            })
        }
        Some((other, _)) => Err(format!(
            "unknown argument {other}; usage: testcluster [--node [IMAGE.tar...]]"
        )),
        None => agentauth_testcluster::Cluster::start(),
    };
    let cluster = match &started {
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
