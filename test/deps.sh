#!/usr/bin/env bash
# Installs the Debian packages wasmpod's build, tests and demo need.
# Runs apt-get only when something is missing, so repeated runs are quick.
set -euo pipefail

packages=(
    clang lld wasi-libc libclang-rt-14-dev-wasm32  # C -> WASI preview 1 modules
    gcc libc6-dev                                   # static native baseline for make bench
    g++                                             # libFuzzer, built by libfuzzer-sys (make fuzz)
    binutils                                        # nm, readelf: test/hot-symbols.py
    protobuf-compiler                               # prost/tonic build scripts
    runc                                            # the container baseline
    python3-venv                                    # componentize-py's virtualenv
    ca-certificates                                 # pip and apt over https
    docker-registry apache2-utils curl              # a private registry (htpasswd for 401s)
    skopeo                                          # reads what `wasmpod push` wrote
    containernetworking-plugins iproute2 iptables   # pod networks (and hostPorts) for the CRI tests
    openssl                                         # the test Kubernetes' certificates (test/k8s/)
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
