//! `cargo bench --bench suite` (or `make bench`): the speed and scale suite of issue #6 against a
//! real kube-apiserver + etcd started for this run. Writes `target/bench/results.md` and
//! `target/bench/results.json`; see BENCHMARKS.md for what each scenario measures and the knobs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code

mod harness;
mod load;
mod report;
#[path = "../../tests/common/rotating.rs"]
#[allow(dead_code)]
mod rotating;
mod scenarios;
mod tls;
#[path = "../../tests/common/token_server.rs"]
#[allow(dead_code)]
mod token_server;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    // `cargo test --benches` runs this binary without `--bench`: nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("the benchmark suite runs with `cargo bench --bench suite` (or `make bench`)");
        return ExitCode::SUCCESS;
    }
    let params = match scenarios::Params::from_env() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot build a Tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    scenarios::progress(&format!("{} scale: {:?}", params.scale, params));
    let report = runtime.block_on(scenarios::run(&params));
    // target/tmp's parent is the target directory, wherever CARGO_TARGET_DIR points.
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|t| t.join("bench"))
        .unwrap_or_else(|| PathBuf::from("target/bench"));
    if let Err(e) = report.write(&out) {
        eprintln!("bench: cannot write results: {e}");
        return ExitCode::FAILURE;
    }
    println!("\n{}", report.markdown());
    println!("results: {}", out.join("results.md").display());
    let failed = report.rows.iter().any(|r| r.pass == Some(false));
    let strict = std::env::var("BENCH_STRICT").is_ok_and(|v| v == "1");
    if !report.errors.is_empty() || (strict && failed) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
