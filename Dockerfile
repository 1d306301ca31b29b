# syntax=docker/dockerfile:1
# agent-auth-operator image: the operator (ENTRYPOINT, `run`) and the kubectl plugin, on distroless.
#
#   docker build -t ghcr.io/agent-auth/agent-auth-operator:0.1.0 .
#
# The Helm chart (charts/agent-auth-operator) runs it as user 65532 with a read-only root filesystem;
# the operator needs no writable path.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target directory between builds; the binaries are copied out
# of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin agent-auth-operator --bin kubectl-agentauth \
 && mkdir -p /out \
 && cp target/release/agent-auth-operator target/release/kubectl-agentauth /out/

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="agent-auth-operator" \
      org.opencontainers.image.description="Kubernetes operator that authorizes AI agents to act for users in third-party apps" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/agent-auth-operator /out/kubectl-agentauth /usr/local/bin/
# The :nonroot variant already runs as 65532; stated so that runAsNonRoot can verify a numeric user.
USER 65532:65532
# Gateway (public) and admin (/healthz, /readyz, /metrics).
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/agent-auth-operator", "run"]
