"""One local API (`python -m local_api serve` on the built template) shared by the hostile
request tests and the fuzzer, called over real HTTP on 127.0.0.1."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import BUILT_TEMPLATE, ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def local_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A client of a local API serving every function of the built template.

    After the session the server must stop cleanly and its log must hold no traceback: a
    hostile request may be refused, never crash a worker or the server.
    """
    assert BUILT_TEMPLATE.exists(), "run `make build` (make test does)"
    port = free_port()
    log = tmp_path_factory.mktemp("hostile-local-api") / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "local_api", "serve", "--template", str(BUILT_TEMPLATE),
             "--port", str(port)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.get("/v2/health/live").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert server.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"local API did not start:\n{log.read_text()}"
        time.sleep(0.2)
    yield client
    client.close()
    server.send_signal(signal.SIGINT)
    server.wait(timeout=30)
    output = log.read_text()
    assert "Traceback" not in output, output[-5000:]


def assert_error_answer(response: httpx.Response, status: int, case: Any = "") -> None:
    """The protocol's error: the expected 4xx, and a body of exactly {"error": <non-empty str>}."""
    assert response.status_code == status, f"{case}: {response.status_code} {response.text[:500]}"
    body = response.json()
    assert set(body) == {"error"}, f"{case}: {body}"
    assert isinstance(body["error"], str) and body["error"].strip(), f"{case}: {body}"
