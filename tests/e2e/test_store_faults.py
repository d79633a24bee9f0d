"""The jobs API when its store goes away, on the local stack (docs/architecture.md, "Overload"):
the local S3 (moto: S3, DynamoDB, SQS in one process) stopped, or killed and started again
empty, while a job runs. A job request then gets a clear 503 with Retry-After within seconds,
never a 500 or API Gateway's 504 after 29 s, and /v2/health/ready names the store; a job whose
record went with the store is 404; and the stack recovers by itself once the store is back.
Also: five job creations at once, and a job of a model version that is not ready."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from local_api.background import server_pid
from local_api.batch import sample
from tests.conftest import BUILT_TEMPLATE
from tests.e2e.test_async_jobs_http import MODEL, create, upload

# A store call of the jobs API gives up after 2 x (2 s to connect + 3 s to read) at worst
# (batch.aws.api_config): well inside API Gateway's 29 s.
ANSWER_WITHIN_S = 12


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path]]:
    """A local API with its batch stack; its log is checked by each test (a runner's own
    failure may log its traceback, as it would in CloudWatch; the server and the submitter
    never)."""
    from local_api.background import serving

    assert BUILT_TEMPLATE.exists(), "run `make build` (make test does)"
    log = tmp_path_factory.mktemp("store-faults") / "server.log"
    with log.open("w") as out, serving(BUILT_TEMPLATE, out) as port:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        yield client, log
        client.close()
    output = log.read_text()
    assert "Exception in thread" not in output, output[-5000:]  # the submitter never crashes


def s3_pid(job: dict[str, Any]) -> int:
    """The local S3's process, found by the port its presigned URLs name."""
    port = urlsplit(job["upload_url"]).port
    assert port is not None
    return server_pid(port)


def timed(call: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


def assert_unavailable(answer: httpx.Response, seconds: float) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers.get("retry-after"), answer.headers
    assert set(answer.json()) == {"error"} and "jobs' stores" in answer.json()["error"]
    assert seconds < ANSWER_WITHIN_S, seconds


def test_five_job_creations_at_once(stack: tuple[httpx.Client, Path]) -> None:
    api, _ = stack
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: api.post(f"/v2/models/{MODEL}/jobs",
                                                   json={"size": 10}), range(5)))
    assert [answer.status_code for answer in answers] == [201] * 5, [a.text for a in answers]
    assert len({answer.json()["job_id"] for answer in answers}) == 5



def test_a_job_of_a_version_that_is_not_ready_is_refused_at_once(
        stack: tuple[httpx.Client, Path]) -> None:
    """diabetes-linear's model file no longer matches its manifest's sha256 (replaced, not
    edited: the build's other links keep theirs) when its function starts: it answers its
    ready route 503, and POST .../jobs says so at once instead of a 201 whose job could only
    fail. (Before any other test asks that model: its worker then stays not ready.)"""
    api, _ = stack
    built = next(BUILT_TEMPLATE.parent.glob("*/DiabetesLinearModelLayer/models/"
                                            "diabetes-linear/1/model.onnx"))
    original = built.read_bytes()
    built.unlink()
    built.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    try:
        answer, seconds = timed(lambda: api.post("/v2/models/diabetes-linear/jobs",
                                                 json={"size": 10}))
    finally:
        built.unlink()
        built.write_bytes(original)
    assert answer.status_code == 503, answer.text
    assert "is not ready" in answer.json()["error"] and "sha256" in answer.json()["error"]
    assert seconds < ANSWER_WITHIN_S
    assert api.post(f"/v2/models/{MODEL}/jobs", json={"size": 10}).status_code == 201

def test_a_stopped_store_is_a_503_in_seconds_and_the_api_recovers(
        stack: tuple[httpx.Client, Path]) -> None:
    api, _ = stack
    job = create(api, 10)
    pid = s3_pid(job)
    os.kill(pid, signal.SIGSTOP)  # it holds its connections and answers nothing
    try:
        with ThreadPoolExecutor(3) as pool:  # a creation, a status request, readiness, at once
            answers = list(pool.map(timed, [
                lambda: api.post(f"/v2/models/{MODEL}/jobs", json={"size": 10}),
                lambda: api.get(job["status_url"]),
                lambda: api.get("/v2/health/ready")]))
        for answer, seconds in answers[:2]:
            assert_unavailable(answer, seconds)
        ready, seconds = answers[2]
        assert ready.status_code == 503 and seconds < ANSWER_WITHIN_S, ready.text
        assert "the jobs table" in ready.json()["error"], ready.text  # which dependency
    finally:
        os.kill(pid, signal.SIGCONT)
    assert api.get(job["status_url"]).json()["status"] == "awaiting_upload"  # as it was
    assert api.post(f"/v2/models/{MODEL}/jobs", json={"size": 10}).status_code == 201
    ready = api.get("/v2/health/ready")  # the store is not named any more
    assert ready.status_code == 200 or "the jobs table" not in ready.json()["error"], ready.text


def test_a_store_restarted_empty_mid_job(stack: tuple[httpx.Client, Path],
                                         tmp_path: Path) -> None:
    """Killed while a job runs: the local API starts it again, empty, by itself; meanwhile a
    job request is a 503 saying why; then the lost job is 404 (never `running`), and a new
    job runs to its end."""
    api, log = stack
    path = tmp_path / "rows.jsonl"
    sample.main(["--model", MODEL, "--rows", "20000", "--out", str(path)])
    job = create(api, path.stat().st_size)
    upload(job, path)
    deadline = time.monotonic() + 60
    while api.get(job["status_url"]).json()["status"] != "running":
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    os.kill(s3_pid(job), signal.SIGKILL)
    answer, seconds = timed(lambda: api.get(job["status_url"]))
    assert answer.status_code in (503, 404), answer.text  # down, or already back and empty
    assert seconds < ANSWER_WITHIN_S
    if answer.status_code == 503:
        assert_unavailable(answer, seconds)
    deadline = time.monotonic() + 30
    while (answer := api.get(job["status_url"])).status_code != 404:
        assert answer.status_code == 503, answer.text  # never a 500, never `running`
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    assert "starting it again" in log.read_text()
    small = tmp_path / "small.jsonl"
    sample.main(["--model", MODEL, "--rows", "50", "--out", str(small)])
    again = create(api, small.stat().st_size)
    upload(again, small)
    deadline = time.monotonic() + 60
    while (record := api.get(again["status_url"]).json())["status"] not in ("succeeded",
                                                                            "failed"):
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    assert record["status"] == "succeeded", record
