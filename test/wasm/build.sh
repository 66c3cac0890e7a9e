#!/usr/bin/env bash
# Builds every test program from source and packs them into OCI image archives.
#
#   test/wasm/build.sh OUT_DIR
#
# C programs -> WASI preview 1 modules (Debian clang + wasi-libc) -> preview 2
# components (wit-component + the preview 1 adapter, via wasmpod-fixtures);
# Python -> a wasi:cli component (componentize-py from PyPI). Nothing built
# here is committed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
. "$top/test/paths.sh"
out=${1:?usage: build.sh OUT_DIR}
mkdir -p "$out" && out=$(cd "$out" && pwd)
fixtures=$WASMPOD_BIN/wasmpod-fixtures
venv=$WASMPOD_VENV
componentize_py_version=0.25.1
mkdir -p "$out/rootfs"
root=$out/rootfs

# Rebuild only what its inputs changed since. OUT_DIR is shared by every
# checkout on the machine (test/paths.sh), where a file's age says nothing,
# so each output's stamp (under .stamps) holds the sha256 of what it was
# built from: `stale OUT INPUT...` before building it, `built OUT` after.
stamp() { echo "$out/.stamps/${1#"$out"/}"; }
stale() {
    local target=$1; shift
    inputs_sum=$(find "$@" -type f -print0 | sort -z | xargs -0 sha256sum | cut -d' ' -f1 | sha256sum)
    [ -e "$target" ] && [ "$(cat "$(stamp "$target")" 2>/dev/null)" = "$inputs_sum" ] && return 1
    rm -f "$(stamp "$target")"
}
built() { mkdir -p "$(dirname "$(stamp "$1")")" && echo "$inputs_sum" > "$(stamp "$1")"; }

for src in "$here"/c/*.c; do
    name=$(basename "$src" .c)
    module=$root/$name.wasm
    if stale "$module" "$src"; then
        clang --target=wasm32-wasi -O2 -g0 -Wall -Werror -o "$module" "$src"
        built "$module"
    fi
    if stale "$root/$name.component.wasm" "$module" "$fixtures"; then
        "$fixtures" component "$module" "$root/$name.component.wasm"
        built "$root/$name.component.wasm"
    fi
done

# A WASI reactor (no _start), as a module and as a component of the
# fixtures' `library` world: run by its default export or by an export
# that the entrypoint names after `#`.
if stale "$root/library.wasm" "$here/reactor/library.c"; then
    clang --target=wasm32-wasi -O2 -g0 -Wall -Werror -mexec-model=reactor \
        -o "$root/library.wasm" "$here/reactor/library.c"
    built "$root/library.wasm"
fi
if stale "$root/library.component.wasm" "$root/library.wasm" "$fixtures"; then
    "$fixtures" library "$root/library.wasm" "$root/library.component.wasm"
    built "$root/library.component.wasm"
fi

# A component of about 5 MB for the pull and start benchmarks; -O0 keeps
# the code large and the build quick. Not in any test image.
if stale "$out/big.component.wasm" "$here/big.py" "$fixtures"; then
    python3 "$here/big.py" 1800 > "$out/big.c"
    clang --target=wasm32-wasi -O0 -g0 -Wall -Werror -o "$out/big.wasm" "$out/big.c"
    "$fixtures" component "$out/big.wasm" "$out/big.component.wasm"
    built "$out/big.component.wasm"
fi

if stale "$out/pause" "$here/../cri/pause.c"; then
    gcc -static -O2 -o "$out/pause" "$here/../cri/pause.c"
    built "$out/pause"
fi

if stale "$out/hello-native" "$here/c/hello.c"; then
    gcc -static -O2 -o "$out/hello-native" "$here/c/hello.c"
    built "$out/hello-native"
fi

# A native sidecar (a TCP proxy, a file writer) for the Linux containers of
# Wasm pods.
if stale "$out/sidecar" "$here/../cri/sidecar.c"; then
    gcc -static -O2 -Wall -Werror -pthread -o "$out/sidecar" "$here/../cri/sidecar.c"
    built "$out/sidecar"
fi
# The native twin of the wasi:http handler, for the CRI benchmark.
if stale "$out/http-native" "$here/../cri/http.c"; then
    gcc -static -O2 -Wall -Werror -pthread -o "$out/http-native" "$here/../cri/http.c"
    built "$out/http-native"
fi

# Python: componentize-py in a private virtualenv, WASI WIT (wasi:http and
# everything it depends on) from the wasmtime-wasi-http crate that the shim
# itself is built against.
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('componentize-py') != '$componentize_py_version')" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "componentize-py==$componentize_py_version"
fi
wasi_wit=$(cd "$top" && cargo metadata --format-version 1 --locked 2>/dev/null \
    | python3 -c 'import json,sys,os; m=json.load(sys.stdin); print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"]=="wasmtime-wasi-http"))')/wit/deps
if stale "$root/python.component.wasm" "$here/python" "$wasi_wit"; then
    rm -rf "$out/python" && mkdir -p "$out/python/wit/deps"
    cp "$here/python/app.py" "$out/python/"
    cp "$here/python/wit/world.wit" "$out/python/wit/"
    cp "$wasi_wit"/*.wit "$out/python/wit/deps/"
    (cd "$out/python" && "$venv/bin/componentize-py" -q -d wit -w command componentize app -o "$root/python.component.wasm")
    built "$root/python.component.wasm"
fi
# A wasi:http/proxy handler for the HTTP pod tests.
if stale "$root/http.component.wasm" "$here/python" "$wasi_wit"; then
    cp "$here/python/handler.py" "$out/python/"
    (cd "$out/python" && "$venv/bin/componentize-py" -q -d wit -w http componentize handler -o "$root/http.component.wasm")
    built "$root/http.component.wasm"
fi
# The wasi:sockets client and server for the socket-grant tests.
if stale "$root/net.component.wasm" "$here/python" "$wasi_wit"; then
    cp "$here/python/net.py" "$out/python/"
    (cd "$out/python" && "$venv/bin/componentize-py" -q -d wit -w command componentize net -o "$root/net.component.wasm")
    built "$root/net.component.wasm"
fi

if stale "$root/unknown-world.component.wasm" "$fixtures"; then
    "$fixtures" unknown-world "$root/unknown-world.component.wasm"
    built "$root/unknown-world.component.wasm"
fi

# Inputs that must be refused cleanly.
head -c 300 "$root/hello.component.wasm" > "$root/truncated.wasm"
printf '#!/bin/sh\necho native\n' > "$root/not-wasm.sh"
echo "hello from a file in the image" > "$root/data.txt"

# Images: every program in one test image; hello alone for the demo and the
# benchmark; the native hello and HTTP server for runc.
files=()
for f in "$root"/*; do
    mode=755; case $f in *.txt) mode=644 ;; esac
    files+=("$f=/$(basename "$f"):$mode")
done
"$fixtures" image "$out/programs.tar" docker.io/wasmpod/test-programs:latest \
    --env GREETING=hi "${files[@]}" -- /hello.component.wasm
"$fixtures" image "$out/hello.tar" docker.io/wasmpod/hello:latest \
    "$root/hello.component.wasm=/hello.wasm" -- /hello.wasm
"$fixtures" image "$out/hello-native.tar" docker.io/wasmpod/hello-native:latest \
    "$out/hello-native=/hello" -- /hello
"$fixtures" image "$out/http-native.tar" docker.io/wasmpod/http-native:latest \
    "$out/http-native=/http" -- /http
"$fixtures" image "$out/sidecar.tar" docker.io/wasmpod/sidecar:latest \
    "$out/sidecar=/sidecar" -- /sidecar
# The pod sandbox image the CRI tests' containerd is configured with.
"$fixtures" image "$out/pause.tar" wasmpod.test/pause:1 "$out/pause=/pause" -- /pause
echo "test programs and images are in $out" >&2
