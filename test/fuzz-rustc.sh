#!/usr/bin/env bash
# Cargo's RUSTC_WORKSPACE_WRAPPER for the fuzz build (test/fuzz.sh): the
# workspace's crates, that is the code under test and the targets, get the
# coverage instrumentation libFuzzer steers by, as cargo-fuzz adds it, on
# stable rustc. Dependencies are built by plain rustc and shared with the
# quick build. Build scripts run on the build machine and stay plain.
rustc=$1
shift
crate=
prev=
for arg in "$@"; do
    [ "$prev" = --crate-name ] && crate=$arg
    prev=$arg
done
case $crate in
    build_script_*|'') ;;
    *) set -- "$@" -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
        -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing ;;
esac
exec "$rustc" "$@"
