#!/usr/bin/env bash
# A one-node Kubernetes made of Kubernetes' own binaries (test/k8s/build.sh),
# on 127.0.0.1 only, for wasmpod's tests:
#
#   test/k8s/cluster.sh up            etcd, kube-apiserver, kube-controller-manager,
#                                     kube-scheduler; prints the variables below
#   test/k8s/cluster.sh up SUITE      the same and a node: a containerd of Debian
#                                     SUITE's own under a supervisor that starts
#                                     it again when it exits (as systemd would),
#                                     with no wasmpod in its config, and a kubelet
#   test/k8s/cluster.sh down          stops everything `up` started and removes
#                                     what it and its pods left behind
#   test/k8s/cluster.sh env           prints the variables a test reads
#
# Everything lives under $WASMPOD_K8S_RUN (/run/wasmpod-k8s): certificates,
# etcd's data, logs (*.log), pid files, the node's containerd and kubelet.
# No kube-proxy: the service CIDR gets a blackhole route, so a connection to
# a Service fails on the node instead of leaving it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../paths.sh"
run=${WASMPOD_K8S_RUN:-/run/wasmpod-k8s}
# The version a go.mod requires of a module (on a require line or in a block).
required() { awk -v m="$2" '$1 == m { print $2 } $1 == "require" && $2 == m { print $3 }' "$here/$1/go.mod"; }
kube_version=$(required kube k8s.io/kubernetes)
etcd_version=$(required etcd go.etcd.io/etcd/server/v3)
kube_bin=$WASMPOD_K8S/kube-$kube_version
etcd_bin=$WASMPOD_K8S/etcd-$etcd_version
crictl=$WASMPOD_K8S/crictl-$(required tools sigs.k8s.io/cri-tools)/crictl
helm=$WASMPOD_K8S/helm-$(required tools helm.sh/helm/v4)/helm
metrics_server=$WASMPOD_K8S/metrics-server-$(required metrics sigs.k8s.io/metrics-server)/metrics-server
metrics_port=20443
# Ports on 127.0.0.1 that no Kubernetes default uses, so a real cluster on
# the same machine is left alone.
etcd_port=12379
api_port=16443
api=https://127.0.0.1:$api_port
service_cidr=10.96.0.0/24
node_name=wasmpod-node
node_dir=$run/node
kubelet_port=20250
# The kubelet refuses a loopback node IP: the node gets a private address
# of its own on the loopback link, where nothing outside the machine reaches.
node_ip=10.88.71.1
# The node's pods: a bridge and subnet no containerd suite of test/ uses.
node_bridge=wp-k8s
node_subnet=10.88.70.0/24
# The node's containerd pulls from the test registry (test/registry.sh).
registry=127.0.0.1:5050

die() { echo "cluster.sh: $*" >&2; exit 1; }

certs() {
    local d=$run/pki
    [ -e "$d/admin.crt" ] && return
    mkdir -p "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=wasmpod-test-ca" \
        -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
    # name, subject, extensions
    issue() {
        openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$d/$1.key" -out "$d/$1.csr" 2>/dev/null
        openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
            -days 2 -out "$d/$1.crt" -extfile <(printf '%s\n' "$3") 2>/dev/null
        rm -f "$d/$1.csr"
    }
    issue apiserver "/CN=kube-apiserver" \
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
    issue admin "/O=system:masters/CN=wasmpod-test-admin" "extendedKeyUsage=clientAuth"
    issue controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
    issue scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
    issue apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
    # The node authorizer knows a kubelet by this name and group.
    issue kubelet "/O=system:nodes/CN=system:node:$node_name" "extendedKeyUsage=clientAuth"
    # The aggregation layer's client, for metrics-server behind the API.
    issue front-proxy-client "/CN=front-proxy-client" "extendedKeyUsage=clientAuth"
    issue kubelet-serving "/CN=$node_name" "subjectAltName=IP:$node_ip,IP:127.0.0.1,DNS:$node_name"
    openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
    openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
}

kubeconfig() { # name: a kubeconfig for the client certificate of that name
    local d=$run/pki
    cat > "$run/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: wasmpod-test
  cluster: {server: "$api", certificate-authority: "$d/ca.crt"}
users:
- name: $1
  user: {client-certificate: "$d/$1.crt", client-key: "$d/$1.key"}
contexts:
- name: $1
  context: {cluster: wasmpod-test, user: $1}
current-context: $1
EOF
}

# Starts a program in the background, its output in $run/NAME.log, its pid
# in $run/NAME.pid.
spawn() {
    local name=$1; shift
    "$@" > "$run/$name.log" 2>&1 &
    echo $! > "$run/$name.pid"
}

wait_for() { # what, seconds, command...
    local what=$1 secs=$2; shift 2
    local i
    for ((i = 0; i < secs * 5; i++)); do
        if "$@" >/dev/null 2>&1; then return; fi
        sleep 0.2
    done
    die "$what did not come up within $secs s; its log: $run/$what.log"
}

up() {
    [ -x "$kube_bin/kube-apiserver" ] && [ -x "$etcd_bin/etcd" ] || "$here/build.sh" kube etcd
    if [ -e "$run/kube-apiserver.pid" ] && kill -0 "$(cat "$run/kube-apiserver.pid")" 2>/dev/null; then
        return
    fi
    mkdir -p "$run"
    certs
    local d=$run/pki
    spawn etcd "$etcd_bin/etcd" --name wasmpod-test --data-dir "$run/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
        --initial-cluster wasmpod-test=http://127.0.0.1:12380 --log-level warn
    wait_for etcd 30 curl -fsS "http://127.0.0.1:$etcd_port/health"
    # No endpoint reconciler: the kubernetes Service would point at
    # 127.0.0.1, which an EndpointSlice may not hold.
    spawn kube-apiserver "$kube_bin/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$etcd_port" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
        --endpoint-reconciler-type none \
        --service-cluster-ip-range "$service_cidr" \
        --cert-dir "$run/apiserver-certs" \
        --tls-cert-file "$d/apiserver.crt" --tls-private-key-file "$d/apiserver.key" \
        --client-ca-file "$d/ca.crt" \
        --kubelet-client-certificate "$d/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$d/apiserver-kubelet-client.key" \
        --service-account-key-file "$d/sa.pub" --service-account-signing-key-file "$d/sa.key" \
        --service-account-issuer https://kubernetes.default.svc \
        --kubelet-preferred-address-types InternalIP \
        --requestheader-client-ca-file "$d/ca.crt" --requestheader-allowed-names front-proxy-client \
        --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
        --requestheader-extra-headers-prefix X-Remote-Extra- \
        --proxy-client-cert-file "$d/front-proxy-client.crt" --proxy-client-key-file "$d/front-proxy-client.key" \
        --enable-aggregator-routing=true \
        --authorization-mode Node,RBAC --allow-privileged=true
    for name in admin controller-manager scheduler; do kubeconfig "$name"; done
    wait_for kube-apiserver 60 "$kube_bin/kubectl" --kubeconfig "$run/admin.kubeconfig" get --raw /readyz
    spawn kube-controller-manager "$kube_bin/kube-controller-manager" \
        --kubeconfig "$run/controller-manager.kubeconfig" --bind-address 127.0.0.1 --secure-port 0 \
        --service-account-private-key-file "$d/sa.key" --root-ca-file "$d/ca.crt" \
        --cluster-signing-cert-file "$d/ca.crt" --cluster-signing-key-file "$d/ca.key" \
        --service-cluster-ip-range "$service_cidr" --use-service-account-credentials \
        --controllers '*'
    spawn kube-scheduler "$kube_bin/kube-scheduler" \
        --kubeconfig "$run/scheduler.kubeconfig" --bind-address 127.0.0.1 --secure-port 0
    # Pods are refused until the service account controller has made the
    # namespace's default account.
    wait_for kube-controller-manager 60 "$kube_bin/kubectl" --kubeconfig "$run/admin.kubeconfig" \
        get serviceaccount default -n default
}

# A kubelet's node on containerd of Debian SUITE: the containerd restarted by
# a supervisor loop whenever it exits (the installer's `signal` restart),
# pulling from the test registry over plain HTTP.
node_up() {
    local suite=$1 d=$node_dir pki=$run/pki
    local bin=$WASMPOD_CACHE/containerd/$suite/usr/bin
    [ -x "$bin/containerd" ] || "$here/../containerd.sh" fetch "$suite"
    if [ -e "$d/kubelet.pid" ] && kill -0 "$(cat "$d/kubelet.pid")" 2>/dev/null; then return; fi
    [ -x "$crictl" ] || "$here/build.sh" crictl
    mkdir -p "$d/root" "$d/state" "$d/etc" "$d/run" "$d/cni" "$d/certs.d/$registry" "$d/bin" "$d/kubelet"
    # Debian's packaged defaults with this node's paths; runc by cgroupfs,
    # as the kubelet's cgroupDriver. The chart's installer adds wasmpod; its
    # pod mounts etc/ and run/ (the socket), not the kubelet's pods.
    cat > "$d/etc/config.toml" <<TOML
version = 2
root = "$d/root"
state = "$d/state"

[grpc]
  address = "$d/run/containerd.sock"

[ttrpc]
  address = "$d/run/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "wasmpod.test/pause:1"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$d/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$d/certs.d"
TOML
    cp "$d/etc/config.toml" "$d/config.toml.orig"
    echo "$suite" > "$d/suite"
    cat > "$d/certs.d/$registry/hosts.toml" <<TOML
server = "http://$registry"

[host."http://$registry"]
  capabilities = ["pull", "resolve"]
TOML
    # docker.io/wasmpod/... (the examples' and the chart's images) from the
    # test registry as a mirror, as kind's registry recipe does.
    mkdir -p "$d/certs.d/docker.io"
    cat > "$d/certs.d/docker.io/hosts.toml" <<TOML
server = "https://registry-1.docker.io"

[host."http://$registry"]
  capabilities = ["pull", "resolve"]
TOML
    cat > "$d/cni/10-wasmpod-k8s.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "wasmpod-k8s",
  "plugins": [
    {
      "type": "bridge", "bridge": "$node_bridge", "isGateway": true, "ipMasq": false,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "$node_subnet"}]], "dataDir": "$d/ipam"}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
    # $d/bin first: containerd 1.6 finds shims on its PATH only (the
    # installer's --bin-dir link).
    (
        trap 'kill "$child" 2>/dev/null; exit 0' TERM
        starts=0
        while [ ! -e "$d/stop" ] && [ "$starts" -lt 150 ]; do
            PATH="$d/bin:$bin:/usr/sbin:/usr/bin:/sbin:/bin" WASMPOD_CACHE_DIR="$d/wasm-cache" \
                "$bin/containerd" --config "$d/etc/config.toml" >> "$d/containerd.log" 2>&1 < /dev/null &
            child=$!
            echo "$child" > "$d/containerd.pid"
            starts=$((starts + 1))
            echo "$starts" > "$d/containerd.starts"
            wait "$child" || true
            sleep 1
        done
    ) > "$d/supervisor.log" 2>&1 < /dev/null &
    echo $! > "$d/supervisor.pid"
    wait_for containerd 30 "$bin/ctr" -a "$d/run/containerd.sock" version
    "$bin/ctr" -a "$d/run/containerd.sock" -n k8s.io images import "$WASMPOD_FIXTURES/pause.tar" >/dev/null
    # The pods' cgroups under a root of the node's own, which down removes.
    local h
    for h in /sys/fs/cgroup/*/; do
        [ -e "$h/cgroup.procs" ] && mkdir -p "$h/wasmpod-k8s"
    done
    ip route replace blackhole "$service_cidr"
    ip addr replace "$node_ip/32" dev lo
    cat > "$d/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 20248
containerRuntimeEndpoint: unix://$d/run/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /wasmpod-k8s
failCgroupV1: false
failSwapOn: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
resolvConf: /etc/resolv.conf
# A test machine's disk may be nearly full; nothing is evicted for it.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 40
YAML
    kubeconfig kubelet
    spawn kubelet "$kube_bin/kubelet" --config "$d/kubelet.yaml" \
        --kubeconfig "$run/kubelet.kubeconfig" --hostname-override "$node_name" \
        --node-ip "$node_ip" --root-dir "$d/kubelet" --v 1
    mv "$run/kubelet.pid" "$d/kubelet.pid"
    metrics_up
    local i
    for ((i = 0; i < 300; i++)); do
        if "$kube_bin/kubectl" --kubeconfig "$run/admin.kubeconfig" get node "$node_name" \
            -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True; then
            echo "cluster.sh: node $node_name is Ready (containerd of Debian $suite)" >&2
            return
        fi
        sleep 0.2
    done
    tail -n 40 "$run/kubelet.log" >&2
    die "node $node_name did not become Ready within 60 s; the kubelet's log: $run/kubelet.log"
}

# metrics-server as a process of the node (`kubectl top`), behind the API
# server's aggregation layer, which reaches it at the node's address: an
# APIService and a Service whose only endpoint is that address.
metrics_up() {
    [ -x "$metrics_server" ] || "$here/build.sh" metrics
    local k=("$kube_bin/kubectl" --kubeconfig "$run/admin.kubeconfig")
    spawn metrics-server "$metrics_server" --secure-port "$metrics_port" --bind-address "$node_ip" \
        --cert-dir "$node_dir/metrics-server" \
        --kubeconfig "$run/admin.kubeconfig" --authentication-kubeconfig "$run/admin.kubeconfig" \
        --authorization-kubeconfig "$run/admin.kubeconfig" \
        --kubelet-insecure-tls --kubelet-preferred-address-types InternalIP --kubelet-use-node-status-port \
        --metric-resolution 15s --kubelet-request-timeout 5s
    mv "$run/metrics-server.pid" "$node_dir/metrics-server.pid"
    "${k[@]}" apply -f - > /dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: metrics-server, namespace: kube-system}
spec:
  ports: [{name: https, port: $metrics_port, targetPort: $metrics_port}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: metrics-server, namespace: kube-system}
subsets:
  - addresses: [{ip: $node_ip}]
    ports: [{name: https, port: $metrics_port}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io}
spec:
  service: {name: metrics-server, namespace: kube-system, port: $metrics_port}
  group: metrics.k8s.io
  version: v1beta1
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
YAML
    wait_for metrics-server 60 "${k[@]}" wait apiservice v1beta1.metrics.k8s.io --for=condition=Available --timeout=1s
}

node_down() {
    local d=$node_dir pid name
    [ -d "$d" ] || return 0
    for name in metrics-server kubelet; do
        [ -e "$d/$name.pid" ] || continue
        pid=$(cat "$d/$name.pid")
        kill "$pid" 2>/dev/null && for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    done
    touch "$d/stop"
    local sock=$d/run/containerd.sock ctr
    ctr=$WASMPOD_CACHE/containerd/$(cat "$d/suite" 2>/dev/null || true)/usr/bin/ctr
    if [ -S "$sock" ] && [ -x "$ctr" ]; then
        # The CRI's pods: stop and remove them so CNI takes their networks down.
        local p
        for p in $("$crictl" --runtime-endpoint "unix://$sock" pods -q 2>/dev/null); do
            "$crictl" --runtime-endpoint "unix://$sock" stopp "$p" >/dev/null 2>&1 || true
            "$crictl" --runtime-endpoint "unix://$sock" rmp -f "$p" >/dev/null 2>&1 || true
        done
        local t
        for t in $("$ctr" -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
            "$ctr" -a "$sock" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
        done
    fi
    [ -e "$d/supervisor.pid" ] && kill "$(cat "$d/supervisor.pid")" 2>/dev/null || true
    if [ -e "$d/containerd.pid" ]; then
        pid=$(cat "$d/containerd.pid")
        kill "$pid" 2>/dev/null && for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    local shims
    shims=$(pgrep -f -- "containerd-shim-.*-address $sock" || true)
    # And the compile processes of their first servers, which outlive pods
    # and would write into the node's cache after it is gone.
    for pid in $(pgrep -f -- "containerd-shim-wasmpod-v1 compile " || true); do
        case "$(readlink "/proc/$pid/cwd" 2>/dev/null || true)" in
        "$d"/*) shims="$shims $pid" ;;
        esac
    done
    [ -z "${shims// /}" ] || kill -9 $shims 2>/dev/null || true
    ip link delete "$node_bridge" 2>/dev/null || true
    ip route del blackhole "$service_cidr" 2>/dev/null || true
    ip addr del "$node_ip/32" dev lo 2>/dev/null || true
    # Mounts under the node (kubelet volumes, snapshots, sandbox shm), deepest first.
    { grep -o " $d/[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
    # The pods' cgroups, deepest first; rmdir leaves any that still hold a process.
    find /sys/fs/cgroup/*/wasmpod-k8s -depth -type d -exec rmdir {} + 2>/dev/null || true
    rm -rf "$d"
}

env_vars() {
    echo "KUBECONFIG=$run/admin.kubeconfig"
    echo "WASMPOD_KUBE_API=$api"
    echo "WASMPOD_KUBE_CA=$run/pki/ca.crt"
    echo "WASMPOD_KUBECTL=$kube_bin/kubectl"
    echo "WASMPOD_HELM=$helm"
    echo "WASMPOD_CRICTL=$crictl"
    if [ -e "$node_dir/suite" ]; then
        echo "WASMPOD_KUBE_NODE=$node_name"
        echo "WASMPOD_KUBE_NODE_DIR=$node_dir"
        echo "WASMPOD_KUBE_NODE_CTR=$WASMPOD_CACHE/containerd/$(cat "$node_dir/suite")/usr/bin/ctr"
    fi
}

down() {
    local name pid
    node_down
    for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do
        [ -e "$run/$name.pid" ] || continue
        pid=$(cat "$run/$name.pid")
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$run/$name.pid"
    done
    rm -rf "$run"
}

case ${1:-} in
    up) up; [ -z "${2:-}" ] || node_up "$2"; env_vars ;;
    down) down ;;
    env) env_vars ;;
    *) die "usage: cluster.sh up|down|env" ;;
esac
