# One command runs everything on a fresh machine: `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test demo deps control-plane lint crds unit cluster bench image

## Install dependencies, build the control plane (cached), lint, and run unit + integration tests
## (tests/demo.rs runs the demo end to end without a user).
test: deps control-plane lint
	$(CARGO) test --workspace --locked

## Run the product locally: control plane, Dex, the operator, sample accounts (Ctrl-C stops).
demo: deps control-plane
	$(CARGO) build --locked --bin agent-auth-operator
	$(CARGO) run --locked --quiet -p agentauth-testcluster --bin demo -- $(DEMO_FLAGS) target/debug/agent-auth-operator

deps:
	@scripts/install-deps.sh

## Build the test cluster into the version-keyed cache: etcd, kube-apiserver, kube-controller-manager,
## kubectl and Dex, and the node (tests/node): kube-scheduler, the kubelet, kube-proxy, containerd,
## runc, the CNI plugins and pause. All Kubernetes binaries in one Go build, so they share its cache.
control-plane:
	@K8S_CMDS="$(K8S_CMDS)" tests/cluster/build.sh >/dev/null
	@tests/cluster/build-node.sh >/dev/null

K8S_CMDS := kube-apiserver kube-controller-manager kubectl kube-scheduler kubelet kube-proxy

## Formatting, clippy, and cargo-deny's offline checks of the dependency tree (deny.toml).
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	@scripts/cargo-deny.sh check bans licenses sources

## Regenerate crds/ from the Rust types.
crds:
	$(CARGO) run --quiet -- crd > crds/agentauth.dev.yaml
	cp crds/agentauth.dev.yaml charts/agent-auth-operator/files/agentauth.dev.yaml

## Unit tests only (no control plane).
unit:
	$(CARGO) test --lib --locked

## Run the test control plane by hand; prints `export KUBECONFIG=...`.
cluster: control-plane
	$(CARGO) run --quiet -p agentauth-testcluster --bin testcluster

## The speed and scale suite of BENCHMARKS.md against a dedicated control plane (about 15 minutes);
## writes target/bench/results.md and results.json. `BENCH_SCALE=smoke make bench` for a quick run.
bench: deps
	@scripts/install-bench-deps.sh
	@tests/cluster/build.sh >/dev/null
	$(CARGO) bench --bench suite --locked
	@echo "results table: target/bench/results.md (raw numbers: target/bench/results.json)"

## The operator's OCI image as an OCI archive, built without a registry or base image (scripts/image.sh):
## target/image/agent-auth-operator.tar, localhost/agentauth/agent-auth-operator:dev. PROFILE=debug
## reuses the debug build; IMAGE=..., OUT=...; IMPORT_ADDRESS=SOCK [CTR=ctr] imports it into containerd.
image:
	@scripts/image.sh
