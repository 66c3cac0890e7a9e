#!/usr/bin/env bash
# Runs a step and says how long it took; with WASMPOD_TIMINGS set, also adds
# "STEP<TAB>SECONDS<TAB>ok|failed" to that file, for .ci/run's summary.
#
#   test/timed.sh STEP COMMAND [ARG...]
set -uo pipefail

step=${1:?usage: timed.sh STEP COMMAND [ARG...]}
shift
start=${EPOCHREALTIME/./}
"$@"
status=$?
secs=$(( (${EPOCHREALTIME/./} - start + 500000) / 1000000 ))
result=ok
[ "$status" = 0 ] || result=failed
printf '== %s: %d s (%s)\n' "$step" "$secs" "$result" >&2
if [ -n "${WASMPOD_TIMINGS:-}" ]; then
    printf '%s\t%d\t%s\n' "$step" "$secs" "$result" >> "$WASMPOD_TIMINGS"
fi
exit "$status"
