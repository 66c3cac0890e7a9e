#!/usr/bin/env bash
# Runs a private Distribution registry (Debian's docker-registry) on loopback
# for wasmpod's tests and benchmarks.
#
#   test/registry.sh start [NAME]   start it; prints nothing, exits when it answers
#   test/registry.sh stop [NAME]    stop it and remove its storage
#   test/registry.sh addr [NAME]    print HOST:PORT
#   test/registry.sh storage [NAME] print its storage directory (tests break it on purpose)
#
# NAME picks an instance (default "plain"): "plain" accepts anyone, "auth"
# wants user `wasmpod` with password `wasmpod` (htpasswd), so that 401s can be
# tested. Storage, config and logs live under /run/wasmpod-test/registry-NAME.
set -euo pipefail

run_root=${WASMPOD_RUN:-/run/wasmpod-test}

die() { echo "registry.sh: $*" >&2; exit 1; }

paths() {
    name=${1:-plain}
    dir=$run_root/registry-$name
    case $name in
        plain) port=${WASMPOD_REGISTRY_PORT:-5050} ;;
        auth) port=${WASMPOD_REGISTRY_AUTH_PORT:-5051} ;;
        *) die "unknown registry $name (plain or auth)" ;;
    esac
    addr=127.0.0.1:$port
}

start() {
    paths "$@"
    command -v docker-registry >/dev/null || die "docker-registry is not installed: run 'make deps'"
    if curl -fsS -o /dev/null "http://$addr/v2/" 2>/dev/null; then return; fi
    mkdir -p "$dir/storage"
    local auth=""
    if [ "$name" = auth ]; then
        command -v htpasswd >/dev/null || die "htpasswd is not installed: run 'make deps'"
        htpasswd -Bbn wasmpod wasmpod > "$dir/htpasswd"
        auth="auth:
  htpasswd:
    realm: wasmpod-test
    path: $dir/htpasswd"
    fi
    cat > "$dir/config.yml" <<YAML
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: $addr
$auth
YAML
    setsid docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 </dev/null &
    echo $! > "$dir/registry.pid"
    for _ in $(seq 100); do
        local code
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/v2/" 2>/dev/null || true)
        if [ "$code" = 200 ] || [ "$code" = 401 ]; then return; fi
        sleep 0.1
    done
    tail -n 20 "$dir/registry.log" >&2
    die "registry $name did not start on $addr"
}

stop() {
    paths "$@"
    [ -d "$dir" ] || return 0
    if [ -f "$dir/registry.pid" ]; then
        local pid
        pid=$(cat "$dir/registry.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}

case ${1:-} in
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    addr) shift; paths "$@"; echo "$addr" ;;
    storage) shift; paths "$@"; echo "$dir/storage" ;;
    *) die "usage: registry.sh start|stop|addr|storage [plain|auth]" ;;
esac
