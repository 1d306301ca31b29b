//! `make demo` without a user: the sample accounts come up against the real control plane and
//! Dex, alice signs in through her printed link, and alice and team (a key from a Secret) become
//! ACTIVE. Runs the same code as the `demo` binary, with the operator binary of this build.

#[test]
fn demo_brings_up_sample_accounts_without_a_user() {
    let operator = std::path::Path::new(env!("CARGO_BIN_EXE_agent-auth-operator"));
    if let Err(e) = agentauth_testcluster::demo::run(operator, true) {
        panic!("demo: {e}");
    }
}
