"""The runner: one record per input line whatever happens, micro-batch parity, .npy, resume
after kill -9, and S3 faults (retried when transient, a clear failure when not)."""

from __future__ import annotations

import http.client
import io
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.exceptions import ClientError, ResponseStreamingError

from batch import failures, loading, reader, runner
from batch import job as batch_job
from batch.aws import client
from batch.jobs import SUBMITTED
from batch.keys import parse_key
from batch.reader import S3Object
from tests.batch.conftest import FEATURES, MODEL, Cloud, expected, request_line, runner_env

RNG = np.random.default_rng(7)


def settings(cloud: Cloud, models_dir: Path, key: str, version: str,
             **overrides: Any) -> batch_job.JobConfig:
    """The runner's settings for the uploaded `key`; its job item is written `submitted`, as
    the trigger leaves it (the runner's writes need the item: a missing one means erased)."""
    obj = parse_key(cloud.bucket, key, version)
    values: dict[str, Any] = {"bucket": cloud.bucket, "key": key, "version_id": version,
                              "job_id": obj.job_id, "models_dir": models_dir,
                              "table": cloud.table, "progress_seconds": 0.0, **overrides}
    if values["table"]:
        cloud.store.create({"job_id": obj.job_id, "model": obj.model, "status": SUBMITTED})
    return batch_job.JobConfig(**values)


def upload_lines(cloud: Cloud, lines: list[str], name: str = "rows", model: str = MODEL
                 ) -> tuple[str, str]:
    key = f"batch/input/{model}/{name}.jsonl"
    return key, cloud.put(key, ("\n".join(lines) + "\n").encode())


def output_records(cloud: Cloud, job: batch_job.JobConfig) -> list[dict[str, Any]]:
    """The records of the parts the completion marker lists, in order."""
    prefix = parse_key(job.bucket, job.key, job.version_id).output_prefix
    marker = json.loads(cloud.text(prefix + "_SUCCESS.json"))
    text = "".join(cloud.text(prefix + part) for part in marker["parts"])
    return [json.loads(line) for line in text.splitlines()]


def mixed_lines() -> tuple[list[str], dict[int, str]]:
    """Valid requests of 1 to 3 rows, with bad lines among them: {line number: error text}."""
    lines, bad = [], {}
    for n in range(40):
        lines.append(request_line(f"r{n}", RNG.normal(size=(1 + n % 3, FEATURES))))
    bad_lines = {
        5: ("{not json", "JSON"),
        11: (request_line("short", RNG.normal(size=(1, FEATURES - 1))), "shape"),
        17: ("", "empty line"),
        23: (json.dumps({"id": "noinputs"}), "inputs"),
        29: (json.dumps({"id": "wrongname", "inputs": [
            {"name": "pixels", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}),
            "pixels"),
    }
    for position, (line, error) in bad_lines.items():
        lines.insert(position, line)
        bad[position + 1] = error
    return lines, bad


def check_answer(record: dict[str, Any], line: str) -> None:
    request = json.loads(line)
    rows = np.array(request["inputs"][0]["data"], dtype=np.float32).reshape(
        request["inputs"][0]["shape"])
    labels, probabilities = expected(rows)
    outputs = {o["name"]: o for o in record["outputs"]}
    assert record["id"] == request["id"] and record["model_name"] == MODEL
    assert outputs["label"]["data"] == labels.tolist()
    np.testing.assert_allclose(outputs["probabilities"]["data"], probabilities.ravel(),
                               rtol=1e-5, atol=1e-6)


def test_every_line_gets_exactly_one_record_in_input_order(cloud: Cloud, models_dir: Path) -> None:
    lines, bad = mixed_lines()
    key, version = upload_lines(cloud, lines)
    job = settings(cloud, models_dir, key, version, chunk_rows=7, batch_rows=5)
    summary = batch_job.run_job(job)
    records = output_records(cloud, job)
    assert len(records) == len(lines)
    for number, (line, answer) in enumerate(zip(lines, records, strict=True), start=1):
        if number in bad:
            assert answer["line"] == number and bad[number] in answer["error"], answer
        else:
            check_answer(answer, line)
    assert summary["parts"] == [f"part-{i:05d}.jsonl" for i in range(-(-len(lines) // 7))]
    counts = {"rows_read": len(lines), "outputs_written": len(lines) - len(bad),
              "errors": len(bad)}
    assert {k: summary[k] for k in counts} == counts
    record = cloud.store.get(job.job_id)
    assert record is not None and record["status"] == "succeeded"
    assert {k: record[k] for k in counts} == counts and record["attempts"] == 1


def test_micro_batches_answer_as_single_requests_do(cloud: Cloud, models_dir: Path) -> None:
    lines = [request_line(f"r{n}", RNG.normal(size=(1 + n % 4, FEATURES))) for n in range(60)]
    # Requests that name one output form a group of their own and still get just that output.
    lines[10] = request_line("only-label", RNG.normal(size=(2, FEATURES)),
                             outputs=[{"name": "label"}])
    key, version = upload_lines(cloud, lines)
    single = settings(cloud, models_dir, key, version, batch_rows=1)
    batch_job.run_job(single)
    alone = output_records(cloud, single)
    version2 = cloud.put(key, ("\n".join(lines) + "\n").encode())
    batched = settings(cloud, models_dir, key, version2, batch_rows=64)
    batch_job.run_job(batched)
    together = output_records(cloud, batched)
    assert [r["id"] for r in alone] == [r["id"] for r in together]
    for a, b in zip(alone, together, strict=True):
        assert [o["name"] for o in a["outputs"]] == [o["name"] for o in b["outputs"]]
        for x, y in zip(a["outputs"], b["outputs"], strict=True):
            assert x["shape"] == y["shape"]
            np.testing.assert_allclose(x["data"], y["data"], rtol=1e-6, atol=1e-7)
    assert [o["name"] for o in together[10]["outputs"]] == ["label"]


def test_an_unknown_model_gives_an_error_record_per_line_and_fails_the_job(
        cloud: Cloud, models_dir: Path) -> None:
    lines = [request_line(f"r{n}", RNG.normal(size=(1, FEATURES))) for n in range(5)]
    key, version = upload_lines(cloud, lines, model="no-such-model")
    job = settings(cloud, models_dir, key, version)
    with pytest.raises(failures.PermanentError, match="unknown model"):
        batch_job.run_job(job)
    records = output_records(cloud, job)
    assert [(r["id"], r["line"]) for r in records] == [(f"r{n}", n + 1) for n in range(5)]
    assert all("unknown model" in r["error"] for r in records)
    record = cloud.store.get(job.job_id)
    assert record is not None and record["status"] == "failed"
    assert "unknown model" in record["reason"] and record["errors"] == 5


def test_npy_in_gives_one_npy_out_per_model_output(cloud: Cloud, models_dir: Path) -> None:
    rows = RNG.normal(size=(23, FEATURES))  # float64: cast to the model's FP32
    buffer = io.BytesIO()
    np.save(buffer, rows)
    key = f"batch/input/{MODEL}/tensor.npy"
    job = settings(cloud, models_dir, key, cloud.put(key, buffer.getvalue()), chunk_rows=5,
                   batch_rows=2)
    summary = batch_job.run_job(job)
    assert summary["outputs"] == {"label": [23], "probabilities": [23, 2]}
    prefix = parse_key(job.bucket, key, job.version_id).output_prefix
    s3 = client("s3")

    def load(name: str) -> np.ndarray:
        body = s3.get_object(Bucket=cloud.bucket, Key=f"{prefix}{name}.npy")["Body"].read()
        return np.load(io.BytesIO(body))

    labels, probabilities = expected(rows)
    np.testing.assert_array_equal(load("label"), labels)
    np.testing.assert_allclose(load("probabilities"), probabilities, rtol=1e-5, atol=1e-6)
    assert summary["rows_read"] == 23 and summary["outputs_written"] == 23


def test_npy_rows_of_the_wrong_shape_fail_the_job_permanently(cloud: Cloud,
                                                              models_dir: Path) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((4, FEATURES + 1), dtype=np.float32))
    key = f"batch/input/{MODEL}/wide.npy"
    job = settings(cloud, models_dir, key, cloud.put(key, buffer.getvalue()))
    with pytest.raises(failures.PermanentError, match="rows have shape") as failure:
        batch_job.run_job(job)
    assert not failures.is_transient(failure.value)
    record = cloud.store.get(job.job_id)
    assert record is not None and record["status"] == "failed" and "shape" in record["reason"]


@pytest.mark.parametrize("chunking", [("--chunk-rows", "150"), ("--chunk-bytes", "20000")],
                         ids=["rows", "bytes"])
def test_a_job_killed_midway_resumes_and_writes_each_record_once(
        cloud: Cloud, models_dir: Path, chunking: tuple[str, str]) -> None:
    count = 12_000
    lines = [request_line(f"r{n}", RNG.normal(size=(1, FEATURES))) for n in range(count)]
    key, version = upload_lines(cloud, lines, name="big")
    job = settings(cloud, models_dir, key, version)
    prefix = parse_key(job.bucket, key, version).output_prefix
    command = [sys.executable, "-m", "batch.runner", "--bucket", job.bucket, "--key", key,
               "--version-id", version, "--job-id", job.job_id, *chunking,
               "--progress-seconds", "0.2"]
    env = runner_env(cloud, models_dir)
    # Given a runner killed with SIGKILL after a few chunks
    first = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    done = wait_for(lambda: checkpoint_chunks(cloud, prefix) >= 4, first)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert done and first.returncode == -signal.SIGKILL
    reached = checkpoint_chunks(cloud, prefix)
    # When the job is retried
    retried_at = time.time()
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    # Then it resumed where the checkpoint was, and every line has exactly one record
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resuming job {job.job_id} at chunk {reached}" in second.stderr
    assert "rows/s=" in second.stderr and "eta=" in second.stderr
    records = output_records(cloud, job)
    assert [r["id"] for r in records] == [f"r{n}" for n in range(count)]
    parts = json.loads(cloud.text(prefix + "_SUCCESS.json"))["parts"]
    assert reached < len(parts) > 50, "the runner finished before it could be killed"
    record = cloud.store.get(job.job_id)
    assert record is not None and record["status"] == "succeeded"
    assert record["attempts"] == 2 and record["rows_read"] == count
    assert float(record["started_at"]) < retried_at  # the first attempt's start, kept


def checkpoint_chunks(cloud: Cloud, prefix: str) -> int:
    try:
        return int(json.loads(cloud.text(prefix + "_checkpoint.json"))["next_chunk"])
    except ClientError:
        return 0


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[str],
             timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            return True
        time.sleep(0.02)
    return False


# ---------------------------------------------------------------------------- S3 faults

class Faults:
    """A botocore before-send hook: answers 503 SlowDown instead of sending, as S3 does when
    throttling, for the operations and number of times asked."""

    BODY = (b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate."
            b"</Message></Error>")

    def __init__(self, times: int, key_contains: str = "") -> None:
        self.times, self.key_contains, self.injected = times, key_contains, 0

    def __call__(self, request: Any, **_: Any) -> AWSResponse | None:
        if self.injected >= self.times or self.key_contains not in request.url:
            return None
        self.injected += 1
        raw = type("Raw", (), {"stream": lambda _self: iter([self.BODY])})()
        headers = HTTPHeaders.from_dict({"Content-Type": "application/xml"})
        return AWSResponse(request.url, 503, headers, raw)


def faulty_s3(faults: Faults, operations: tuple[str, ...]) -> Any:
    s3 = client("s3")
    for operation in operations:
        s3.meta.events.register(f"before-send.s3.{operation}", faults)
    return s3


def test_transient_s3_faults_are_retried(cloud: Cloud, models_dir: Path) -> None:
    lines = [request_line(f"r{n}", RNG.normal(size=(1, FEATURES))) for n in range(30)]
    key, version = upload_lines(cloud, lines)
    job = settings(cloud, models_dir, key, version, chunk_rows=10)
    s3 = client("s3")
    throttled: list[str] = []

    def once_per_url(request: Any, **kwargs: Any) -> AWSResponse | None:
        """The first attempt at each object is throttled; botocore's retry gets it through."""
        if request.url in throttled:
            return None
        throttled.append(request.url)
        return Faults(times=1)(request, **kwargs)

    for operation in ("HeadObject", "GetObject", "PutObject"):
        s3.meta.events.register(f"before-send.s3.{operation}", once_per_url)
    summary = batch_job.run_job(job, s3=s3)
    throttled_keys = {url.split("?")[0].rsplit("/", 1)[-1] for url in throttled}
    assert {"rows.jsonl", "part-00000.jsonl", "_checkpoint.json", "_SUCCESS.json"} <= throttled_keys
    assert summary["rows_read"] == 30
    assert [r["id"] for r in output_records(cloud, job)] == [f"r{n}" for n in range(30)]


def test_persistent_s3_faults_fail_the_attempt_with_the_reason_and_a_retry_resumes(
        cloud: Cloud, models_dir: Path) -> None:
    lines = [request_line(f"r{n}", RNG.normal(size=(1, FEATURES))) for n in range(30)]
    key, version = upload_lines(cloud, lines)
    job = settings(cloud, models_dir, key, version, chunk_rows=10)
    faults = Faults(times=1_000, key_contains="part-00001")
    with pytest.raises(ClientError, match="SlowDown"):
        batch_job.run_job(job, s3=faulty_s3(faults, ("PutObject",)))
    assert faults.injected == 3  # AWS_MAX_ATTEMPTS
    record = cloud.store.get(job.job_id)
    # The fault is transient: not final (Batch retries it, or batch.state records it gave up)
    assert record is not None and record["status"] == "running" and record["rows_read"] == 10
    assert "to be retried" in record["reason"] and "SlowDown" in record["reason"]
    # A retry once S3 is well again redoes chunk 1 and still writes each record once.
    batch_job.run_job(job)
    assert [r["id"] for r in output_records(cloud, job)] == [f"r{n}" for n in range(30)]
    record = cloud.store.get(job.job_id)
    assert record is not None and record["status"] == "succeeded" and "reason" not in record


def test_a_chunk_written_but_not_checkpointed_is_redone_not_appended(
        cloud: Cloud, models_dir: Path) -> None:
    lines = [request_line(f"r{n}", RNG.normal(size=(1, FEATURES))) for n in range(25)]
    key, version = upload_lines(cloud, lines)
    job = settings(cloud, models_dir, key, version, chunk_rows=10)
    # The checkpoint after chunk 1 never lands: part-00001 exists, the checkpoint says chunk 1.
    faults = Faults(times=1_000)
    s3 = client("s3")
    puts = {"n": 0}

    def second_checkpoint_fails(request: Any, **kwargs: Any) -> AWSResponse | None:
        if "_checkpoint.json" in request.url:
            puts["n"] += 1
            if puts["n"] > 1:
                return faults(request, **kwargs)
        return None

    s3.meta.events.register("before-send.s3.PutObject", second_checkpoint_fails)
    with pytest.raises(ClientError):
        batch_job.run_job(job, s3=s3)
    batch_job.run_job(job)
    assert [r["id"] for r in output_records(cloud, job)] == [f"r{n}" for n in range(25)]


def test_cuda_is_asked_for_only_when_this_onnxruntime_has_it() -> None:
    import onnxruntime as ort

    providers = loading.choose_providers(use_gpu=True)
    assert providers[-1] == "CPUExecutionProvider"
    assert ("CUDAExecutionProvider" in providers) == (
        "CUDAExecutionProvider" in ort.get_available_providers())
    assert loading.choose_providers(use_gpu=False) == ["CPUExecutionProvider"]


def test_cuda_libraries_are_loaded_once_before_cuda_is_chosen_and_what_failed_is_a_warning(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """onnxruntime-gpu finds the CUDA and cuDNN libraries of the nvidia-* wheels only once
    onnxruntime.preload_dlls has loaded them (the image's: batch/Dockerfile; the real thing
    is tests/batch/test_batch_image_env.py, opt-in). What it prints, a library that did not
    load, is the job's log, not its stdout (the metrics' lines)."""
    calls = []

    def preload_dlls() -> None:
        calls.append(1)
        print("Failed to load libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(loading.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(loading.ort, "preload_dlls", preload_dlls, raising=False)
    loading.preload_cuda.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="batch.runner"):
            assert loading.choose_providers(use_gpu=False) == ["CPUExecutionProvider"]
            assert calls == []  # not asked for the GPU: nothing loaded
            for _ in range(2):
                assert loading.choose_providers(use_gpu=True) == ["CUDAExecutionProvider",
                                                                 "CPUExecutionProvider"]
    finally:
        loading.preload_cuda.cache_clear()
    assert calls == [1]
    assert capsys.readouterr().out == ""
    assert "loading CUDA's libraries for onnxruntime: Failed to load libcudnn.so.9" in caplog.text


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_cuda_listed_but_not_active_runs_on_the_cpu_and_says_so(
        cloud: Cloud, models_dir: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """onnxruntime-gpu whose CUDA libraries do not load lists CUDA, then runs on the CPU."""
    if "CUDAExecutionProvider" in loading.ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    monkeypatch.setattr(loading.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert loading.choose_providers(use_gpu=True) == ["CUDAExecutionProvider",
                                                     "CPUExecutionProvider"]
    lines = [request_line(f"r{n}", RNG.normal(size=(2, FEATURES))) for n in range(20)]
    key, version = upload_lines(cloud, lines)
    job = settings(cloud, models_dir, key, version)
    with caplog.at_level(logging.WARNING, logger="batch.runner"):
        summary = batch_job.run_job(job)
    assert summary["providers"] == ["CPUExecutionProvider"]
    assert "runs on the CPU: CUDA is not active" in caplog.text
    for record, line in zip(output_records(cloud, job), lines, strict=True):
        check_answer(record, line)
    # The job definition sets REQUIRE_GPU: there the same session fails the job instead.
    gpu_only = settings(cloud, models_dir, key, cloud.put(key, "\n".join(lines).encode()),
                        require_gpu=True)
    with pytest.raises(RuntimeError, match="GPU was required"):
        batch_job.run_job(gpu_only)


def test_a_required_gpu_that_is_not_active_fails_the_job(cloud: Cloud, models_dir: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    key, version = upload_lines(cloud, [request_line("a", RNG.normal(size=(1, FEATURES)))])
    job = settings(cloud, models_dir, key, version, require_gpu=True)
    with pytest.raises(RuntimeError, match="GPU was required"):
        batch_job.run_job(job)
    record = cloud.store.get(job.job_id)
    assert record is not None and "CUDA is not active" in record["reason"]


class BreakingBody:
    """A response stream that drops the connection after `limit` bytes, as a reset would."""

    def __init__(self, data: bytes, limit: int) -> None:
        self.stream, self.left = io.BytesIO(data), limit

    def read(self, size: int) -> bytes:
        if self.left <= 0:
            raise ResponseStreamingError(error="Connection reset by peer")
        block = self.stream.read(min(size, self.left))
        self.left -= len(block)
        return block

    def readinto(self, into: memoryview) -> int:
        block = self.read(len(into))
        into[:len(block)] = block
        return len(block)

    def close(self) -> None:
        self.stream.close()


def test_a_broken_stream_is_reopened_where_it_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"".join(b'{"n": %d}\n' % n for n in range(5000))
    ranges: list[str] = []

    def get(self: S3Object, byte_range: str | None = None) -> BreakingBody:
        assert byte_range is not None
        ranges.append(byte_range)
        start = int(byte_range.removeprefix("bytes=").split("-")[0])
        return BreakingBody(data[start:], limit=7_000)  # every stream breaks after 7 kB

    monkeypatch.setattr(S3Object, "get", get)
    monkeypatch.setattr(reader.time, "sleep", lambda _: None)
    source = S3Object(None, "bucket", "key", "v1")
    lines = list(reader.iter_lines(source, 0, len(data)))
    assert [json.loads(line)["n"] for line, _ in lines] == list(range(5000))
    assert lines[-1][1] == len(data) and len(ranges) > 1
    assert ranges[1] == "bytes=7000-"


def test_npy_rows_are_one_stream_reopened_where_it_broke(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    rows = np.arange(5000 * 3, dtype=np.float32).reshape(5000, 3)
    buffer = io.BytesIO()
    np.save(buffer, rows)
    data = buffer.getvalue()
    ranges: list[str] = []

    def get(self: S3Object, byte_range: str | None = None) -> BreakingBody:
        assert byte_range is not None
        ranges.append(byte_range)
        start, end = (int(b) for b in byte_range.removeprefix("bytes=").split("-"))
        return BreakingBody(data[start:end + 1], limit=7_000)  # every stream breaks at 7 kB

    monkeypatch.setattr(S3Object, "get", get)
    monkeypatch.setattr(reader.time, "sleep", lambda _: None)
    source = S3Object(None, "bucket", "key", "v1")
    layout = reader.NpyLayout(rows.shape, rows.dtype, len(data) - rows.nbytes)
    chunks = list(reader.iter_rows(source, layout, 100, 4321, 1000))
    assert [(first, stop) for first, stop, _ in chunks] == [
        (100, 1100), (1100, 2100), (2100, 3100), (3100, 4100), (4100, 4321)]
    np.testing.assert_array_equal(np.concatenate([c for _, _, c in chunks]), rows[100:4321])
    # one stream from row 100 to row 4321, reopened where each stream broke
    offset, end = layout.data_offset + 100 * 12, layout.data_offset + 4321 * 12
    assert ranges[:2] == [f"bytes={offset}-{end - 1}", f"bytes={offset + 7000}-{end - 1}"]
    assert len(ranges) == -(-(end - offset) // 7000)


class EndingBody(BreakingBody):
    """A stream that just ends after `limit` bytes, as http.client's does when the connection
    drops (`readinto` returns 0), rather than raising."""

    def readinto(self, into: memoryview) -> int:
        if self.left <= 0:
            return 0
        return super().readinto(into)


def test_npy_rows_are_received_straight_from_http_client_and_reopened_when_it_ends(
        cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = np.arange(5000 * 3, dtype=np.float32).reshape(5000, 3)
    buffer = io.BytesIO()
    np.save(buffer, rows)
    data = buffer.getvalue()
    # A real S3 answer (the fake S3's): read through the standard library's response, not
    # urllib3's copy
    version = cloud.put("batch/input/x/rows.npy", data)
    source = S3Object(client("s3"), cloud.bucket, "batch/input/x/rows.npy", version)
    body, size = source.open()
    assert isinstance(reader.received_into(body), http.client.HTTPResponse)
    layout, body = reader.open_npy(source, size, body)
    got = [chunk for _, _, chunk in reader.iter_rows(source, layout, 0, 5000, 999, body=body)]
    np.testing.assert_array_equal(np.concatenate(got), rows)
    # A stream that ends before its rows do is a dropped connection: reopened where it ended
    ranges: list[str] = []

    def get(self: S3Object, byte_range: str | None = None) -> EndingBody:
        assert byte_range is not None
        ranges.append(byte_range)
        start, end = (int(b) for b in byte_range.removeprefix("bytes=").split("-"))
        return EndingBody(data[start:end + 1], limit=7_000)

    monkeypatch.setattr(S3Object, "get", get)
    monkeypatch.setattr(reader.time, "sleep", lambda _: None)
    got = [chunk for _, _, chunk in reader.iter_rows(source, layout, 0, 5000, 999)]
    np.testing.assert_array_equal(np.concatenate(got), rows)
    assert len(ranges) == -(-rows.nbytes // 7000)
    # One that never gets past a byte gives up as botocore's own stream does: a transient
    # error (the attempt is retried), not a permanent one about the input
    monkeypatch.setattr(S3Object, "get", lambda self, byte_range=None: EndingBody(data, 0))
    with pytest.raises(ResponseStreamingError, match="ended at byte") as raised:
        list(reader.iter_rows(source, layout, 0, 5000, 999))
    assert failures.is_transient(raised.value)


def test_inputs_no_retry_can_fix_exit_2_and_the_rest_exit_1(cloud: Cloud, models_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.setenv("MODELS_DIR", str(models_dir))
    monkeypatch.setenv("JOBS_TABLE", cloud.table)
    args = ["--bucket", cloud.bucket, "--job-id", "x-000000000000"]
    assert runner.main([*args, "--key", "batch/input/bad.csv"]) == 2
    missing = f"batch/input/{MODEL}/missing.jsonl"  # S3 answers 404: no retry will find it
    missing_id = settings(cloud, models_dir, missing, "null").job_id  # its item, as triggered
    assert runner.main([*args[:2], "--key", missing, "--job-id", missing_id]) == 2
    assert cloud.store.get(missing_id)["status"] == "failed"
    key, version = upload_lines(cloud, [request_line("a", RNG.normal(size=(1, FEATURES)))])
    job_id = settings(cloud, models_dir, key, version).job_id
    assert runner.main([*args[:2], "--key", key, "--version-id", version, "--job-id", job_id,
                        "--require-gpu"]) == (0 if "CUDAExecutionProvider" in
                                              loading.ort.get_available_providers() else 1)
