#!/usr/bin/env bash
# tools/step.sh LABEL COMMAND [ARGS...]: one set-up step of the Makefile, said before it starts and
# timed when it ends, so that a first `make serve` / `make test` (several minutes) shows progress.
label=$1
shift
printf '==> %s ...\n' "$label"
started=$(date +%s)
"$@"
status=$?
elapsed=$(( $(date +%s) - started ))
if [ "$status" -eq 0 ]; then
    printf '    %s: done in %d s\n' "$label" "$elapsed"
else
    printf '    %s: FAILED (exit status %d) after %d s\n' "$label" "$status" "$elapsed"
fi
exit "$status"
