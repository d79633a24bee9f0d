#!/usr/bin/env bash
# tools/install.sh PYTHON REQUIREMENTS: install a requirements file into the venv of PYTHON.
# With uv (the project venv's, pinned in requirements-dev.txt; UV=path names another) when there
# is one: it resolves the same versions as pip and byte-compiles as pip does, in about 30 s where
# pip takes about 150 s for requirements-dev.txt on 2 cores, its downloads in parallel. pip
# installs instead when there is no uv or it fails (uv does not read pip.conf: an index that only
# pip is configured to reach).
set -uo pipefail
python=$1
requirements=$2
uv=${UV:-"$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/uv"}
if [ -x "$uv" ]; then
    "$uv" pip install --quiet --compile-bytecode --python "$python" -r "$requirements" && exit 0
    echo "uv could not install $requirements: pip installs it instead" >&2
fi
exec "$python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
