#!/usr/bin/env bash
# Runs the containerd integration tests against one Debian release's containerd.
#
#   test/integration.sh SUITE FIXTURES_DIR
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
suite=${1:?usage: integration.sh SUITE FIXTURES_DIR}
fixtures=$(cd "${2:?usage: integration.sh SUITE FIXTURES_DIR}" && pwd)

top=$(cd "$here/.." && pwd)
python=$top/target/venv/bin/python

stop_all() {
    "$here/containerd.sh" stop "$suite"
    "$here/registry.sh" stop plain
    "$here/registry.sh" stop auth
}
stop_all
trap stop_all EXIT
# portmap's node-wide chains must go with the suite unless they were here first.
hostport_chains_before=no
iptables -t nat -S CNI-HOSTPORT-DNAT >/dev/null 2>&1 && hostport_chains_before=yes
"$here/containerd.sh" start "$suite"
"$here/registry.sh" start plain
"$here/registry.sh" start auth
# oras (PyPI) is the other side of the interoperability tests.
"$python" -c 'import oras' 2>/dev/null || "$top/target/venv/bin/pip" install -q 'oras==0.2.43'
set -a
eval "$("$here/containerd.sh" env "$suite")"
WASMPOD_FIXTURES=$fixtures
WASMPOD_REGISTRY=$("$here/registry.sh" addr plain)
WASMPOD_REGISTRY_STORAGE=$("$here/registry.sh" storage plain)
WASMPOD_REGISTRY_AUTH=$("$here/registry.sh" addr auth)
WASMPOD_CLI=$top/target/release/wasmpod
WASMPOD_PYTHON=$python
# The CLI reads registry credentials from here: none, unless a test adds some.
DOCKER_CONFIG=$top/target/docker-config
mkdir -p "$DOCKER_CONFIG"
set +a
echo "== integration tests on containerd $("$WASMPOD_CTR" --version | awk '{print $3}') (Debian $suite)"
# One at a time: the leak checks count every shim and mount of this containerd.
# --workspace: the same feature set as the unit run, so nothing is rebuilt.
cargo test --release --locked --workspace --test ctr --test artifacts --test pods -- --ignored --test-threads=1
trap - EXIT
stop_all
if [ "$hostport_chains_before" = no ] && iptables -t nat -S CNI-HOSTPORT-DNAT >/dev/null 2>&1; then
    echo "integration.sh: portmap's CNI-HOSTPORT chains outlived containerd ($suite)" >&2
    exit 1
fi
