# syntax=docker/dockerfile:1
# agent-auth-operator image: the operator (runs `run` by default) and the kubectl plugin, on a
# distroless-like root filesystem: the stripped binaries, their glibc libraries, passwd/group (nonroot
# 65532), the CA bundle. Same recipe as `make image` (scripts/image.sh, which needs no base image and
# no daemon): the build stage runs `scripts/image.sh rootfs`, and image.sh reads the final stage's
# LABEL/ENV/USER/EXPOSE/ENTRYPOINT/CMD for its OCI config; keep the final stage to those instructions.
#
#   docker build -t ghcr.io/agent-auth/agent-auth-operator:0.1.0 .
#
# The Helm chart (charts/agent-auth-operator) runs it as user 65532 with a read-only root filesystem;
# the operator needs no writable path.

ARG RUST_IMAGE=rust:1-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target directory between builds; the root filesystem is made
# from the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin agent-auth-operator --bin kubectl-agentauth \
 && scripts/image.sh rootfs /rootfs target/release

FROM scratch
COPY --from=build /rootfs/ /
LABEL org.opencontainers.image.title="agent-auth-operator" \
      org.opencontainers.image.description="Kubernetes operator that authorizes AI agents to act for users in third-party apps" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/usr/local/bin
# Numeric, so that runAsNonRoot can verify it.
USER 65532:65532
# Gateway (public) and admin (/healthz, /readyz, /metrics).
EXPOSE 8080 8081
# The chart's Deployment gives `args: [run, ...]`, which replace CMD: keep `run` out of ENTRYPOINT.
ENTRYPOINT ["/usr/local/bin/agent-auth-operator"]
CMD ["run"]
