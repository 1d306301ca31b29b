//! The benchmark suite (`benches/suite`, `make bench`) at smoke size, so that it cannot rot: every
//! scenario runs against a real control plane and the operator binary, and produces numbers. No
//! targets are judged here, and the gateway load runs in-process (no load-generator binary), plain
//! and through nginx terminating TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

#[path = "../benches/suite/harness.rs"]
mod harness;
#[path = "../benches/suite/load.rs"]
mod load;
#[path = "../benches/suite/report.rs"]
mod report;
#[path = "common/rotating.rs"]
#[allow(dead_code)]
mod rotating;
#[path = "../benches/suite/scenarios.rs"]
mod scenarios;
#[path = "../benches/suite/tls.rs"]
mod tls;
#[path = "common/token_server.rs"]
#[allow(dead_code)]
mod token_server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_produces_numbers_at_smoke_size() {
    let params = scenarios::Params::smoke();
    let report = scenarios::run(&params).await;
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-output/bench-smoke");
    report.write(&out).unwrap();
    let table = report.markdown();
    assert!(report.errors.is_empty(), "scenarios failed:\n{table}");
    for scenario in [
        "1. floor",
        "2. convergence",
        "3. latency",
        "4. steady state",
        "5. refresh wave",
        "6. memory",
        "7. gateway",
        "8. sustained refresh",
        "9. broker",
    ] {
        let rows: Vec<_> = report.rows.iter().filter(|r| r.scenario == scenario).collect();
        assert!(!rows.is_empty(), "no numbers for {scenario}:\n{table}");
        let numbers = rows.iter().filter(|r| r.value.is_finite()).count();
        assert!(numbers > 0, "no finite number for {scenario}:\n{table}");
    }
    assert!(
        report.rows.iter().all(|r| r.pass.is_none()),
        "a smoke run judges no targets:\n{table}"
    );
    // The refresh wave really renewed every token, and the gateway really redirected.
    let wave = &report.details["refresh_wave"];
    assert_eq!(wave["renewed"], wave["n"], "{wave}");
    let gateway = &report.details["gateway"];
    assert!(gateway["connect"]["requests"].as_u64().unwrap() > 0, "{gateway}");
    assert_eq!(gateway["connect"]["errors"], 0, "{gateway}");
    // ... also through nginx terminating TLS (installed by scripts/install-deps.sh).
    assert!(
        gateway["connect_behind_tls"]["requests"].as_u64().unwrap_or(0) > 0,
        "{gateway}"
    );
    assert_eq!(gateway["connect_behind_tls"]["errors"], 0, "{gateway}");
}
