#!/usr/bin/env bash
# Build a Lambda-like python3.12 image locally, for `sam local invoke` / `sam local start-api`
# where no image registry is reachable (public.ecr.aws/lambda/python cannot be pulled).
#
#   sudo tools/lambda_image.sh            # then: make invoke INVOKE_IMAGE=local/lambda-python3.12
#
# What it builds: a Debian bookworm rootfs (debootstrap), this machine's python3.12 copied to
# /var/lang (the layers hold cp312 wheels), awslambdaric + boto3 from PyPI in /var/runtime (what
# Lambda's runtime ships), and /var/runtime/bootstrap, which the emulator (aws-lambda-rie, added
# by SAM on top of this image) starts: /var/task, then /opt/python, then /var/runtime on sys.path.
# `docker import` turns the rootfs into IMAGE. The environment mirrors Lambda's (LANG=en_US.UTF-8
# with no such locale installed, TZ=:UTC, LD_LIBRARY_PATH, PATH).
#
# Needs root (debootstrap, chroot), debootstrap, docker (the CLI), Debian's mirror and PyPI.
# If no Docker engine answers, it starts dockerd in the background with its data under WORK and
# prints the DOCKER_HOST to export and how to stop it. A one-off parity check, not part of `make
# test`: each `sam local invoke` takes about 2-5 s here.
#
# Variables: IMAGE (local/lambda-python3.12), WORK (/tmp/lambda-image), PYTHON312 (found on PATH
# or in pyenv), DEBIAN_MIRROR (http://deb.debian.org/debian), REBUILD=1 to redo the rootfs.
set -euo pipefail

IMAGE="${IMAGE:-local/lambda-python3.12}"
WORK="${WORK:-/tmp/lambda-image}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ROOTFS="$WORK/rootfs"

die() { echo "lambda_image.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and chroot need it)"
command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install -y debootstrap"
command -v docker >/dev/null || die "docker not found: apt-get install -y docker.io"

if [ -z "${PYTHON312:-}" ]; then
    for p in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
        if "$p" -c '' 2>/dev/null; then PYTHON312="$(command -v "$p")"; break; fi
    done
fi
[ -n "${PYTHON312:-}" ] || die "python3.12 not found: set PYTHON312=/path/to/python3.12"
PY_PREFIX="$("$PYTHON312" -c 'import sys; print(sys.base_prefix)')"
PY_VERSION="$("$PYTHON312" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ "$PY_VERSION" = 3.12 ] || die "$PYTHON312 is python $PY_VERSION, not 3.12"

mkdir -p "$WORK"

# ---- a Docker engine: the one DOCKER_HOST (or the default socket) names, else our own dockerd.
if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null || die "no Docker engine answers and dockerd is not installed: apt-get install -y docker.io"
    export DOCKER_HOST="unix://$WORK/docker.sock"
    if ! docker info >/dev/null 2>&1; then
        echo "starting dockerd (data in $WORK/docker, log $WORK/dockerd.log)" >&2
        mkdir -p "$WORK/docker" "$WORK/exec"
        nohup dockerd --data-root "$WORK/docker" --exec-root "$WORK/exec" \
            --pidfile "$WORK/dockerd.pid" -H "$DOCKER_HOST" >"$WORK/dockerd.log" 2>&1 &
        for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
        docker info >/dev/null 2>&1 || die "dockerd did not start: see $WORK/dockerd.log"
    fi
fi

# ---- the rootfs: Debian bookworm (glibc 2.36, like the manylinux_2_34 wheels need at most).
if [ -n "${REBUILD:-}" ] || [ ! -x "$ROOTFS/var/runtime/bootstrap" ]; then
    rm -rf "$ROOTFS"
    echo "debootstrap bookworm into $ROOTFS" >&2
    debootstrap --variant=minbase \
        --include=libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,libreadline8,libncursesw6,libuuid1,libgdbm6,ca-certificates,libstdc++6,libgomp1 \
        bookworm "$ROOTFS" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || die "debootstrap failed: see $WORK/debootstrap.log"
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
        "$ROOTFS"/usr/share/doc "$ROOTFS"/usr/share/man

    # python3.12 as Lambda lays it out: /var/lang. Its own site-packages stay empty but for pip.
    mkdir -p "$ROOTFS/var/lang" "$ROOTFS/var/runtime" "$ROOTFS/var/task" "$ROOTFS/opt"
    tar -C "$PY_PREFIX" --exclude=./lib/python3.12/test --exclude='__pycache__' \
        --exclude='./lib/python3.12/site-packages/*.pth' -cf - . | tar -C "$ROOTFS/var/lang" -xf -
    ln -sf python3.12 "$ROOTFS/var/lang/bin/python"
    echo /var/lang/lib >"$ROOTFS/etc/ld.so.conf.d/lambda-python.conf"
    chroot "$ROOTFS" /sbin/ldconfig

    # The runtime's own packages: the runtime interface client and boto3 (cp312 manylinux wheels).
    "$PYTHON312" -m pip install --quiet --disable-pip-version-check --no-compile \
        --target "$ROOTFS/var/runtime" --only-binary=:all: --platform manylinux2014_x86_64 \
        --python-version 3.12 --implementation cp awslambdaric boto3 >"$WORK/pip.log" 2>&1 \
        || die "pip install awslambdaric boto3 failed: see $WORK/pip.log"

    cat >"$ROOTFS/var/runtime/bootstrap" <<'EOF'
#!/bin/sh
# Started by aws-lambda-rie: run the handler it names in _HANDLER with the runtime interface
# client; sys.path as Lambda orders it: the function's code, its layers, the runtime's packages.
export LAMBDA_TASK_ROOT="${LAMBDA_TASK_ROOT:-/var/task}"
export LAMBDA_RUNTIME_DIR=/var/runtime
export PYTHONPATH="/var/task:/opt/python/lib/python3.12/site-packages:/opt/python:/var/runtime"
cd "$LAMBDA_TASK_ROOT"
exec /var/lang/bin/python3.12 -m awslambdaric "${_HANDLER:-$AWS_LAMBDA_FUNCTION_HANDLER}"
EOF
    chmod +x "$ROOTFS/var/runtime/bootstrap"

    chroot "$ROOTFS" /var/lang/bin/python3.12 -m compileall -q -x 'site-packages|lib2to3/tests' \
        /var/lang/lib/python3.12 >/dev/null 2>&1 || true
    chroot "$ROOTFS" /var/lang/bin/python3.12 -m compileall -q /var/runtime >/dev/null 2>&1 || true
    chroot "$ROOTFS" /usr/bin/env -i PYTHONPATH=/var/runtime /var/lang/bin/python3.12 -c \
        'import ssl, ctypes, sqlite3, lzma, bz2, awslambdaric, boto3' \
        || die "python3.12 in the rootfs cannot import its modules"
fi

# ---- the image
tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/var/lang/bin:/usr/local/bin:/usr/bin:/bin:/opt/bin' \
    --change 'ENV LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib' \
    --change 'ENV LANG=en_US.UTF-8' --change 'ENV TZ=:UTC' \
    --change 'ENV LAMBDA_TASK_ROOT=/var/task' --change 'ENV LAMBDA_RUNTIME_DIR=/var/runtime' \
    --change 'WORKDIR /var/task' --change 'ENTRYPOINT ["/var/runtime/bootstrap"]' \
    - "$IMAGE" >/dev/null

echo "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1e6}'))"
echo
[ -n "${DOCKER_HOST:-}" ] && echo "export DOCKER_HOST=$DOCKER_HOST"
echo "make invoke INVOKE_IMAGE=$IMAGE FUNCTION=BreastCancerMlpFunction EVENT=events/breast-cancer-mlp/infer.json"
echo "# or: sam local invoke BreastCancerMlpFunction --event events/breast-cancer-mlp/infer.json --invoke-image $IMAGE --skip-pull-image"
if [ -f "$WORK/dockerd.pid" ] && kill -0 "$(cat "$WORK/dockerd.pid")" 2>/dev/null; then
    echo "# stop the dockerd this script started: kill $(cat "$WORK/dockerd.pid")"
fi
