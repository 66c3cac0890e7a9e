#!/usr/bin/env bash
# Where wasmpod's builds, downloads and test programs live: one place
# outside the checkout, so a second clone on this machine and a CI run after
# a session reuse what was built and fetched. Nothing needs it to exist:
# an empty or missing cache only means everything is built and fetched again.
#
#   . test/paths.sh       set and export the variables below (unset ones only)
#   test/paths.sh         print them, NAME=value a line (for Python and make)
#
#   WASMPOD_CACHE_ROOT  /var/cache/wasmpod as root, else ~/.cache/wasmpod
#   CARGO_TARGET_DIR    $WASMPOD_CACHE_ROOT/target
#   WASMPOD_BIN         $CARGO_TARGET_DIR/quick: the binaries tests run (the
#                       quick profile's; make bench sets the release ones)
#   WASMPOD_FIXTURES    $CARGO_TARGET_DIR/fixtures: test programs and images
#   WASMPOD_INSTALLER_STATIC  $CARGO_TARGET_DIR/static/wasmpod-node-installer:
#                       the quick installer linked static, for its image
#   WASMPOD_CACHE       $WASMPOD_CACHE_ROOT/downloads: containerd packages
#   WASMPOD_VENV        $WASMPOD_CACHE_ROOT/venv: componentize-py, oras
#   WASMPOD_K8S         $WASMPOD_CACHE_ROOT/k8s: Kubernetes, etcd, helm, crictl
#                       built by test/k8s/build.sh, a directory per version
#   WASMPOD_TEST_FEATURES  Cargo features of every test build (the sandbox
#                       probe); the shipped build has none
#   RUSTC_WORKSPACE_WRAPPER  test/clippy-rustc.sh: the workspace's crates built
#                       with Clippy's lints, warnings fatal; set it empty
#                       (make LINT=) to build with rustc alone

if [ -z "${WASMPOD_CACHE_ROOT:-}" ]; then
    if [ "$(id -u)" = 0 ]; then
        WASMPOD_CACHE_ROOT=/var/cache/wasmpod
    else
        WASMPOD_CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/wasmpod
    fi
fi
: "${CARGO_TARGET_DIR:=$WASMPOD_CACHE_ROOT/target}"
: "${WASMPOD_BIN:=$CARGO_TARGET_DIR/quick}"
: "${WASMPOD_FIXTURES:=$CARGO_TARGET_DIR/fixtures}"
: "${WASMPOD_INSTALLER_STATIC:=$CARGO_TARGET_DIR/static/wasmpod-node-installer}"
: "${WASMPOD_CACHE:=$WASMPOD_CACHE_ROOT/downloads}"
: "${WASMPOD_VENV:=$WASMPOD_CACHE_ROOT/venv}"
: "${WASMPOD_K8S:=$WASMPOD_CACHE_ROOT/k8s}"
: "${WASMPOD_TEST_FEATURES:=containerd-shim-wasmpod/sandbox-probe}"
# Unset only: an empty value is the way to turn the lint off.
: "${RUSTC_WORKSPACE_WRAPPER=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/clippy-rustc.sh}"
wasmpod_paths=(WASMPOD_CACHE_ROOT CARGO_TARGET_DIR WASMPOD_BIN WASMPOD_FIXTURES WASMPOD_INSTALLER_STATIC WASMPOD_CACHE WASMPOD_VENV WASMPOD_K8S WASMPOD_TEST_FEATURES RUSTC_WORKSPACE_WRAPPER)
export "${wasmpod_paths[@]}"

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    for v in "${wasmpod_paths[@]}"; do echo "$v=${!v}"; done
fi
