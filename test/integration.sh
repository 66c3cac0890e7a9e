#!/usr/bin/env bash
# Runs the containerd integration tests against one Debian release's containerd.
#
#   test/integration.sh SUITE FIXTURES_DIR [TEST_NAME_FILTER...]
#
#   WASMPOD_TESTS="ctr pods"  only these test files (default: ctr artifacts pods installer)
#   WASMPOD_KEEP=1            reuse a running containerd of SUITE and leave it
#                             running afterwards, for the next narrow run
#   WASMPOD_BIN=DIR           the shim and CLI under test (test/paths.sh)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/paths.sh"
suite=${1:?usage: integration.sh SUITE FIXTURES_DIR [TEST_NAME_FILTER...]}
fixtures=$(cd "${2:?usage: integration.sh SUITE FIXTURES_DIR [TEST_NAME_FILTER...]}" && pwd)
shift 2
tests=${WASMPOD_TESTS:-ctr artifacts pods installer}
keep=${WASMPOD_KEEP:-}

python=$WASMPOD_VENV/bin/python

stop_all() {
    "$here/containerd.sh" stop "$suite"
    "$here/k8s/cluster.sh" down
    "$here/registry.sh" stop plain
    "$here/registry.sh" stop auth
}
[ -n "$keep" ] || stop_all
trap 'if [ -z "$keep" ]; then stop_all; fi' EXIT
# portmap's node-wide chains must go with the suite unless they were here first.
hostport_chains_before=no
iptables -t nat -S CNI-HOSTPORT-DNAT >/dev/null 2>&1 && hostport_chains_before=yes
"$here/containerd.sh" start "$suite"
"$here/registry.sh" start plain
"$here/registry.sh" start auth
# The installer labels its node and posts events in a real API server
# (Kubernetes built from source by test/k8s/build.sh, on 127.0.0.1).
kube_env=
case " $tests " in
    *" installer "*) kube_env=$("$here/k8s/cluster.sh" up) ;;
esac
# Helm's SDK renders the chart's installer pod for the installer tests.
"$here/chart.sh" deps
# oras (PyPI) is the other side of the interoperability tests.
"$python" -c 'import oras' 2>/dev/null || "$WASMPOD_VENV/bin/pip" install -q 'oras==0.2.43'
set -a
eval "$("$here/containerd.sh" env "$suite")"
eval "$kube_env"
WASMPOD_FIXTURES=$fixtures
WASMPOD_REGISTRY=$("$here/registry.sh" addr plain)
WASMPOD_REGISTRY_STORAGE=$("$here/registry.sh" storage plain)
WASMPOD_REGISTRY_AUTH=$("$here/registry.sh" addr auth)
WASMPOD_CLI=$WASMPOD_BIN/wasmpod
WASMPOD_INSTALLER=$WASMPOD_BIN/wasmpod-node-installer
# WASMPOD_INSTALLER_STATIC (test/paths.sh): the same, linked static for its
# image FROM scratch (make build).
WASMPOD_CHART_RENDER=$here/chart/render.py
WASMPOD_PYTHON=$python
# The CLI reads registry credentials from here: none, unless a test adds some.
DOCKER_CONFIG=$(mktemp -d /tmp/wasmpod-docker-config.XXXXXX)
set +a
echo "== integration tests on containerd $("$WASMPOD_CTR" --version | awk '{print $3}') (Debian $suite)," \
    "shim $WASMPOD_BIN/containerd-shim-wasmpod-v1"
test_args=()
for t in $tests; do test_args+=(--test "$t"); done
# One at a time: the leak checks count every shim and mount of this containerd.
# --workspace, in the quick profile whatever shim is under test: the same
# features as the unit run, so nothing is rebuilt.
status=0
cargo test --profile quick --locked --workspace --features "$WASMPOD_TEST_FEATURES" "${test_args[@]}" -- --ignored --test-threads=1 "$@" || status=$?
rm -rf "$DOCKER_CONFIG"
[ "$status" = 0 ] || exit "$status"
[ -z "$keep" ] || exit 0
trap - EXIT
stop_all
if [ "$hostport_chains_before" = no ] && iptables -t nat -S CNI-HOSTPORT-DNAT >/dev/null 2>&1; then
    echo "integration.sh: portmap's CNI-HOSTPORT chains outlived containerd ($suite)" >&2
    exit 1
fi
