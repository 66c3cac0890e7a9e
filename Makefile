# wasmpod: `make demo` shows it, `make test` proves it, `make bench` measures it.
# Everything runs as root on a Debian bookworm machine; see README.md.

SHELL := /bin/bash
CARGO ?= cargo
FIXTURES := $(CURDIR)/target/fixtures
# Debian releases whose containerd the integration tests run against.
SUITES ?= bookworm trixie forky

.PHONY: all deps build fixtures demo test unit integration bench hot-symbols lint clean

all: build

deps:
	test/deps.sh

# One profile for everything (release): Wasmtime is built once, and tests,
# demo and benchmark exercise the binary that ships.
# Always these three together: Cargo unifies their dependencies' features,
# and the shim's symbol names, which shim/symbol-order.txt lists, follow them.
build: deps
	$(CARGO) build --release --locked -p containerd-shim-wasmpod -p wasmpod-cli -p wasmpod-fixtures

fixtures: build
	test/wasm/build.sh $(FIXTURES)

demo: fixtures
	test/demo.sh $(FIXTURES)

test: unit integration

unit: build
	$(CARGO) test --release --locked --workspace
	test/hot-symbols.py --check target/release/containerd-shim-wasmpod-v1

integration: fixtures
	@for suite in $(SUITES); do test/integration.sh $$suite $(FIXTURES) || exit 1; done

bench: fixtures
	$(CARGO) build --release --locked -p wasmpod-integration --bin create-container --bin cri-bench
	test/bench.py $(FIXTURES)

# Profiles which of the shim's functions run, for the linker's layout
# (shim/build.rs); redo after changing the shim or its dependencies.
hot-symbols: fixtures
	$(CARGO) build --release --locked -p wasmpod-integration --bin cri-bench
	test/hot-symbols.py $(FIXTURES)
	$(MAKE) build

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings

clean:
	for suite in $(SUITES); do test/containerd.sh stop $$suite; done
	$(CARGO) clean
