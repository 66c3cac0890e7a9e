# wasmpod: `make demo` shows it, `make test` proves it, `make bench` measures it.
# Everything runs as root on a Debian bookworm machine; see README.md.
#
# Builds and downloads go to one place outside the checkout (test/paths.sh:
# /var/cache/wasmpod as root; CARGO_TARGET_DIR and WASMPOD_CACHE_ROOT move it).

SHELL := /bin/bash
CARGO ?= cargo
# Each recipe line starts from the same paths (test/paths.sh).
PATHS := . test/paths.sh &&
# Builds lint: the workspace's crates are compiled by clippy-driver with
# warnings fatal (test/clippy-rustc.sh), so Clippy costs no second pass over
# the dependencies. LINT= builds with rustc alone (then a LINT=1 build
# recompiles the workspace's crates, not the dependencies).
LINT ?= 1
ifeq ($(LINT),)
export RUSTC_WORKSPACE_WRAPPER :=
endif
TIMED := test/timed.sh
# Debian releases whose containerd the integration tests run against.
SUITES ?= bookworm trixie forky
# Releases whose containerd the e2e suite's kubelet runs on (test/e2e/):
# kubelet 1.37 takes all three (SUITES=forky narrows both).
E2E_SUITES ?= $(SUITES)
# Narrowing an integration run: test files (ctr artifacts pods installer), a test-name
# filter, and KEEP=1 to leave containerd running for the next run.
TESTS ?=
TEST ?=
KEEP ?=
E2E_TEST ?=
export WASMPOD_TESTS := $(TESTS)
export WASMPOD_KEEP := $(KEEP)
# Release builds link through shim/symbol_order.py, which finds the hot
# functions of shim/symbol-order.txt under this build's symbol names.
HOST := $(shell rustc -vV | sed -n 's/^host: //p')
RELEASE := --release --locked --config 'target.$(HOST).linker="$(CURDIR)/shim/symbol_order.py"'
# Test builds carry the sandbox probe (shim/src/sandbox.rs,
# WASMPOD_TEST_FEATURES in test/paths.sh); what ships does not, which
# `make dist` checks.
TEST_FEATURES := --features "$$WASMPOD_TEST_FEATURES"
# The shipped binaries' smoke tests, which `make bench` runs on them.
SMOKE := component_prints_its_args_and_env exit_status_is_the_guests \
	trap_gives_134_and_a_wasm_backtrace kill_ends_a_spinning_guest

.PHONY: all deps build fixtures k8s demo test unit chart fuzz integration e2e dist installer-image bench hot-symbols lint clean

all: build

deps:
	$(TIMED) deps test/deps.sh

# Tests and the demo build the quick profile (Cargo.toml): optimised
# dependencies, no LTO, incremental. Every target of the workspace at once,
# as `cargo test --workspace` sees them: Cargo unifies dependencies' features
# over what one invocation builds, so the tests then rebuild nothing.
build: deps
	$(PATHS) $(TIMED) build $(CARGO) build --profile quick --locked --workspace --all-targets $(TEST_FEATURES)
	@# The installer again, linked static: the integration tests run its
	@# image, which is FROM scratch, as the chart's DaemonSet would. Only its
	@# own crate gets the flag (cargo rustc), so it reuses the dependencies
	@# built above where their features agree. A later cargo build puts the
	@# dynamic one back at the same path, hence the copy.
	$(PATHS) $(TIMED) "static installer" $(CARGO) rustc --profile quick --locked \
		-p wasmpod-installer --bin wasmpod-node-installer -- -C target-feature=+crt-static
	$(PATHS) mkdir -p "$$(dirname "$$WASMPOD_INSTALLER_STATIC")" && \
		cp "$$CARGO_TARGET_DIR/quick/wasmpod-node-installer" "$$WASMPOD_INSTALLER_STATIC"

fixtures: build
	$(PATHS) $(TIMED) fixtures test/wasm/build.sh "$$WASMPOD_FIXTURES"

demo: fixtures
	$(PATHS) test/demo.sh "$$WASMPOD_FIXTURES"

test: unit chart fuzz integration e2e

# Needs no root, no containerd and no network: the tests that do are
# #[ignore]d and run by `integration`. Then the release link's symbol
# mapping, on a small program of its own.
unit:
	$(PATHS) $(TIMED) unit $(CARGO) test --profile quick --locked --workspace $(TEST_FEATURES)
	$(TIMED) "symbol order" python3 test/symbol_order_test.py

# Bad input, fuzzed: each target of fuzz/ (pod specs, socket grants, image
# manifests, Wasm headers) for FUZZ_SECONDS, two at a time, in a network
# namespace of its own (test/fuzz.sh; FUZZ_TARGETS narrows it).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz: deps
	$(PATHS) $(TIMED) fuzz test/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The Helm chart through Helm v4's Go SDK (PyPI helm-python-sdk): lint,
# schema, rendered objects. No cluster.
chart: deps
	$(PATHS) $(TIMED) chart test/chart.sh

# Kubernetes' own binaries, etcd, Helm and crictl, built from their Go
# modules into $WASMPOD_K8S once per version (test/k8s/): the installer
# tests' API server and the e2e cluster.
k8s:
	$(PATHS) $(TIMED) k8s test/k8s/build.sh

# The installer tests (in the default set) need the k8s binaries; others not.
integration: fixtures $(if $(if $(TESTS),$(filter installer,$(TESTS)),installer),k8s)
	@$(PATHS) for suite in $(SUITES); do \
		$(TIMED) "integration $$suite" test/integration.sh $$suite "$$WASMPOD_FIXTURES" $(TEST) || exit 1; \
	done

# The chart installed by helm into a one-node Kubernetes on each E2E_SUITES
# containerd, and the examples run by its kubelet (test/e2e/run.sh;
# E2E_TEST=test_01 narrows it to names). test/kind/run.sh runs the same
# suite on kind.
e2e: fixtures k8s
	@$(PATHS) for suite in $(E2E_SUITES); do \
		$(TIMED) "e2e $$suite" test/e2e/run.sh $$suite $(E2E_TEST) || exit 1; \
	done

# What ships: the release profile (fat LTO, one codegen unit, the hot
# functions first through shim/symbol-order.txt), in $CARGO_TARGET_DIR/release.
dist: deps
	$(PATHS) $(TIMED) dist $(CARGO) build $(RELEASE) \
		-p containerd-shim-wasmpod -p wasmpod-cli -p wasmpod-fixtures
	@# One of the probe's attempts, a string stored whole (the variable's
	@# name is compared in code, not kept as a string).
	@$(PATHS) if grep -q "ptrace the parent process" "$$CARGO_TARGET_DIR/release/containerd-shim-wasmpod-v1"; then \
		echo "the release shim carries the test-only sandbox probe" >&2; exit 1; fi
	@$(PATHS) echo "shipped binaries: $$CARGO_TARGET_DIR/release/{containerd-shim-wasmpod-v1,wasmpod}"

# The node installer's image (installer, linked static, and the shipped
# shim, FROM scratch) as an OCI archive, for `ctr images import` or a push.
installer-image: dist
	$(PATHS) RUSTFLAGS="-C target-feature=+crt-static" $(TIMED) "static installer" $(CARGO) build $(RELEASE) \
		-p wasmpod-installer --target $(HOST)
	$(PATHS) "$$CARGO_TARGET_DIR/$(HOST)/release/wasmpod-node-installer" image \
		--shim "$$CARGO_TARGET_DIR/release/containerd-shim-wasmpod-v1" \
		--reference docker.io/wasmpod/node-installer:$$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1) \
		--output "$$CARGO_TARGET_DIR/node-installer-image.tar"

# Measures the shipped binaries, after their smoke tests.
bench: fixtures dist k8s
	$(PATHS) $(CARGO) build $(RELEASE) -p wasmpod-integration --bin create-container --bin cri-bench --bin churn
	$(PATHS) test/hot-symbols.py --report "$$CARGO_TARGET_DIR/release/containerd-shim-wasmpod-v1"
	$(PATHS) WASMPOD_BIN="$$CARGO_TARGET_DIR/release" WASMPOD_TESTS=ctr WASMPOD_KEEP= \
		$(TIMED) "smoke tests of the release shim" test/integration.sh bookworm "$$WASMPOD_FIXTURES" $(SMOKE)
	$(PATHS) WASMPOD_BIN="$$CARGO_TARGET_DIR/release" test/bench.py "$$WASMPOD_FIXTURES"
	@# Pod start through a real kubelet on containerd 2.1.9, Wasm against runc.
	$(PATHS) WASMPOD_BIN="$$CARGO_TARGET_DIR/release" $(TIMED) "kubelet bench" test/e2e/run.sh forky --bench

# Profiles which of the shim's functions run, for the linker's layout
# (shim/build.rs); redo when `make bench` reports the list stale.
hot-symbols: fixtures dist
	$(PATHS) $(CARGO) build $(RELEASE) -p wasmpod-integration --bin cri-bench
	$(PATHS) WASMPOD_BIN="$$CARGO_TARGET_DIR/release" test/hot-symbols.py "$$WASMPOD_FIXTURES"
	$(MAKE) dist

# rustfmt, then the build with Clippy's lints (LINT above) over every target.
lint:
	$(TIMED) fmt $(CARGO) fmt --all --check
	$(TIMED) "module graph" python3 test/module_graph.py shim/src oci/src installer/src cli/src
	$(MAKE) build LINT=1

# Stops the test containerds; the build cache stays (rm -rf it by hand).
clean:
	for suite in $(SUITES); do test/containerd.sh stop $$suite; done
