"""`python -m local_api serve` on a tiny template, over real HTTP on 127.0.0.1: events reach
the handler as API Gateway sends them, answers come back as API Gateway returns them, and
API Gateway's and Lambda's limits give the deployed API's answers."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.local_api.conftest import Server, start_server


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
    assert response.json() == {"error": f"No such route: {method} /test{path}"}


def test_the_404_of_a_path_sent_with_raw_quotes_is_still_json(server: Server) -> None:
    """$context.path lands in a JSON string: what a client sends unencoded is encoded there."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b'GET /no"such\\route HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404"), answer
    assert json.loads(body) == {"error": "No such route: GET /test/no%22such%5Croute"}


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
def test_function_failures_are_the_templates_502(server: Server, params: dict[str, str]) -> None:
    response = server.client.get("/echo", params=params)
    assert response.status_code == 502 and response.json() == {"error": "The function failed"}


def test_a_handler_that_cannot_be_imported_is_a_502_every_time(server: Server) -> None:
    for _ in range(2):  # Lambda retries the init on the next call: it fails again
        response = server.client.get("/broken")
        assert response.status_code == 502 and response.json() == {"error": "The function failed"}


def test_timeout_kills_the_worker_and_the_next_call_is_a_cold_start(server: Server) -> None:
    # Calls one after another reuse the most recently freed worker: this one times out.
    timed_out = echo(server)["pid"]
    assert server.client.get("/echo", params={"sleep": "2.5"}).status_code == 502
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
