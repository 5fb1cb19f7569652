# wharf — every target installs what it needs (Debian packages, Go-built tools, crates) on first use.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/wharf
export CARGO_TARGET_DIR ?= $(CACHE)/target
CLUSTER_DIR ?= $(CURDIR)/.local/cluster
export WHARF_CLUSTER_DIR := $(CLUSTER_DIR)
IMAGE ?= wharf.local/wharf:dev
export WHARF_IMAGE := $(IMAGE)
PYTEST ?= python3 -m pytest

.PHONY: crds help run test test-unit test-e2e e2e build lint fmt image cluster-up cluster-down deps tools bench bench-operator bench-pull-credentials bench-gc bench-s3 bench-replication clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

deps: ## install Debian packages and Go-built tools the tests use
	@e2e/tools/install-deps.sh
	@e2e/tools/build-go-tools.sh >/dev/null

build: ## build the wharf binary (debug)
	cargo build --locked

lint: ## rustfmt check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings

fmt:
	cargo fmt --all

crds: ## regenerate crds/ from the Rust types in src/crd/
	cargo run --locked -q -- crdgen --out crds

run: ## start the local cluster (or use KUBECONFIG's), install the operator, apply the sample Registry
	@e2e/run.sh

test: deps lint ## every test: unit, registry against real clients, end to end on a real cluster
	cargo test --locked
	$(PYTEST) e2e -v $(PYTEST_ARGS)

test-unit: ## unit tests only
	cargo test --locked

e2e: deps ## end-to-end tests only
	$(PYTEST) e2e -v $(PYTEST_ARGS)

image: ## build wharf's OCI image without Docker and load it into the local cluster
	@mkdir -p $(CACHE)/images
	@e2e/images/build.sh wharf $(CACHE)/images/wharf.tar >/dev/null
	@if [ -S $(CLUSTER_DIR)/containerd/containerd.sock ]; then \
		ctr --address $(CLUSTER_DIR)/containerd/containerd.sock -n k8s.io images import --no-unpack $(CACHE)/images/wharf.tar >/dev/null && \
		echo "image $(IMAGE) loaded into the local cluster"; \
	else echo "image $(IMAGE) written to $(CACHE)/images/wharf.tar (no local cluster running to load it into)"; fi

cluster-up: ## start the local Kubernetes cluster (idempotent)
	@e2e/cluster/up.sh

cluster-down: ## stop the local cluster and remove everything it created
	@e2e/cluster/down.sh

bench: ## wharf vs the reference registry side by side (../shared/bench), then the operator, pull credentials, GC, S3 and replication; writes docs/benchmarks.md
	@e2e/bench/run.sh
	@$(MAKE) --no-print-directory bench-operator
	@$(MAKE) --no-print-directory bench-pull-credentials
	@$(MAKE) --no-print-directory bench-gc
	@$(MAKE) --no-print-directory bench-s3
	@$(MAKE) --no-print-directory bench-replication

bench-operator: ## the operator with 50 Registries on the local cluster (installs it like make run)
	@e2e/run.sh >/dev/null
	@KUBECONFIG=$${KUBECONFIG:-$(CLUSTER_DIR)/kubeconfig} KUBECTL=$$(test -x $(CLUSTER_DIR)/bin/kubectl && echo $(CLUSTER_DIR)/bin/kubectl || echo kubectl) python3 e2e/bench/operator.py

bench-replication: ## wharf replicate against skopeo sync: 200 images (about 1 GiB) between Distribution registries
	@e2e/tools/install-deps.sh
	@python3 e2e/bench/replication.py

bench-s3: ## wharf on S3 against Distribution's s3 driver on the same S3 server (registry-bench, then GC of 100,000 blobs)
	@e2e/tools/install-deps.sh
	@python3 e2e/bench/s3.py

bench-gc: ## online GC against Distribution's offline garbage-collect on 100,000 blobs and 20,000 manifests
	@e2e/tools/install-deps.sh
	@python3 e2e/bench/gc.py

bench-pull-credentials: ## one ImagePullCredential into 1,000 namespaces vs kubectl apply of the same Secrets
	@e2e/run.sh >/dev/null
	@KUBECONFIG=$${KUBECONFIG:-$(CLUSTER_DIR)/kubeconfig} KUBECTL=$$(test -x $(CLUSTER_DIR)/bin/kubectl && echo $(CLUSTER_DIR)/bin/kubectl || echo kubectl) python3 e2e/bench/pull_credentials.py

clean: cluster-down
	rm -rf .local
