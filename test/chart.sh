#!/usr/bin/env bash
# The Helm chart's tests (test/chart/test_chart.py), through Helm v4's own Go
# SDK as PyPI's helm-python-sdk ships it: no helm binary, no cluster.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/paths.sh"
venv=$WASMPOD_VENV
helm_sdk_version=0.2.2
pyyaml_version=6.0.4

if ! "$venv/bin/python" -c "
import importlib.metadata as m, sys
sys.exit(m.version('helm-python-sdk') != '$helm_sdk_version' or m.version('PyYAML') != '$pyyaml_version')
" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "helm-python-sdk==$helm_sdk_version" "pyyaml==$pyyaml_version"
fi
# `test/chart.sh deps`: only the above, for the integration tests' renders.
[ "${1:-}" != deps ] || exit 0
cd "$here/chart"
exec "$venv/bin/python" -m unittest -v test_chart
