"""`python -m local_api serve` on a tiny template, over real HTTP on 127.0.0.1: events reach
the handler as API Gateway sends them, answers come back as API Gateway returns them, and
API Gateway's and Lambda's limits give the deployed API's answers."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.local_api.conftest import Server, local_api, start_server, write_project


def echo(server: Server, **params: str) -> dict[str, Any]:
    response = server.client.get("/echo", params=params)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_the_handler_gets_the_event_context_and_layout_lambda_gives(server: Server) -> None:
    response = server.client.post("/echo?k=v", content=b"\x00\x01",
                                  headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 201
    assert response.headers.get_list("x-many") == ["a", "b"] and response.headers["x-one"] == "1"
    assert "x-amzn-requestid" in response.headers
    body = response.json()
    event = body["event"]
    assert event["body"] == "AAE=" and event["isBase64Encoded"] is True
    assert event["queryStringParameters"] == {"k": "v"} and event["pathParameters"] is None
    assert event["requestContext"]["path"] == "/test/echo"
    assert body["context"]["function_name"] == "EchoFunction"
    assert 0 < body["context"]["remaining_ms"] <= 2000
    assert body["shared"] == "layer two"  # the later layer wins in /opt/python
    path, env = body["sys_path"], body["env"]
    assert path[0].endswith("/code") and path[1].endswith("/EchoFunction/opt/python")
    assert not any("site-packages" in entry for entry in path)
    assert Path(env["MODELS_DIR"], "m/1/manifest.json").is_file()
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "EchoFunction" and env["_HANDLER"] == "echo.handler"


def test_path_parameters_and_the_more_specific_route(server: Server) -> None:
    item = server.client.get("/items/a%2Fb").json()["event"]
    assert item["pathParameters"] == {"id": "a/b"} and item["resource"] == "/items/{id}"
    fixed = server.client.get("/items/fixed").json()["event"]
    assert fixed["pathParameters"] is None and fixed["resource"] == "/items/fixed"


def test_the_event_path_is_percent_encoded_as_sent_and_path_parameters_decoded(
        server: Server) -> None:
    """As a REST API passes them on: the path still percent-encoded (never the decoded newline,
    and never without it, which would route a path the client never sent), parameters decoded."""
    event = server.client.get("/items/%0A1").json()["event"]
    assert event["pathParameters"] == {"id": "\n1"} and event["path"] == "/items/%0A1"
    assert event["requestContext"]["path"] == "/test/items/%0A1"  # the stage, then the path
    spaced = server.client.get("/items/a%20b").json()["event"]
    assert spaced["pathParameters"] == {"id": "a b"} and spaced["path"] == "/items/a%20b"


def test_a_binary_answer_is_decoded(server: Server) -> None:
    response = server.client.get("/echo", params={"bytes": "1000"})
    assert response.status_code == 200 and len(response.content) == 1000
    assert response.headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/nope"), ("DELETE", "/echo"), ("PROPFIND", "/echo"),
    ("GET", "/items/%0A/more"), ("GET", "/no%0Asuch%0D%00route")])  # newlines: no route either
def test_no_such_route_is_the_templates_404(server: Server, method: str, path: str) -> None:
    response = server.client.request(method, path)
    assert response.status_code == 404
    # The path as called: no stage prefix the caller never typed.
    assert response.json() == {"error": f"No such route: {method} {path}"}


def test_the_404_of_a_path_sent_with_raw_quotes_is_still_json(server: Server) -> None:
    """$context.path lands in a JSON string: what a client sends unencoded is encoded there."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b'GET /no"such\\route HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404"), answer
    assert json.loads(body) == {"error": "No such route: GET /no%22such%5Croute"}


def test_over_api_gateways_10_mb_is_413(server: Server) -> None:
    response = server.client.post("/echo", content=b"x" * (10 * 1024 * 1024 + 1))
    assert response.status_code == 413 and response.json() == {"error": "Request Too Long"}


def test_an_event_over_lambdas_6_mb_is_413(server: Server) -> None:
    response = server.client.post("/echo", content=b"x" * (5 * 1024 * 1024))  # base64: 6.7 MB
    assert response.status_code == 413


@pytest.mark.parametrize("params", [
    {"raise": "boom"},                           # handler exception
    {"exit": "3"},                               # the runtime process dies
    {"bytes": str(5 * 1024 * 1024)},             # base64 answer over Lambda's 6 MB
    {"answer": json.dumps({"body": "no statusCode"})},  # malformed proxy answer
    {"sleep": "2.5"},                            # the function's Timeout (2 s): Lambda's error
])
def test_function_failures_are_the_templates_503(server: Server, params: dict[str, str]) -> None:
    response = server.client.get("/echo", params=params)
    assert response.status_code == 503 and response.json() == {
        "error": "The function was throttled or failed"}


def test_a_handler_that_cannot_be_imported_is_a_503_every_time(server: Server) -> None:
    for _ in range(2):  # Lambda retries the init on the next call: it fails again
        response = server.client.get("/broken")
        assert response.status_code == 503 and response.json() == {
        "error": "The function was throttled or failed"}


def test_timeout_kills_the_worker_and_the_next_call_is_a_cold_start(server: Server) -> None:
    # Calls one after another reuse the most recently freed worker: this one times out.
    timed_out = echo(server)["pid"]
    assert server.client.get("/echo", params={"sleep": "2.5"}).status_code == 503
    with pytest.raises(ProcessLookupError):
        os.kill(timed_out, 0)
    assert echo(server)["pid"] != timed_out


def test_api_gateways_own_timeout_is_504(server: Server) -> None:
    # SlowFunction's Timeout is 20 s; the server's integration timeout is 3 s here (29 s default).
    started = time.monotonic()
    response = server.client.get("/slow", params={"sleep": "10"})
    assert response.status_code == 504 and time.monotonic() - started < 6
    assert response.json() == {"error": "Endpoint request timed out"}


def test_each_function_keeps_its_own_module_state(server: Server) -> None:
    answers = [server.client.get(path).text.split() for path in ("/a", "/b", "/a", "/b", "/a")]
    assert [answer[:2] for answer in answers] == [
        ["a", "1"], ["b", "1"], ["a", "2"], ["b", "2"], ["a", "3"]]
    assert answers[0][2] == answers[2][2] != answers[1][2]  # one warm worker per function


def test_concurrent_calls_run_in_parallel_workers(server: Server) -> None:
    with ThreadPoolExecutor(3) as pool:
        started = time.monotonic()
        answers = list(pool.map(lambda _: echo(server, sleep="1"), range(3)))
        elapsed = time.monotonic() - started
    assert len({answer["pid"] for answer in answers}) == 3
    assert elapsed < 2.5


def test_api_key_when_the_server_has_one(tmp_path: Path) -> None:
    running = start_server(tmp_path, "--api-key", "secret")
    try:
        missing = running.client.get("/a")
        wrong = running.client.get("/a", headers={"x-api-key": "nope"})
        good = running.client.get("/echo", headers={"x-api-key": "secret"})
    finally:
        output = running.stop(signal.SIGTERM)
    for response in (missing, wrong):  # INVALID_API_KEY falls back to DEFAULT_4XX here
        assert response.status_code == 403 and response.json() == {"error": "Forbidden"}
    assert good.status_code == 201
    assert good.json()["event"]["requestContext"]["identity"]["apiKey"] == "secret"
    # SIGTERM stops it cleanly too, and its workers with it.
    assert running.process.returncode == 0, output
    assert "Traceback" not in output and "stopping 1 EchoFunction worker(s)" in output
    assert f"Serving http://127.0.0.1:{running.port}" in output and "/items/{id}" in output


def test_the_server_survives_its_clients(server: Server) -> None:
    with httpx.Client(base_url=str(server.client.base_url), timeout=0.2) as impatient, \
            pytest.raises(httpx.ReadTimeout):
        impatient.get("/echo", params={"sleep": "1"})
    assert server.client.get("/a").status_code == 200


def test_an_early_413_reaches_a_client_that_writes_its_whole_body_first(server: Server) -> None:
    """urllib sends all 11 MB before it reads: the refusal is read, not a reset connection."""
    url = f"http://127.0.0.1:{server.port}/echo"
    for body in (b"x" * (11 * 1024 * 1024), b"x" * (5 * 1024 * 1024)):  # gateway's, Lambda's
        request = urllib.request.Request(url, data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 413
        assert json.loads(refused.value.read())["error"] == "Request Too Long"


def test_compressed_bodies_are_decoded_and_large_answers_compressed(server: Server) -> None:
    """MinimumCompressionSize (1024 in the tiny template) as API Gateway applies it."""
    zipped = server.client.post("/echo", content=gzip.compress(b"\x00\x01" * 10),
                                headers={"Content-Encoding": "gzip",
                                         "Content-Type": "application/octet-stream",
                                         "Accept-Encoding": "gzip"})
    assert zipped.status_code == 201 and zipped.headers["content-encoding"] == "gzip"
    event = zipped.json()["event"]  # the echo is far over 1 KiB
    assert base64.b64decode(event["body"]) == b"\x00\x01" * 10
    assert zipped.headers["vary"] == "Accept-Encoding"
    for accept in ("br, gzip", "identity", "*", "gzip;q=0"):  # not gzip or deflate first
        answer = server.client.get("/echo", headers={"Accept-Encoding": accept})
        assert "content-encoding" not in answer.headers, accept
        assert answer.headers["vary"] == "Accept-Encoding", accept  # it could have been
    small = server.client.get("/a", headers={"Accept-Encoding": "gzip"}).headers
    assert "content-encoding" not in small and "vary" not in small  # under 1 KiB: never
    assert server.client.get("/echo", headers={"Accept-Encoding": "deflate, gzip"}).headers[
        "content-encoding"] == "deflate"


def test_a_function_at_its_reserved_concurrency_is_throttled_not_queued(server: Server) -> None:
    """OneAtATime reserves 1: a second concurrent call is refused at once with what API
    Gateway answers when Lambda throttles (its INTEGRATION_FAILURE response: the template's
    503 with Retry-After), in one log line, and the first is served."""
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(server.client.get, "/one", params={"sleep": "1.5"})
        deadline = time.monotonic() + 10
        while "cold start: OneAtATime" not in server.log.read_text():  # the first one runs
            assert time.monotonic() < deadline, server.log.read_text()[-3000:]
            time.sleep(0.05)
        started = time.monotonic()
        throttled = server.client.get("/one")
        assert time.monotonic() - started < 1  # refused, not queued behind the first
        assert slow.result().status_code == 201
    assert throttled.status_code == 503 and throttled.headers["retry-after"] == "1"
    assert throttled.json() == {"error": "The function was throttled or failed"}
    assert server.client.get("/one").status_code == 201  # the unit came back
    refusal = [line for line in server.log.read_text().splitlines()
               if "throttled the invocation" in line]
    assert len(refusal) == 1 and '"GET /one" 503' in refusal[0], refusal  # one line, whole


def test_log_lines_of_concurrent_workers_are_whole(server: Server) -> None:
    """Four workers write 20 lines of 10 KB each at once, each line in two pieces: every
    line reaches the server's output whole, none cut by another's."""
    with ThreadPoolExecutor(4) as pool:  # four warm workers first: their lines overlap
        list(pool.map(lambda _: server.client.get("/echo", params={"sleep": "0.5"}), range(4)))
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda n: server.client.get("/echo", params={"print": str(n)}),
                                range(4)))
    assert [answer.status_code for answer in answers] == [201] * 4
    time.sleep(0.5)  # the last lines are forwarded
    lines = [line for line in server.log.read_text().splitlines() if "LINE " in line]
    pattern = re.compile(r"LINE [0-3] \d+ x{10000} END")
    assert len(lines) == 80 and all(pattern.fullmatch(line) for line in lines), \
        [line[:80] + "..." + line[-40:] for line in lines if not pattern.fullmatch(line)][:5]


def test_the_gateway_timeout_answers_504_and_the_invocation_runs_on(server: Server) -> None:
    """As in Lambda: API Gateway stops waiting (3 s here), the function is not killed; its
    worker finishes and serves the next call warm."""
    late = "ended: answered (too late for its client)"
    offset = len(server.log.read_text())
    before = server.log.read_text().count(late)
    first = server.client.get("/slow", params={"sleep": "3.5", "answer": '{"statusCode": 200}'})
    assert first.status_code == 504
    deadline = time.monotonic() + 10
    while server.log.read_text().count(late) == before:
        assert time.monotonic() < deadline, server.log.read_text()[-3000:]
        time.sleep(0.2)
    log = server.log.read_text()
    assert "Sandbox.Timedout" not in log[offset:]
    cold = log.count("cold start: SlowFunction")
    assert server.client.get("/slow", params={"answer": '{"statusCode": 200}'}).status_code == 200
    assert server.log.read_text().count("cold start: SlowFunction") == cold  # warm


def test_a_request_whose_client_has_gone_is_not_invoked(server: Server) -> None:
    before = server.log.read_text().count("cold start: CounterB")
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\npartial")
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while "not invoked (CounterB)" not in server.log.read_text():
        assert time.monotonic() < deadline, server.log.read_text()[-3000:]
        time.sleep(0.1)
    assert server.log.read_text().count("cold start: CounterB") == before


def test_idle_workers_are_reaped(tmp_path: Path) -> None:
    running = start_server(tmp_path, "--idle-timeout", "1")
    try:
        pid = running.client.get("/a").text.split()[2]
        deadline = time.monotonic() + 10
        while "reaping 1 idle CounterA worker(s)" not in running.log.read_text():
            assert time.monotonic() < deadline, running.log.read_text()
            time.sleep(0.2)
        time.sleep(0.5)
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)
        assert running.client.get("/a").text.split()[1] == "1"  # a new worker: a cold start
    finally:
        running.stop()


def test_serving_on_a_port_in_use_says_so_before_anything(tmp_path: Path) -> None:
    template = write_project(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = local_api("serve", "--template", str(template), "--port", str(port),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 2, output
    assert f"port {port} on 127.0.0.1 is in use" in output and f"PORT={port + 1}" in output
    assert "Serving" not in output and "Traceback" not in output


def test_a_burst_waits_for_this_machines_workers_and_is_served(tmp_path: Path) -> None:
    """60 clients at once with 3.5 MB each on 4 workers: at most 4 run at once and the rest
    wait for them (Lambda would have run them all: no throttle), every one is served, and the
    server never holds the waiting requests' bodies (they are read once a worker is theirs)."""
    running = start_server(tmp_path, "--max-workers", "4")
    body = b"x" * 3_500_000
    answer = json.dumps({"statusCode": 200, "body": "ok"})
    statuses: list[int] = []

    def one(_: int) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=60)
        connection.request("POST", "/echo?" + urllib.parse.urlencode(
            {"sleep": "0.1", "answer": answer}), body=body)
        return connection.getresponse().status

    try:
        with ThreadPoolExecutor(60) as pool:
            statuses = list(pool.map(one, range(60)))
        status = Path(f"/proc/{running.process.pid}/status").read_text()
        peak_mb = int(next(line for line in status.splitlines()
                           if line.startswith("VmHWM:")).split()[1]) / 1024
    finally:
        output = running.stop()
    assert statuses == [200] * 60, statuses
    assert output.count("cold start: EchoFunction") <= 4
    assert peak_mb < 400, f"the server alone peaked at {peak_mb:.0f} MB"
    print(f"burst of 60 x 3.5 MB: {statuses.count(200)} served, server peak {peak_mb:.0f} MB")


def test_a_cold_start_longer_than_the_gateway_timeout_still_warms_a_worker(
        tmp_path: Path) -> None:
    """API Gateway counts its timeout from the invocation, cold start included: the first call
    gets the 504, its cold start and invocation run on holding their worker (one here: a call
    meanwhile waits for it, past its own timeout: a 504 too), and a later call is served warm."""
    running = start_server(tmp_path, "--integration-timeout", "0.2", "--max-workers", "1")
    try:
        first = running.client.get("/echo", params={"sleep": "1"})
        assert first.status_code == 504
        assert running.client.get("/echo").status_code == 504  # the worker is still busy
        deadline = time.monotonic() + 10
        while "too late for its client" not in running.log.read_text():
            assert time.monotonic() < deadline, running.log.read_text()
            time.sleep(0.1)
        assert running.client.get("/echo").status_code == 201
    finally:
        output = running.stop()
    assert output.count("cold start: EchoFunction") == 1, output


def test_the_live_workers_are_bounded_over_every_function(tmp_path: Path) -> None:
    """With --max-live-workers 2: a third function's first call stops the idle worker that
    waited longest (memory is bounded by the workers alive, not by the functions declared);
    with both live workers busy, it waits for one to come free."""
    running = start_server(tmp_path, "--max-live-workers", "2")
    try:
        a_pid = int(running.client.get("/a").text.split()[2])
        b_pid = int(running.client.get("/b").text.split()[2])
        assert running.client.get("/echo").status_code == 201  # a third function
        deadline = time.monotonic() + 10
        while "stopping an idle CounterA worker" not in running.log.read_text():
            assert time.monotonic() < deadline, running.log.read_text()[-3000:]
            time.sleep(0.1)
        time.sleep(0.5)
        with pytest.raises(ProcessLookupError):
            os.kill(a_pid, 0)
        os.kill(b_pid, 0)  # the more recently used one is still alive
        with ThreadPoolExecutor(2) as pool:
            busy = [pool.submit(running.client.get, path, params={"sleep": "1.5"})
                    for path in ("/one", "/echo")]
            deadline = time.monotonic() + 10
            while running.log.read_text().count("cold start: OneAtATime") < 1:
                assert time.monotonic() < deadline, running.log.read_text()[-3000:]
                time.sleep(0.05)
            started = time.monotonic()
            waited = running.client.get("/a")
            elapsed = time.monotonic() - started
            assert [f.result().status_code for f in busy] == [201, 201]
        assert waited.status_code == 200 and waited.text.split()[1] == "1"  # a cold start
        assert elapsed >= 0.5  # it waited for a busy worker to come free
    finally:
        running.stop()
