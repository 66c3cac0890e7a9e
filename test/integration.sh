#!/usr/bin/env bash
# Runs the containerd integration tests against one Debian release's containerd.
#
#   test/integration.sh SUITE FIXTURES_DIR
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
suite=${1:?usage: integration.sh SUITE FIXTURES_DIR}
fixtures=$(cd "${2:?usage: integration.sh SUITE FIXTURES_DIR}" && pwd)

"$here/containerd.sh" stop "$suite"
trap '"$here/containerd.sh" stop "$suite"' EXIT
"$here/containerd.sh" start "$suite"
set -a
eval "$("$here/containerd.sh" env "$suite")"
WASMPOD_FIXTURES=$fixtures
set +a
echo "== integration tests on containerd $("$WASMPOD_CTR" --version | awk '{print $3}') (Debian $suite)"
# One at a time: the leak checks count every shim and mount of this containerd.
cargo test --release --locked -p wasmpod-integration -- --ignored --test-threads=1
