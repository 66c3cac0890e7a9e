#!/usr/bin/env bash
# The demo: a private containerd runs a Wasm component through wasmpod.
#
#   test/demo.sh FIXTURES_DIR
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
fixtures=$(cd "${1:?usage: demo.sh FIXTURES_DIR}" && pwd)
suite=${DEMO_SUITE:-bookworm}

"$here/containerd.sh" stop "$suite"
trap '"$here/containerd.sh" stop "$suite"' EXIT
"$here/containerd.sh" start "$suite"
eval "$("$here/containerd.sh" env "$suite")"
ctr() { "$WASMPOD_CTR" -a "$WASMPOD_ADDRESS" -n demo "$@"; }

ctr images import "$fixtures/hello.tar" >/dev/null
echo
echo "\$ ctr run --rm --runtime io.containerd.wasmpod.v1 --env GREETING=hello-edge docker.io/wasmpod/hello:latest demo /hello.wasm from containerd"
ctr run --rm --runtime io.containerd.wasmpod.v1 --env GREETING=hello-edge \
    docker.io/wasmpod/hello:latest demo /hello.wasm from containerd
echo
echo "The shim's log lines for it, from containerd's log:"
grep -h 'container created\|container exited' "$WASMPOD_CONTAINERD_LOG" | sed 's/^/  /' | tail -n 2
