#!/usr/bin/env bash
# Fuzzes what wasmpod reads from outside (fuzz/fuzz_targets/), each target
# for a bounded time, two at a time (one per core):
#
#   test/fuzz.sh [SECONDS] [TARGET...]     (default: 60 s each, every target)
#
# The targets are built with libFuzzer's coverage instrumentation on stable
# rustc (test/fuzz-rustc.sh), with debug assertions and overflow checks on
# in the code under test. Each target runs in a network namespace of its
# own: socket grants may name hosts, and their lookups must not leave.
# The corpus a run grows is kept in $WASMPOD_CACHE_ROOT/fuzz/corpus/TARGET,
# seeded from fuzz/seeds/TARGET, so later runs start where earlier ones got.
# A crash fails the run; its input is kept in
# $WASMPOD_CACHE_ROOT/fuzz/crashes/TARGET/ and shown, and it replays with
# `$CARGO_TARGET_DIR/quick/TARGET FILE`. Each crash gets a regression test.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/paths.sh"
seconds=${1:-60}
[ $# -eq 0 ] || shift
[ $# -gt 0 ] || set -- $(sed -n 's/^name = "\(.*\)"$/\1/p' "$root/fuzz/Cargo.toml" | grep -v '^wasmpod-fuzz$')
case $seconds in
    ''|*[!0-9]*) echo "fuzz.sh: SECONDS must be a number, not '$seconds'" >&2; exit 2 ;;
esac

# Only the code under test and the targets get other flags than the quick
# build's, so their objects sit apart from it and it rebuilds nothing after.
# The workspace's features, as make build resolves them, so that the
# dependencies are make build's (those only tests pull in aside).
checks=()
for package in wasmpod-fuzz wasmpod-oci containerd-shim-wasmpod; do
    checks+=(--config "profile.quick.package.$package.debug-assertions=true"
        --config "profile.quick.package.$package.overflow-checks=true")
done
bins=()
for target in "$@"; do bins+=(--bin "$target"); done
RUSTC_WORKSPACE_WRAPPER=$here/fuzz-rustc.sh cargo build --profile quick --locked \
    --workspace --features "$WASMPOD_TEST_FEATURES" "${bins[@]}" "${checks[@]}"

work=$WASMPOD_CACHE_ROOT/fuzz
logs=$(mktemp -d /tmp/wasmpod-fuzz.XXXXXX)
trap 'rm -rf "$logs"' EXIT

run() { # target
    local target=$1 corpus=$work/corpus/$1 crashes=$work/crashes/$1
    mkdir -p "$corpus" "$crashes"
    # The kinds of header wasm_kind tells apart, written here: no binaries
    # are kept in the tree.
    if [ "$target" = wasm_kind ] && [ -z "$(ls -A "$corpus")" ]; then
        printf '\0asm\1\0\0\0' >"$corpus/module"
        printf '\0asm\r\0\1\0' >"$corpus/component"
        printf '\177ELF\2\1\1\0' >"$corpus/elf"
    fi
    local seeds=()
    [ -d "$root/fuzz/seeds/$target" ] && seeds=("$root/fuzz/seeds/$target")
    unshare --net -- "$CARGO_TARGET_DIR/quick/$target" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
        -print_final_stats=1 -artifact_prefix="$crashes/" "$corpus" "${seeds[@]}" \
        >"$logs/$target" 2>&1
}

report() { # target, status
    local target=$1 status=$2 log=$logs/$1
    # An uninstrumented binary fuzzes blind; libFuzzer then finds no counters.
    if ! grep -q 'inline 8-bit counters' "$log"; then
        echo "fuzz.sh: $target ran without coverage instrumentation" >&2
        tail -n 20 "$log" >&2
        return 1
    fi
    if [ "$status" != 0 ]; then
        echo "== fuzz $target: FAILED (status $status)" >&2
        grep -v '^#[0-9]' "$log" | tail -n 40 >&2
        local input
        input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        if [ -n "$input" ]; then
            echo "input ($input), replay with: $CARGO_TARGET_DIR/quick/$target $input" >&2
            od -c "$input" | head -n 20 >&2
        fi
        return 1
    fi
    local runs rate cov corpus
    runs=$(sed -n 's/^stat::number_of_executed_units: //p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: //p' "$log")
    cov=$(sed -n 's/^#[0-9]*[[:space:]]*DONE[[:space:]]*cov: \([0-9]*\) ft: \([0-9]*\) corp: \([^ ]*\).*/cov \1, features \2, corpus \3/p' "$log")
    echo "== fuzz $target: $runs inputs in $seconds s ($rate/s), no crash; $cov"
}

failed=0
targets=("$@")
for ((i = 0; i < ${#targets[@]}; i += 2)); do
    pair=("${targets[@]:i:2}")
    pids=()
    for target in "${pair[@]}"; do
        run "$target" &
        pids+=($!)
    done
    for j in "${!pair[@]}"; do
        status=0
        wait "${pids[$j]}" || status=$?
        report "${pair[$j]}" "$status" || failed=1
    done
done
exit "$failed"
