# The verbs people type. `make run` starts a single-node cluster; `make test`
# runs every test tier that this machine supports; `make bench` prints the
# benchmark table.
SHELL := /bin/bash
CARGO ?= cargo
DATA_DIR ?= /var/lib/skiff
PORT ?= 6443
KUBECTL_DIR ?= /usr/lib/google-cloud-sdk/bin

.PHONY: setup build run test lint bench clean-e2e

# System packages the build and the tests need (Debian), and containerd
# running. Safe to run twice.
setup:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup) first"; exit 1; }
	./scripts/setup.sh
	@ls $(KUBECTL_DIR)/kubectl.1.* >/dev/null 2>&1 || echo "note: no versioned kubectl in $(KUBECTL_DIR); the kubectl tests need them"

build:
	$(CARGO) build --release -p skiff

# A single-node cluster in the foreground: Ctrl-C stops it, state stays in $(DATA_DIR).
run: setup build
	@echo "kubeconfig: $(DATA_DIR)/kubeconfig.yaml  (export KUBECONFIG=$(DATA_DIR)/kubeconfig.yaml)"
	./target/release/skiff server --data-dir $(DATA_DIR) --https-listen-port $(PORT)

test: setup
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: setup
	./scripts/setup.sh --bench
	$(CARGO) build --release -p skiff -p skiff-bench
	./target/release/skiff-bench --skiff ./target/release/skiff
	$(CARGO) run --release -q -p skiff-controllers --features simulator --example bench
	$(CARGO) run --release -q -p skiff-dns --example bench -- --services 1000 --seconds 10
	$(CARGO) run --release -q -p skiff-ingress --features bench --bin skiff-ingress-bench -- 5
	$(CARGO) test --release -q -p skiff-agent --test streams -- --ignored --nocapture bench_
	$(CARGO) test --release -q -p skiff-agent --test pods -- --ignored --nocapture bench_
	$(CARGO) test --release -q -p skiff-tests --test agent_bench -- --ignored --nocapture
	$(CARGO) test --release -q -p skiff-tests --test net_bench -- --ignored --nocapture

# Remove what an interrupted test run may have left behind (all test objects
# carry the skiff-test prefix).
clean-e2e:
	@for ns in $$(ip netns list 2>/dev/null | awk '{print $$1}' | grep '^skiff-test' || true); do ip netns delete $$ns; done
	@rm -rf /tmp/skiff-test-*
