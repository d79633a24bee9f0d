"""`python -m local_api serve` as a child process, for programs that call the local API over real
HTTP as a user would after `make serve` (the end-to-end and hostile tests, `make bench`): a free
port on 127.0.0.1, a wait until it answers, and Ctrl-C (SIGINT) to stop it.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

HOST = "127.0.0.1"
START_TIMEOUT_S = 90
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_answering(port: int, process: subprocess.Popen[bytes], path: str,
                         timeout_s: float = START_TIMEOUT_S) -> None:
    """Until GET `path` answers 200 on 127.0.0.1:`port`; an error if `process` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server for port {port} exited with status "
                               f"{process.returncode}")
        connection = http.client.HTTPConnection(HOST, port, timeout=5)
        try:
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.2)
    raise RuntimeError(f"nothing answered GET {path} on port {port} in {timeout_s} s")


@contextmanager
def serving(template: Path, output: IO[str] | int, *,
            max_workers: int | None = None, api_key: str | None = None,
            extra: tuple[str, ...] = ()) -> Iterator[int]:
    """Serve `template` on a free port until the block ends; yields the port once
    /v2/health/live answers (with `api_key`, every keyed route needs it as x-api-key; `extra`:
    more `serve` options). The server's output goes to `output` (a file or DEVNULL)."""
    port = free_port()
    command = [sys.executable, "-m", "local_api", "serve", "--template", str(template),
               "--host", HOST, "--port", str(port)]
    if max_workers is not None:
        command += ["--max-workers", str(max_workers)]
    if api_key is not None:
        command += ["--api-key", api_key]
    command += extra
    path = os.pathsep.join(filter(None, (str(PROJECT_ROOT), os.environ.get("PYTHONPATH"))))
    server = subprocess.Popen(command, cwd=PROJECT_ROOT,
                              env={**os.environ, "PYTHONPATH": path},
                              stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until_answering(port, server, "/v2/health/live" if api_key is None else "/")
        yield port
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (ps), MB."""
    table = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,rss="], capture_output=True,
                           text=True, check=True).stdout.split("\n")
    rows = [tuple(int(v) for v in line.split()) for line in table if line.strip()]
    children: dict[int, list[int]] = {}
    for child, parent, _ in rows:
        children.setdefault(parent, []).append(child)
    rss = {p: kb for p, _, kb in rows}
    pending, total = [pid], 0
    while pending:
        current = pending.pop()
        total += rss.get(current, 0)
        pending += children.get(current, [])
    return round(total / 1024, 1)


def server_pid(port: int) -> int:
    """The pid listening on `port` (the serve process background.serving started)."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout
    return int(out.split("pid=")[1].split(",")[0])
