#!/usr/bin/env bash
# The e2e suite (test/e2e/e2e.py, the same file test/e2e/run.sh runs here)
# on a kind cluster, where Docker and kind exist:
#
#   test/kind/run.sh [TEST_NAME...]
#
# It builds the images as test/e2e/run.sh does, creates cluster
# wasmpod-e2e (kind-config.yaml), loads the images into its node with `kind
# load image-archive`, and runs the suite with the values kind needs: plain
# containerd restarted by the node's systemd, the API through its Service.
# WASMPOD_KEEP=1 leaves the cluster (kind delete cluster --name wasmpod-e2e).
#
# Needs `make build fixtures`. On a machine without Docker (this project's
# build machine) it stops before the first step that needs Docker, says so,
# and exits 2.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../paths.sh"
cluster=wasmpod-e2e
node=$cluster-control-plane
installer=$WASMPOD_INSTALLER_STATIC
shim=$WASMPOD_BIN/containerd-shim-wasmpod-v1
[ -x "$installer" ] && [ -x "$shim" ] || { echo "kind/run.sh: run 'make build fixtures' first" >&2; exit 1; }

"$here/../k8s/build.sh" kube helm
kube_dir=$(ls -d "$WASMPOD_K8S"/kube-*/ | tail -n1)
helm_bin=$(ls -d "$WASMPOD_K8S"/helm-*/helm | tail -n1)
"$here/../chart.sh" deps
work=$(mktemp -d /tmp/wasmpod-kind.XXXXXX)
trap 'rm -rf "$work"' EXIT

# The same images as test/e2e/run.sh, as OCI archives.
for tag in e2e e2e-upgrade; do
    cp "$shim" "$work/containerd-shim-wasmpod-v1"
    [ "$tag" = e2e ] || printf '\nwasmpod e2e upgrade\n' >> "$work/containerd-shim-wasmpod-v1"
    "$installer" image --shim "$work/containerd-shim-wasmpod-v1" \
        --reference "docker.io/wasmpod/node-installer:$tag" --output "$work/installer-$tag.tar"
done
archives=("$work/installer-e2e.tar" "$work/installer-e2e-upgrade.tar"
    "$WASMPOD_FIXTURES/hello.tar" "$WASMPOD_FIXTURES/programs.tar" "$WASMPOD_FIXTURES/hello-native.tar")

if ! command -v kind >/dev/null || ! docker info >/dev/null 2>&1; then
    echo "kind/run.sh: the images are built ($work); kind needs a Docker engine and the kind binary, and this machine has $(command -v kind >/dev/null && echo kind || echo no kind) and $(docker info >/dev/null 2>&1 && echo a Docker engine || echo no Docker engine): stopping before 'kind create cluster'" >&2
    exit 2
fi

kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
[ -n "${WASMPOD_KEEP:-}" ] || trap 'kind delete cluster --name "$cluster"; rm -rf "$work"' EXIT
kind create cluster --name "$cluster" --config "$here/kind-config.yaml" --kubeconfig "$work/kubeconfig" --wait 120s
for archive in "${archives[@]}"; do
    kind load image-archive --name "$cluster" "$archive"
done

filter=()
for t in "$@"; do filter+=(-k "$t"); done
KUBECONFIG=$work/kubeconfig \
WASMPOD_KUBECTL=$kube_dir/kubectl \
WASMPOD_HELM=$helm_bin \
WASMPOD_E2E_VALUES="$here/../e2e/values.yaml:$here/values.yaml" \
WASMPOD_E2E_UPGRADE_TAG=e2e-upgrade \
WASMPOD_E2E_NODE=$node \
WASMPOD_E2E_NODE_CONFIG=/etc/containerd/config.toml \
WASMPOD_E2E_NODE_RUN="docker exec $node" \
WASMPOD_E2E_CRICTL=crictl \
WASMPOD_E2E_POD_NET=0 \
WASMPOD_E2E_METRICS=${WASMPOD_E2E_METRICS:-0} \
    "$WASMPOD_VENV/bin/python" "$here/../e2e/e2e.py" -v "${filter[@]}"
