#!/usr/bin/env bash
# Cargo's RUSTC_WORKSPACE_WRAPPER for wasmpod's builds (test/paths.sh): the
# workspace's own crates are compiled by clippy-driver, which is rustc with
# Clippy's lints, and any warning fails the build. So the build is the lint,
# and the dependencies are compiled once, for the tests and the lint alike
# (`cargo clippy` would check them all again). Dependencies are compiled by
# plain rustc, as Cargo runs this wrapper for workspace members only.
# bash, not sh: dash drops variables such as CARGO_BIN_EXE_wasmpod-node-installer
# from the environment, and tests read those at compile time.
if ! command -v clippy-driver >/dev/null 2>&1; then
    echo "clippy-rustc.sh: clippy-driver not found: install Clippy (rustup component add clippy)," >&2
    echo "or build without the lint: make LINT= ..., or RUSTC_WORKSPACE_WRAPPER= cargo ..." >&2
    exit 1
fi
exec clippy-driver "$@" -D warnings
