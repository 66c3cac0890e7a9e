#!/usr/bin/env bash
# Fetches and runs private containerd instances for wasmpod's tests.
#
#   test/containerd.sh fetch SUITE    download Debian SUITE's containerd into the cache
#   test/containerd.sh start SUITE    start it with its own root, state, socket and config
#   test/containerd.sh stop SUITE     stop it and remove everything it left behind
#   test/containerd.sh env SUITE      print the variables the integration tests read
#
# SUITE is a Debian release: bookworm (1.6.x), trixie (1.7.x) or forky (2.x).
# Packages come from the Debian mirror already configured on this machine,
# through a private apt configuration; the system's apt sources are untouched.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/paths.sh"
cache=$WASMPOD_CACHE
run_root=${WASMPOD_RUN:-/run/wasmpod-test}
# The shim containerd runs: the build's (tests), or the shipped one (bench).
shim_dir=${WASMPOD_SHIM_DIR:-$WASMPOD_BIN}

die() { echo "containerd.sh: $*" >&2; exit 1; }

mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
    [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -n1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

apt_private() {
    local suite=$1; shift
    local d=$cache/apt/$suite
    apt-get -q -o Dir::Etc::SourceList="$d/sources.list" -o Dir::Etc::SourceParts=- \
        -o Dir::State::Lists="$d/lists" -o Dir::Cache::Archives="$d/archives" \
        -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= \
        -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root "$@"
}

fetch() {
    local suite=$1 d=$cache/apt/$1 dest=$cache/containerd/$1
    if [ -x "$dest/usr/bin/containerd" ]; then return; fi
    mkdir -p "$d/lists/partial" "$d/archives/partial" "$d/debs"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(mirror) $suite main" > "$d/sources.list"
    echo "fetching containerd from Debian $suite" >&2
    apt_private "$suite" update >&2
    (cd "$d/debs" && rm -f ./*.deb && apt_private "$suite" download containerd >&2)
    rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
    dpkg -x "$d"/debs/containerd_*.deb "$dest.tmp"
    rm -rf "$dest" && mv "$dest.tmp" "$dest"
    "$dest/usr/bin/containerd" --version >&2
}

paths() {
    suite=$1
    bin=$cache/containerd/$suite/usr/bin
    dir=$run_root/$suite
    sock=$dir/containerd.sock
    bridge=wp-$suite
    # Room for 1,000 pods each (`cri-bench --density` starts 500).
    case $suite in
        bookworm) subnet=10.88.96.0/22 ;;
        trixie) subnet=10.88.100.0/22 ;;
        *) subnet=10.88.104.0/22 ;;
    esac
}

# The pod sandbox ("pause") image the CRI plugin runs for every pod; built
# from test/cri/pause.c by test/wasm/build.sh and imported by the CRI tests.
sandbox_image=wasmpod.test/pause:1

start() {
    paths "$1"
    [ -x "$bin/containerd" ] || fetch "$1"
    [ -x "$shim_dir/containerd-shim-wasmpod-v1" ] || die "no shim in $shim_dir: run 'make build' (or 'make dist' for the release one)"
    if [ -S "$sock" ] && "$bin/ctr" -a "$sock" version >/dev/null 2>&1; then return; fi
    mkdir -p "$dir/root" "$dir/state" "$dir/cni/net.d" "$dir/pods"
    # One version 2 config for every containerd: 2.x converts it to version 3.
    # The CRI plugin serves the kubelet's API on the same socket.
    cat > "$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"

[debug]
  level = "debug"

[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$sandbox_image"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmpod]
      runtime_type = "io.containerd.wasmpod.v1"
      pod_annotations = ["wasmpod.dev/*"]
      container_annotations = ["wasmpod.dev/*"]
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
TOML
    # Pods get their own network namespace on a bridge of this suite's own,
    # which stop() removes; portmap publishes hostPorts with iptables rules
    # that it removes with the pod.
    cat > "$dir/cni/net.d/10-wasmpod.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "wasmpod-$suite",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$subnet"}]],
        "dataDir": "$dir/cni/ipam"
      }
    },
    {
      "type": "portmap",
      "capabilities": {"portMappings": true}
    }
  ]
}
JSON
    # containerd finds shims on its PATH: ours first, then the package's own.
    PATH="$shim_dir:$bin:$PATH" WASMPOD_CACHE_DIR="$dir/wasm-cache" \
        setsid "$bin/containerd" --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 < /dev/null &
    echo $! > "$dir/containerd.pid"
    for _ in $(seq 100); do
        if "$bin/ctr" -a "$sock" version >/dev/null 2>&1; then
            echo "containerd ($1) is up: $sock" >&2
            return
        fi
        sleep 0.1
    done
    tail -n 30 "$dir/containerd.log" >&2
    die "containerd ($1) did not start"
}

# Shims started for this containerd carry its socket in their arguments;
# the compile processes they start (a first server's optimised code, which
# outlives its pod) run in a bundle under this containerd's state.
our_shims() {
    pgrep -f -- "containerd-shim-.*-address $sock" || true
    local pid
    for pid in $(pgrep -f -- "containerd-shim-wasmpod-v1 compile " || true); do
        case "$(readlink "/proc/$pid/cwd" 2>/dev/null || true)" in
        "$dir"/*) echo "$pid" ;;
        esac
    done
}

# The CNI portmap plugin (hostPort) adds node-wide nat chains on its first
# use and never removes them; a pod's own rules go with the pod. Once no
# wasmpod-test containerd runs and no hostPort rule is left on the node,
# take the chains and the jumps to them out again.
drop_hostport_chains() {
    local other ipt rule chain
    for other in "$run_root"/*/containerd.pid; do
        # This suite's own containerd may still be on its way out.
        [ "$other" = "$dir/containerd.pid" ] && continue
        [ -f "$other" ] && kill -0 "$(cat "$other")" 2>/dev/null && return 0
    done
    for ipt in iptables ip6tables; do
        command -v "$ipt" >/dev/null || continue
        # Only `-N CNI-HOSTPORT-DNAT` itself: no pod maps a port.
        [ "$("$ipt" -t nat -S CNI-HOSTPORT-DNAT 2>/dev/null | wc -l)" = 1 ] || continue
        { "$ipt" -t nat -S 2>/dev/null | grep -E '^-A (PREROUTING|INPUT|OUTPUT|POSTROUTING) .*-j CNI-HOSTPORT-' || true; } |
            while read -r rule; do eval "\"$ipt\" -t nat -D ${rule#-A }"; done
        for chain in CNI-HOSTPORT-DNAT CNI-HOSTPORT-SETMARK CNI-HOSTPORT-MASQ; do
            "$ipt" -t nat -F "$chain" 2>/dev/null || true
            "$ipt" -t nat -X "$chain" 2>/dev/null || true
        done
    done
}

stop() {
    paths "$1"
    [ -d "$dir" ] || return 0
    if [ -S "$sock" ]; then
        for ns in $("$bin/ctr" -a "$sock" namespaces ls -q 2>/dev/null); do
            for t in $("$bin/ctr" -a "$sock" -n "$ns" tasks ls -q 2>/dev/null); do
                "$bin/ctr" -a "$sock" -n "$ns" tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
                "$bin/ctr" -a "$sock" -n "$ns" tasks rm -f "$t" >/dev/null 2>&1 || true
            done
            for c in $("$bin/ctr" -a "$sock" -n "$ns" containers ls -q 2>/dev/null); do
                "$bin/ctr" -a "$sock" -n "$ns" containers rm "$c" >/dev/null 2>&1 || true
            done
        done
    fi
    if [ -f "$dir/containerd.pid" ]; then
        local pid
        pid=$(cat "$dir/containerd.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    local leftover
    leftover=$(our_shims)
    if [ -n "$leftover" ]; then
        echo "containerd.sh: killing leftover shims: $leftover" >&2
        kill -9 $leftover 2>/dev/null || true
    fi
    # Linux containers of Wasm pods whose shim is gone: runc's state is in
    # their bundles (shim/src/linux.rs); what the shim's `delete` would do.
    local runc_state
    for runc_state in "$dir"/state/io.containerd.runtime.v2.task/*/*/runc/state; do
        [ -d "$runc_state" ] || continue
        for c in $(ls "$runc_state"); do
            runc --root "$runc_state" delete --force "$c" >/dev/null 2>&1 || true
        done
    done
    # The bridge the CNI plugin made for this suite's pods; the tests check
    # that each pod's network namespace went with its sandbox.
    ip link delete "$bridge" 2>/dev/null || true
    drop_hostport_chains
    # runc and our shim remove their containers' cgroups; the per-namespace
    # parents (cgroupsPath /NAMESPACE/ID) stay, empty. Remove those of the
    # namespaces the tests use: rmdir leaves any that still hold something.
    for ns in wasmpod-test wasmpod-artifacts bench demo; do
        rmdir /sys/fs/cgroup/*/"$ns" 2>/dev/null || true
    done
    # Snapshot and rootfs mounts under our root, deepest first.
    { grep -o " $dir/[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
    rm -rf "$dir"
    echo "containerd ($1) stopped" >&2
}

env_of() {
    paths "$1"
    echo "WASMPOD_SUITE=$1"
    echo "WASMPOD_CTR=$bin/ctr"
    echo "WASMPOD_ADDRESS=$sock"
    echo "WASMPOD_STATE=$dir/state"
    echo "WASMPOD_ROOT=$dir/root"
    echo "WASMPOD_WASM_CACHE=$dir/wasm-cache"
    echo "WASMPOD_CONTAINERD_LOG=$dir/containerd.log"
    echo "WASMPOD_PODS_DIR=$dir/pods"
    echo "WASMPOD_SANDBOX_IMAGE=$sandbox_image"
    echo "WASMPOD_BRIDGE=$bridge"
    # host-local gives the bridge the first address of the subnet.
    echo "WASMPOD_POD_GATEWAY=${subnet%.0/22}.1"
}

[ $# -eq 2 ] || die "usage: $0 fetch|start|stop|env SUITE"
case $1 in
    fetch) fetch "$2" ;;
    start) start "$2" ;;
    stop) stop "$2" ;;
    env) env_of "$2" ;;
    *) die "unknown command $1" ;;
esac
