#!/bin/sh
# Copy the files that batch/shipping.txt lists for TARGET (layer | image) into DEST, each at its
# path from the repository root (DEST/batch/runner.py, ...). batch/Makefile (BatchLayer) and
# batch/Dockerfile (the runner's image) both call it: what ships is decided by that one list.
set -eu
target=$1 dest=$2
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
case "$target" in layer|image) ;; *) echo "usage: $0 layer|image DEST" >&2; exit 2 ;; esac
paths=$(awk -v target="$target" \
    '!/^#/ && NF { for (i = 2; i <= NF; i++) if ($i == target) print $1 }' "$here/shipping.txt")
test -n "$paths" || { echo "$here/shipping.txt lists nothing for $target" >&2; exit 1; }
for path in $paths; do
    mkdir -p "$dest/$(dirname "$path")"
    cp "$root/$path" "$dest/$path"
done
