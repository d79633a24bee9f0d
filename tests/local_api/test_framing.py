"""HTTP/1.1 framing at the local API (local_api.http11): raw sockets on 127.0.0.1 send what a
smuggler, a broken client or a slow one sends, and each gets its answer and a closed connection,
never a second request answered from inside a body nor a connection held for ever."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_api.http11 import MAX_HEAD_BYTES, MAX_TARGET_BYTES, head_problem
from tests.local_api.conftest import Server, start_server

READ_TIMEOUT_S = 1.0
SMUGGLED = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("framing"), "--read-timeout",
                           str(READ_TIMEOUT_S))
    yield running
    output = running.stop()
    assert "Traceback" not in output, output


def exchange(server: Server, data: bytes, wait: float = 10.0) -> tuple[bytes, bool, float]:
    """Send `data`, read until the server closes (or `wait` s): (what came, closed?, seconds)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(wait)
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return received, False, time.monotonic() - started
    return received, True, time.monotonic() - started


def status_and_error(received: bytes) -> tuple[int, str]:
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)["error"]


@pytest.mark.parametrize(("name", "request_bytes", "fragment"), [
    ("content-length and chunked",
     b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n" + SMUGGLED, "both Content-Length and Transfer-Encoding"),
    ("chunked and content-length",
     b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n"
     b"0\r\n\r\n" + SMUGGLED, "both Content-Length and Transfer-Encoding"),
    ("two equal content-lengths",
     b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}"
     + SMUGGLED, "more than one Content-Length"),
    ("conflicting content-lengths",
     b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 29\r\n\r\n{}"
     + SMUGGLED, "more than one Content-Length"),
    ("a content-length list",
     b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\n{}", "more than one"),
    ("obs-fold", b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  b\r\n\r\n", "obs-fold"),
    ("chunked in HTTP/1.0",
     b"POST /echo HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     "HTTP/1.0"),
    ("invalid chunk size",
     b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
     + SMUGGLED, "invalid HTTP request"),
    ("a transfer coding other than chunked",
     b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
     "invalid HTTP request"),
])
def test_ambiguous_framing_is_400_and_the_connection_closed(server: Server, name: str,
                                                            request_bytes: bytes,
                                                            fragment: str) -> None:
    received, closed, _ = exchange(server, request_bytes)
    status, error = status_and_error(received)
    assert status == 400 and fragment in error, received
    assert closed and received.count(b"HTTP/1.1 ") == 1  # nothing smuggled was answered
    assert b"connection: close" in received.lower()


def test_well_framed_requests_still_pipeline_and_chunk(server: Server) -> None:
    chunked = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"2\r\n{}\r\n0\r\n\r\n")
    received, closed, _ = exchange(
        server, chunked + SMUGGLED + b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert closed and re.findall(rb"HTTP/1\.1 (\d{3}) ", received) == [b"201", b"200", b"200"]


@pytest.mark.parametrize("request_bytes", [
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{}",  # a short body
    b"GET /a HTTP/1.1\r\nHost: x\r\n",  # a head that never ends
])
def test_a_request_that_stops_arriving_is_408_after_the_read_timeout(server: Server,
                                                                     request_bytes: bytes
                                                                     ) -> None:
    received, closed, seconds = exchange(server, request_bytes)
    status, error = status_and_error(received)
    assert status == 408 and "stopped arriving" in error and closed
    assert READ_TIMEOUT_S <= seconds < READ_TIMEOUT_S + 3


def test_a_slow_client_that_keeps_sending_is_not_cut_off(server: Server) -> None:
    body = b'{"slow": true}'
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        for byte in body[:3]:  # three pauses of 0.6 s: more than the timeout in all
            time.sleep(READ_TIMEOUT_S * 0.6)
            sock.sendall(bytes([byte]))
        sock.sendall(body[3:])
        assert sock.makefile("rb").readline().split(b" ")[1] == b"201"


def test_a_200_kb_url_is_414_not_a_reset(server: Server) -> None:
    received, closed, _ = exchange(
        server, b"GET /a?q=" + b"x" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    status, error = status_and_error(received)
    assert status == 414 and str(MAX_TARGET_BYTES) in error and closed


def test_a_url_within_the_limit_is_served(server: Server) -> None:
    response = server.client.get("/a", params={"q": "x" * (MAX_TARGET_BYTES - 100)})
    assert response.status_code == 200


def test_a_head_over_the_limit_is_431(server: Server) -> None:
    received, closed, _ = exchange(
        server, b"GET /a HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * MAX_HEAD_BYTES + b"\r\n\r\n")
    assert status_and_error(received)[0] == 431 and closed


def test_expect_100_continue_over_the_limit_is_413_at_once(server: Server) -> None:
    received, closed, seconds = exchange(
        server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20000000\r\n"
                b"Expect: 100-continue\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in received
    assert closed and seconds < 2


def test_expect_100_continue_within_the_limit_is_invited(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                     b"Connection: close\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"{}")
        assert sock.makefile("rb").readline().split(b" ")[1] == b"201"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("upload", ["--data-binary", "-T"])
def test_curl_sending_over_the_limit_gets_413_without_uploading(server: Server, tmp_path: Path,
                                                                upload: str) -> None:
    """curl sends `Expect: 100-continue` for a large body and waits for it before it sends."""
    big = tmp_path / "big.bin"
    with big.open("wb") as out:
        out.truncate(20_000_000)  # sparse: 20 MB over API Gateway's 10 MB
    started = time.monotonic()
    result = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}", "-X", "POST",
         upload, f"@{big}" if upload == "--data-binary" else str(big), "--max-time", "20",
         f"http://127.0.0.1:{server.port}/echo"], capture_output=True, text=True, timeout=30)
    code, uploaded = result.stdout.split()
    assert code == "413" and float(uploaded) == 0, result
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(("head", "status"), [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", None),
    (b"GET / HTTP/1.1\r\nHost: x\r\n", None),  # not whole yet: h11 waits
    (b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", None),
    (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\ncontent-length: 1\r\nCONTENT-LENGTH: 1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n", 400),
    (b"GET /" + b"a" * MAX_TARGET_BYTES + b" HTTP/1.1\r\n", 414),  # before the head is whole
    (b"GET /" + b"a" * MAX_TARGET_BYTES, 414),  # before the request line is whole
    (b"GET / HTTP/1.1\r\nA: " + b"b" * MAX_HEAD_BYTES, 431),
])
def test_head_problem(head: bytes, status: int | None) -> None:
    problem = head_problem(head)
    assert (problem.status if problem else None) == status
