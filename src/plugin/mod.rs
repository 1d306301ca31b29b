//! `kubectl agentauth`: the kubectl plugin (binary `kubectl-agentauth`).
