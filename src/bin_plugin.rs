//! Entry point of the `kubectl-agentauth` binary; the logic lives in `agent_auth_operator::plugin`.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
