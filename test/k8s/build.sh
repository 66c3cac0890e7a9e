#!/usr/bin/env bash
# Builds the e2e cluster's programs from their Go modules (the go.mod files
# beside this script) and prints where they are:
#
#   test/k8s/build.sh [kube|etcd|helm|crictl|metrics]...   (default: all five)
#
# Each lands in $WASMPOD_K8S/<name>-<version>/ with the version in the
# directory name, so it is built once per version and a new version in a
# go.mod builds anew. Go's own caches move to $WASMPOD_CACHE_ROOT/go, where a
# second clone and CI find them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../paths.sh"
: "${GOMODCACHE:=$WASMPOD_CACHE_ROOT/go/mod}"
: "${GOCACHE:=$WASMPOD_CACHE_ROOT/go/build}"
# The go.sum files beside this script are the truth: a build never edits them.
export GOMODCACHE GOCACHE CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"

version_of() { # module dir, module path
    go -C "$here/$1" list -m -f '{{.Version}}' "$2"
}

# go build into a fresh directory renamed into place, so a build that fails
# or is stopped leaves no half set behind for the next run to trust.
build() { # name, version, module dir, ldflags, packages...
    local name=$1 version=$2 dir=$3 ldflags=$4
    shift 4
    local out="$WASMPOD_K8S/$name-$version"
    if [ -e "$out/.complete" ]; then
        echo "$name $version: $out (built before)" >&2
        return
    fi
    mkdir -p "$WASMPOD_K8S"
    local tmp
    tmp=$(mktemp -d "$WASMPOD_K8S/.$name-$version.XXXXXX")
    echo "$name $version: building $* ..." >&2
    local start=$SECONDS
    # One package is written under the set's name (etcd's main package is
    # its module's root, which go build would call v3).
    local to="$tmp/"
    [ $# -gt 1 ] || to="$tmp/$name"
    go -C "$here/$dir" build -trimpath -ldflags "-s -w $ldflags" -o "$to" "$@"
    chmod 755 "$tmp"
    touch "$tmp/.complete"
    rm -rf "$out"
    mv "$tmp" "$out"
    echo "$name $version: built in $((SECONDS - start)) s, $(du -sh "$out" | cut -f1): $(cd "$out" && ls | tr '\n' ' ')" >&2
}

kube() {
    local v major minor x ldflags=""
    v=$(version_of kube k8s.io/kubernetes)
    major=${v#v}; major=${major%%.*}
    minor=${v#v"$major".}; minor=${minor%%.*}
    # What `kubectl version`, the API server's /version and so Helm's
    # .Capabilities.KubeVersion report; unset, they say v0.0.0-master.
    for x in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $x.gitVersion=$v -X $x.gitMajor=$major -X $x.gitMinor=$minor"
        ldflags+=" -X $x.gitTreeState=clean -X $x.buildDate=1970-01-01T00:00:00Z"
    done
    build kube "$v" kube "$ldflags" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
        k8s.io/kubernetes/cmd/kubectl
}

etcd() {
    local v
    v=$(version_of etcd go.etcd.io/etcd/server/v3)
    build etcd "$v" etcd "" go.etcd.io/etcd/server/v3
}

helm() {
    local v
    v=$(version_of tools helm.sh/helm/v4)
    build helm "$v" tools "-X helm.sh/helm/v4/internal/version.version=$v" helm.sh/helm/v4/cmd/helm
}

crictl() {
    local v
    v=$(version_of tools sigs.k8s.io/cri-tools)
    build crictl "$v" tools "-X sigs.k8s.io/cri-tools/pkg/version.Version=$v" sigs.k8s.io/cri-tools/cmd/crictl
}

metrics() {
    local v
    v=$(version_of metrics sigs.k8s.io/metrics-server)
    build metrics-server "$v" metrics "" sigs.k8s.io/metrics-server/cmd/metrics-server
}

# One build at a time: .ci/run starts one beside the Rust build, and make's
# k8s step then waits here and finds the programs built.
mkdir -p "$WASMPOD_K8S"
exec 9>"$WASMPOD_K8S/.lock"
flock 9

[ $# -gt 0 ] || set -- kube etcd helm crictl metrics
for what in "$@"; do
    case $what in
        kube|etcd|helm|crictl|metrics) "$what" ;;
        *) echo "build.sh: unknown program set '$what' (kube, etcd, helm, crictl, metrics)" >&2; exit 2 ;;
    esac
done
