#!/usr/bin/env bash
# The e2e suite (test/e2e/e2e.py) on this machine: a one-node Kubernetes of
# Kubernetes' own binaries on containerd of Debian SUITE (test/k8s/), the
# images in a private registry that containerd mirrors docker.io from, the
# chart installed by helm. Everything it starts it stops, pass or fail.
#
#   test/e2e/run.sh SUITE [TEST_NAME...]
#   test/e2e/run.sh SUITE --bench      pod start through the kubelet instead
#                                      (test/e2e/bench.py), for `make bench`
#
#   WASMPOD_KEEP=1   leave the cluster and the registry running afterwards,
#                    to look at (test/k8s/cluster.sh down stops it)
#
# Needs `make build fixtures` (the shim, the static installer, the images).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../paths.sh"
suite=${1:?usage: run.sh SUITE [TEST_NAME...|--bench]}
shift
program=$here/e2e.py
if [ "${1:-}" = --bench ]; then program=$here/bench.py; shift; fi
k8s=$here/../k8s
registry=$("$here/../registry.sh" addr plain)
installer=$WASMPOD_INSTALLER_STATIC
shim=$WASMPOD_BIN/containerd-shim-wasmpod-v1
[ -x "$installer" ] && [ -x "$shim" ] || { echo "run.sh: run 'make build fixtures' first" >&2; exit 1; }

"$k8s/build.sh" kube etcd helm crictl
"$here/../chart.sh" deps
work=
stop_all() {
    "$k8s/cluster.sh" down
    "$here/../registry.sh" stop plain
    [ -z "$work" ] || rm -rf "$work"
}
stop_all
[ -n "${WASMPOD_KEEP:-}" ] || trap stop_all EXIT
work=$(mktemp -d /tmp/wasmpod-e2e.XXXXXX)
"$here/../registry.sh" start plain
set -a
eval "$("$k8s/cluster.sh" up "$suite")"
set +a

# The images, pushed as a release pipeline would. The upgrade's installer
# carries the same shim with a marker appended: a different file (another
# name and hash on the node) that runs the same.
push() { # OCI archive, repository:tag
    skopeo copy -q --dest-tls-verify=false "oci-archive:$1" "docker://$registry/$2"
}
for tag in e2e e2e-upgrade; do
    cp "$shim" "$work/containerd-shim-wasmpod-v1"
    [ "$tag" = e2e ] || printf '\nwasmpod e2e upgrade\n' >> "$work/containerd-shim-wasmpod-v1"
    "$installer" image --shim "$work/containerd-shim-wasmpod-v1" \
        --reference "docker.io/wasmpod/node-installer:$tag" --output "$work/installer-$tag.tar"
    push "$work/installer-$tag.tar" "wasmpod/node-installer:$tag"
done
push "$WASMPOD_FIXTURES/hello.tar" wasmpod/hello:latest
push "$WASMPOD_FIXTURES/programs.tar" wasmpod/test-programs:latest
push "$WASMPOD_FIXTURES/hello-native.tar" wasmpod/hello-native:latest
push "$WASMPOD_FIXTURES/http-native.tar" wasmpod/http-native:latest

# This node's containerd: its own config and socket, restarted by the
# cluster's supervisor when the installer signals it; the API server is on
# 127.0.0.1, which pods reach only in the node's network namespace.
d=$WASMPOD_KUBE_NODE_DIR
cat > "$work/values-node.yaml" <<YAML
installer:
  hostNetwork: true
apiServer:
  host: 127.0.0.1
  port: ${WASMPOD_KUBE_API##*:}
node:
  layout: containerd
  configPath: $d/etc/config.toml
  containerdSocket: $d/run/containerd.sock
  restart: signal
  installDir: $d/opt-wasmpod
  binDir: $d/bin
YAML

filter=()
for t in "$@"; do filter+=(-k "$t"); done
status=0
WASMPOD_E2E_VALUES="$here/values.yaml:$work/values-node.yaml" \
WASMPOD_E2E_UPGRADE_TAG=e2e-upgrade \
WASMPOD_E2E_NODE=$WASMPOD_KUBE_NODE \
WASMPOD_E2E_NODE_CONFIG=$d/etc/config.toml \
WASMPOD_E2E_NODE_RUN= \
WASMPOD_E2E_CRICTL="$WASMPOD_CRICTL --runtime-endpoint unix://$d/run/containerd.sock" \
WASMPOD_E2E_POD_NET=1 \
WASMPOD_E2E_METRICS=1 \
    "$WASMPOD_VENV/bin/python" "$program" -v "${filter[@]}" || status=$?
if [ "$status" != 0 ]; then
    echo "== e2e failed; the node's logs:" >&2
    tail -n 30 "$d/containerd.log" >&2 || true
    tail -n 30 /run/wasmpod-k8s/kubelet.log >&2 || true
fi
exit "$status"
