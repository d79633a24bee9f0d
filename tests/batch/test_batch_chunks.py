"""Chunks cut by bytes of input (the default) or rows: whole lines, boundaries pinned in the
checkpoint so that a resumed job cuts the same chunks; the settings' variables; the micro-batch
size chosen on the first rows, and halved on out-of-memory."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from batch import checkpoint, erase, jobs, microbatch, runner, writer
from batch import job as batch_job
from batch.aws import client
from batch.failures import PermanentError
from batch.keys import parse_key
from batch.microbatch import BatchSizeTuner
from tests.batch.conftest import (
    FEATURES,
    MODEL,
    WEIGHTS,
    Cloud,
    expected,
    registry,
    request_line,
    tiny_model,
)
from tests.batch.test_batch_fuzz import Killed, run_until
from tests.batch.test_batch_runner import Faults, faulty_s3, output_records, settings

# What onnxruntime raises when a run's memory cannot be allocated (batch.microbatch halves then)
OUT_OF_MEMORY = ("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for "
                 "requested buffer")
RNG = np.random.default_rng(23)


def varied_lines(count: int) -> list[str]:
    """Requests of 1 to 5 rows: lines of very different lengths."""
    return [request_line(f"r{n}", RNG.normal(size=(1 + n % 5, FEATURES))) for n in range(count)]


def byte_cuts(lines: list[str], budget: int) -> list[int]:
    """Lines per chunk when a chunk ends at the first line that brings it to `budget` bytes."""
    cuts, size, count = [], 0, 0
    for line in lines:
        size, count = size + len(line) + 1, count + 1
        if size >= budget:
            cuts.append(count)
            size, count = 0, 0
    return cuts + ([count] if count else [])


def part_lines(cloud: Cloud, job: batch_job.JobConfig) -> list[int]:
    prefix = parse_key(job.bucket, job.key, job.version_id).output_prefix
    marker = json.loads(cloud.text(prefix + "_SUCCESS.json"))
    return [len(cloud.text(prefix + part).splitlines()) for part in marker["parts"]]


def upload(cloud: Cloud, lines: list[str]) -> tuple[str, str]:
    key = f"batch/input/{MODEL}/varied.jsonl"
    return key, cloud.put(key, ("\n".join(lines) + "\n").encode())


def test_jsonl_chunks_end_on_whole_lines_at_the_byte_budget(cloud: Cloud,
                                                           models_dir: Path) -> None:
    lines = varied_lines(200)
    key, version = upload(cloud, lines)
    job = settings(cloud, models_dir, key, version, chunk_bytes=3000)
    batch_job.run_job(job)
    assert part_lines(cloud, job) == byte_cuts(lines, 3000)
    assert len(byte_cuts(lines, 3000)) > 5  # the budget cut the file mid-way, many times
    assert [r["id"] for r in output_records(cloud, job)] == [f"r{n}" for n in range(200)]
    prefix = parse_key(job.bucket, key, version).output_prefix
    pinned = json.loads(cloud.text(prefix + "_checkpoint.json"))
    assert (pinned["chunk_rows"], pinned["chunk_bytes"]) == (0, 3000)


def test_a_byte_order_mark_before_the_first_line_is_ignored(cloud: Cloud,
                                                          models_dir: Path) -> None:
    # Windows tools write a UTF-8 BOM first; RFC 8259 8.1 lets a parser ignore it. Only there:
    # the same bytes at the start of a later line are that line's error
    lines = varied_lines(30)
    key = f"batch/input/{MODEL}/bom.jsonl"
    body = "\ufeff" + "\n".join(lines[:20]) + "\n\ufeff" + "\n".join(lines[20:]) + "\n"
    job = settings(cloud, models_dir, key, cloud.put(key, body.encode()), chunk_bytes=500)
    batch_job.run_job(job)
    records = output_records(cloud, job)
    assert [r.get("id") for r in records[:20]] == [f"r{n}" for n in range(20)]
    assert records[20]["line"] == 21 and "error" in records[20]
    assert [r.get("id") for r in records[21:]] == [f"r{n}" for n in range(21, 30)]


def test_a_row_limit_ends_a_chunk_before_the_byte_budget(cloud: Cloud, models_dir: Path) -> None:
    lines = varied_lines(50)
    key, version = upload(cloud, lines)
    job = settings(cloud, models_dir, key, version, chunk_rows=7, chunk_bytes=1 << 20)
    batch_job.run_job(job)
    assert part_lines(cloud, job) == [7] * 7 + [1]


def test_a_resumed_job_cuts_the_chunks_pinned_in_its_checkpoint(cloud: Cloud,
                                                                models_dir: Path) -> None:
    lines = varied_lines(200)
    key, version = upload(cloud, lines)
    job = settings(cloud, models_dir, key, version, chunk_bytes=3000)
    # Given a job that dies writing its third part (S3 failing past its retries)
    with pytest.raises(ClientError, match="SlowDown"):
        batch_job.run_job(job, s3=faulty_s3(Faults(times=1_000, key_contains="part-00002"),
                                         ("PutObject",)))
    # When it is retried with other chunk settings
    retry = settings(cloud, models_dir, key, version, chunk_rows=3, chunk_bytes=100_000)
    summary = batch_job.run_job(retry)
    # Then it kept the first attempt's cuts, and every line has exactly one record
    assert part_lines(cloud, job) == byte_cuts(lines, 3000)
    assert [r["id"] for r in output_records(cloud, job)] == [f"r{n}" for n in range(200)]
    record = cloud.store.get(job.job_id)
    assert record is not None and record["attempts"] == 2 and summary["rows_read"] == 200


def test_a_retry_serves_the_version_its_first_attempt_pinned_though_another_is_current(
        cloud: Cloud, tmp_path: Path) -> None:
    # Given a job whose first attempt served version 1, then current, and died at its third part
    models = tiny_model(tiny_model(tmp_path, "1"), "2", WEIGHTS[:, ::-1].copy(), current="1")
    key, version = upload(cloud, varied_lines(200))
    job = settings(cloud, models, key, version, chunk_bytes=3000, registry=registry(models))
    with pytest.raises(ClientError, match="SlowDown"):
        batch_job.run_job(job, s3=faulty_s3(Faults(times=1_000, key_contains="part-00002"),
                                         ("PutObject",)))
    # When version 2 becomes current (the retry's load begins with it) and the job is retried
    registry(models).write_text(json.dumps({"models": [
        {"name": MODEL, "source": "seed", "versions": ["1", "2"], "current": "2"}]}))
    summary = batch_job.run_job(job)
    # Then the retry served version 1 too: every record, the first attempt's and its own
    assert summary["model_version"] == "1"
    assert {r["model_version"] for r in output_records(cloud, job)} == {"1"}
    record = cloud.store.get(job.job_id)
    assert record is not None and record["model_version"] == "1" and record["attempts"] == 2


def npy_job(cloud: Cloud, models_dir: Path, rows: np.ndarray, **overrides: Any
            ) -> batch_job.JobConfig:
    buffer = io.BytesIO()
    np.save(buffer, rows)
    key = f"batch/input/{MODEL}/tensor.npy"
    return settings(cloud, models_dir, key, cloud.put(key, buffer.getvalue()), **overrides)


def npy_output(cloud: Cloud, job: batch_job.JobConfig, name: str) -> np.ndarray:
    prefix = parse_key(job.bucket, job.key, job.version_id).output_prefix
    return np.load(io.BytesIO(client("s3").get_object(
        Bucket=cloud.bucket, Key=f"{prefix}{name}.npy")["Body"].read()))


def uploads_in_progress(cloud: Cloud, job: batch_job.JobConfig) -> list[str]:
    """The keys of the multipart uploads in progress under the job's output prefix."""
    prefix = parse_key(job.bucket, job.key, job.version_id).output_prefix
    answer = client("s3").list_multipart_uploads(Bucket=cloud.bucket, Prefix=prefix)
    return sorted(upload["Key"].removeprefix(prefix) for upload in answer.get("Uploads", []))


def recording_s3(calls: list[tuple[str, Any]]) -> Any:
    """An S3 client that appends (operation, its Range or PartNumber) of each call to `calls`."""
    s3 = client("s3")
    s3.meta.events.register("before-parameter-build.s3", lambda model, params, **_: calls.append(
        (model.name, params.get("Range") or params.get("PartNumber"))))
    return s3


def test_npy_outputs_stream_into_one_upload_each_that_a_retry_continues(
        cloud: Cloud, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "PART_BYTES", 5 << 20)  # S3's least: 655,360 rows an output
    monkeypatch.setattr(batch_job, "ONE_PUT_BYTES", 0)  # parts, however small the files
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the faults below at once, without backoff
    rows = RNG.normal(size=(700_000, FEATURES)).astype(np.float32)  # 16 bytes a row
    job = npy_job(cloud, models_dir, rows, chunk_bytes=1 << 20, batch_rows=16_384)
    # Given a job that dies uploading the second part of its outputs (the last rows)
    with pytest.raises(ClientError, match="SlowDown"):
        batch_job.run_job(job, s3=faulty_s3(Faults(times=1_000, key_contains="partNumber=2"),
                                         ("UploadPart",)))
    prefix = parse_key(job.bucket, job.key, job.version_id).output_prefix
    saved = json.loads(client("s3").get_object(Bucket=cloud.bucket,
                                               Key=prefix + "_checkpoint.json")["Body"].read())
    assert saved["next_row"] == 655_360  # the rows of the first parts (10 chunks of 65,536)
    assert {name: len(upload["parts"]) for name, upload in saved["uploads"].items()} == {
        "label": 1, "probabilities": 1}
    assert uploads_in_progress(cloud, job) == ["label.npy", "probabilities.npy"]
    # When it is retried
    calls: list[tuple[str, Any]] = []
    summary = batch_job.run_job(job, s3=recording_s3(calls))
    # Then it continued both uploads at their second part, reading the rows from the
    # checkpoint's on, and nothing was written twice
    assert [part for name, part in calls if name == "UploadPart"] == [2, 2]
    assert "CreateMultipartUpload" not in [name for name, _ in calls]
    assert [r for name, r in calls if name == "GetObject" and r and r != "bytes=0-65535"] == [
        f"bytes={128 + 655_360 * 16}-{128 + 700_000 * 16 - 1}"]
    labels, probabilities = expected(rows)
    np.testing.assert_array_equal(npy_output(cloud, job, "label"), labels)
    np.testing.assert_allclose(npy_output(cloud, job, "probabilities"), probabilities,
                               rtol=1e-5, atol=1e-6)
    assert summary["parts"] == ["label.npy", "probabilities.npy"]
    assert summary["outputs"] == {"label": [700_000], "probabilities": [700_000, 2]}
    assert uploads_in_progress(cloud, job) == []


def test_npy_uploads_a_job_left_are_completed_or_when_gone_redone(
        cloud: Cloud, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the faults below at once, without backoff
    # Two parts of each output: the fake S3's least part lowered from 5 MiB
    monkeypatch.setattr("moto.s3.models.S3_UPLOAD_PART_MIN_SIZE", 64)
    monkeypatch.setattr(writer, "PART_BYTES", 128)
    monkeypatch.setattr(batch_job, "ONE_PUT_BYTES", 0)  # parts, however small the files
    rows = RNG.normal(size=(23, FEATURES)).astype(np.float32)
    labels, probabilities = expected(rows)
    job = npy_job(cloud, models_dir, rows, chunk_bytes=100, batch_rows=4)  # 6 rows a chunk
    # Given a job that died completing its second output (the first is an object already)
    with pytest.raises(ClientError, match="SlowDown"):
        batch_job.run_job(job, s3=faulty_s3(Faults(1_000, "probabilities.npy?uploadId"),
                                         ("CompleteMultipartUpload",)))
    assert uploads_in_progress(cloud, job) == ["probabilities.npy"]
    # When it is retried, it reads no row again: it completes the upload left, and only it
    calls: list[tuple[str, Any]] = []
    summary = batch_job.run_job(job, s3=recording_s3(calls))
    assert [name for name, _ in calls if "Multipart" in name or name == "UploadPart"] == [
        "CompleteMultipartUpload"]
    np.testing.assert_array_equal(npy_output(cloud, job, "label"), labels)
    np.testing.assert_allclose(npy_output(cloud, job, "probabilities"), probabilities,
                               rtol=1e-5, atol=1e-6)
    assert summary["rows_read"] == 23 and uploads_in_progress(cloud, job) == []
    # Given another job that died completing its outputs, whose uploads were then aborted
    # (erase.abort_uploads, as an erasure or the bucket's lifecycle rule does)
    job = npy_job(cloud, models_dir, rows, chunk_bytes=100, batch_rows=4)
    with pytest.raises(ClientError, match="SlowDown"):
        batch_job.run_job(job, s3=faulty_s3(Faults(1_000, "?uploadId"),
                                         ("CompleteMultipartUpload",)))
    prefix = parse_key(job.bucket, job.key, job.version_id).output_prefix
    assert erase.abort_uploads(client("s3"), cloud.bucket, prefix) == 2
    assert uploads_in_progress(cloud, job) == []
    # When it is retried, its rows are redone from the first, into new uploads
    summary = batch_job.run_job(job)
    np.testing.assert_array_equal(npy_output(cloud, job, "label"), labels)
    np.testing.assert_allclose(npy_output(cloud, job, "probabilities"), probabilities,
                               rtol=1e-5, atol=1e-6)
    assert summary["rows_read"] == 23 and summary["outputs"]["label"] == [23]


def test_npy_parts_without_a_kept_header_are_read_for_it(cloud: Cloud) -> None:
    # A checkpoint from before headers were kept gives None for its parts.
    parts = [np.arange(6, dtype=np.float32).reshape(3, 2), np.ones((2, 2), dtype=np.float32)]
    for n, part in enumerate(parts):
        cloud.put(f"out/part-{n}.npy", writer.npy_bytes(part))
    shape = writer.concatenate_npy(cloud.s3, cloud.bucket, ["out/part-0.npy", "out/part-1.npy"],
                                   "out/all.npy", [None, writer.npy_header(parts[1])])
    assert shape == (5, 2)
    np.testing.assert_array_equal(np.load(io.BytesIO(cloud.s3.get_object(
        Bucket=cloud.bucket, Key="out/all.npy")["Body"].read())), np.concatenate(parts))
    with pytest.raises(ValueError):  # one header (or None) per part, no fewer
        writer.concatenate_npy(cloud.s3, cloud.bucket, ["out/part-0.npy", "out/part-1.npy"],
                               "out/all.npy", [None])


def test_npy_out_of_memory_halves_the_micro_batch(cloud: Cloud, models_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from model_api.model import LoadedModel

    original = LoadedModel.run
    sizes: list[int] = []

    def small_memory(self: LoadedModel, inputs: dict[str, np.ndarray], names: Any) -> Any:
        (array,) = inputs.values()
        sizes.append(len(array))
        if len(array) > 3:
            raise RuntimeError(OUT_OF_MEMORY)
        return original(self, inputs, names)

    monkeypatch.setattr(LoadedModel, "run", small_memory)
    rows = RNG.normal(size=(20, FEATURES)).astype(np.float32)
    job = npy_job(cloud, models_dir, rows, batch_rows=16, workers=1)  # one run at a time
    batch_job.run_job(job)
    np.testing.assert_array_equal(npy_output(cloud, job, "label"), expected(rows)[0])
    assert sizes[:4] == [16, 8, 4, 2] and set(sizes[4:]) == {2}


class SlowRuns:
    """The model's runs (LoadedModel.run, patched) made at least 5 ms long, long enough to go
    side by side (SIDE_BY_SIDE_SECONDS), each recorded (its thread, rows, the session's
    intra-op threads) and the runs under way at once counted. `crowded(rows, running)`: True
    makes a run run out of memory instead (a model that fits only so much at once)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch,
                 crowded: Callable[[int, int], bool] = lambda rows, running: False) -> None:
        from model_api.model import LoadedModel

        self.original, self.crowded = LoadedModel.run, crowded
        self.seen: list[tuple[str, int, int]] = []
        self.running = self.most = 0
        self.lock = threading.Lock()
        monkeypatch.setattr(LoadedModel, "run", lambda model, inputs, names: self.run(
            model, inputs, names))

    def run(self, model: Any, inputs: dict[str, np.ndarray], names: Any) -> Any:
        rows = len(next(iter(inputs.values())))
        with self.lock:
            self.seen.append((threading.current_thread().name, rows,
                              model.session.get_session_options().intra_op_num_threads))
            self.running += 1
            self.most = max(self.most, self.running)
            crowded = self.crowded(rows, self.running)
        try:
            time.sleep(0.005)
            if crowded:
                raise RuntimeError(OUT_OF_MEMORY)
            return self.original(model, inputs, names)
        finally:
            with self.lock:
                self.running -= 1


def test_npy_micro_batches_run_side_by_side_on_one_thread_each(
        cloud: Cloud, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = SlowRuns(monkeypatch)
    rows = RNG.normal(size=(1000, FEATURES)).astype(np.float32)
    job = npy_job(cloud, models_dir, rows, batch_rows=16, workers=3)
    summary = batch_job.run_job(job)
    labels, probabilities = expected(rows)
    np.testing.assert_array_equal(npy_output(cloud, job, "label"), labels)  # in row order
    np.testing.assert_allclose(npy_output(cloud, job, "probabilities"), probabilities,
                               rtol=1e-5, atol=1e-6)
    assert summary["rows_read"] == 1000 and sum(rows for _, rows, _ in runs.seen) == 1000
    assert {threads for *_, threads in runs.seen} == {1}
    assert len({thread for thread, *_ in runs.seen}) == 3 and runs.most == 3  # three at once


def test_npy_out_of_memory_with_runs_side_by_side_redoes_their_rows(
        cloud: Cloud, models_dir: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from model_api.model import LoadedModel

    original = LoadedModel.run
    ran: list[int] = []

    def small_memory(self: LoadedModel, inputs: dict[str, np.ndarray], names: Any) -> Any:
        (array,) = inputs.values()
        if len(array) > 3:
            raise RuntimeError(OUT_OF_MEMORY)
        ran.append(len(array))
        return original(self, inputs, names)

    monkeypatch.setattr(LoadedModel, "run", small_memory)
    rows = RNG.normal(size=(50, FEATURES)).astype(np.float32)
    job = npy_job(cloud, models_dir, rows, batch_rows=16, workers=3)
    with caplog.at_level(logging.WARNING, "batch"):
        summary = batch_job.run_job(job)
    np.testing.assert_array_equal(npy_output(cloud, job, "label"), expected(rows)[0])
    # (a run beside one that ran out may have succeeded: its rows are redone all the same)
    assert summary["rows_read"] == 50 and sum(ran) >= 50
    # Halved once each time, by the first run of a size to run out, not by every one beside
    # it: 16, 8, 4 rows; or 16 then 4, where a run of 4 rows (a piece of the chunk), beside
    # two of 8, happens to run out first (the order of runs side by side is the threads')
    halved = [r.getMessage() for r in caplog.records if "out of memory" in r.getMessage()]
    sizes = [int(message.split(" with ")[1].split()[0]) for message in halved]
    assert halved == [f"out of memory with {rows} rows; micro-batches now at most {rows // 2} "
                      "rows" for rows in sizes]
    assert sizes[0] == 16 and sizes == sorted(set(sizes), reverse=True)
    assert 4 <= sizes[-1] <= 7  # the last halving is the one that makes every run fit (3 rows)


def test_npy_out_of_memory_with_one_row_beside_others_runs_one_at_a_time(
        cloud: Cloud, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A model that fits one row only while it runs alone: the job ends one run at a time
    runs = SlowRuns(monkeypatch, crowded=lambda rows, running: rows > 1 or running > 1)
    rows = RNG.normal(size=(6, FEATURES)).astype(np.float32)
    job = npy_job(cloud, models_dir, rows, batch_rows=4, workers=2)
    batch_job.run_job(job)
    np.testing.assert_array_equal(npy_output(cloud, job, "label"), expected(rows)[0])
    assert runs.most == 2


def test_a_checkpoint_from_before_byte_chunks_keeps_its_row_chunks(cloud: Cloud) -> None:
    obj = parse_key(cloud.bucket, f"batch/input/{MODEL}/old.jsonl", "v1")
    old = {"job_id": obj.job_id, "input_version": "v1", "chunk_rows": 10_000, "next_chunk": 3,
           "next_row": 30_000, "next_byte": 123, "outputs_written": 30_000, "errors": 0,
           "parts": ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]}
    client("s3").put_object(Bucket=cloud.bucket, Key=obj.checkpoint_key,
                            Body=json.dumps(old).encode())
    state = checkpoint.load(client("s3"), obj, 0, 8 << 20)
    assert (state.chunk_rows, state.chunk_bytes, state.next_chunk) == (10_000, 0, 3)


@pytest.mark.parametrize(("environment", "arguments", "chunk_rows", "chunk_bytes"), [
    ({}, [], 0, batch_job.CHUNK_BYTES),
    ({"BATCH_CHUNK_ROWS": "10000"}, [], 10_000, 0),  # the old setting still means rows
    ({"BATCH_CHUNK_BYTES": "1048576"}, [], 0, 1 << 20),
    ({"BATCH_CHUNK_ROWS": "500", "BATCH_CHUNK_BYTES": "4096"}, [], 500, 4096),
    ({"BATCH_CHUNK_BYTES": "4096"}, ["--chunk-rows", "9"], 9, 4096),
])
def test_chunk_settings_from_the_environment(
        monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], arguments: list[str],
        chunk_rows: int, chunk_bytes: int) -> None:
    for name in ("BATCH_CHUNK_ROWS", "BATCH_CHUNK_BYTES", "BATCH_ROWS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    parsed = runner.parse_args(["--bucket", "b", "--key", "k", "--job-id", "j", *arguments])
    assert (parsed.chunk_rows, parsed.byte_limit, parsed.batch_rows) == (
        chunk_rows, chunk_bytes, 0)
    monkeypatch.setenv("BATCH_ROWS", "64")
    assert runner.parse_args(["--bucket", "b", "--key", "k", "--job-id", "j"]).batch_rows == 64


def test_settings_in_code_resolve_the_chunk_limits_as_the_command_line_does(
        tmp_path: Path) -> None:
    job = batch_job.JobConfig(bucket="b", key="k", version_id="v", job_id="j", models_dir=tmp_path)
    assert (job.chunk_rows, job.byte_limit) == (0, batch_job.CHUNK_BYTES)
    rows_only = dataclasses.replace(job, chunk_rows=500)
    assert (rows_only.chunk_rows, rows_only.byte_limit) == (500, 0)  # as --chunk-rows 500
    both = dataclasses.replace(job, chunk_rows=500, chunk_bytes=4096)
    assert (both.chunk_rows, both.byte_limit) == (500, 4096)
    # By default a quarter of the input (of a child's share), within 8 to 64 MiB
    mib = 1 << 20
    assert [job.byte_limit_for(size * mib) for size in (1, 32, 100, 256, 10_000)] == [
        8 * mib, 8 * mib, 25 * mib, 64 * mib, 64 * mib]
    assert dataclasses.replace(job, shards=4).byte_limit_for(100 * mib) == 8 * mib
    assert both.byte_limit_for(10_000 * mib) == 4096 and rows_only.byte_limit_for(mib) == 0


def test_no_chunk_limit_at_all_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit):
        runner.parse_args(["--bucket", "b", "--key", "k", "--job-id", "j", "--chunk-rows", "0",
                           "--chunk-bytes", "0"])


# ---------------------------------------------------------------------------- batch size

def feed(tuner: BatchSizeTuner, speeds: dict[int, float], runs: int = 40) -> None:
    """Model runs at the tuner's current size, each at that size's rows/s."""
    for _ in range(runs):
        tuner.record(tuner.size, tuner.size / speeds[tuner.size])


def test_the_fastest_size_on_the_first_rows_is_kept() -> None:
    tuner = BatchSizeTuner((256, 1024, 4096, 16384))
    feed(tuner, {256: 2e6, 1024: 2.5e6, 4096: 2.4e6, 16384: 1.9e6})
    assert tuner.choice == 1024
    assert set(tuner.rates) == {256, 1024, 4096}  # 4096, slower than 1024, ends the trial
    feed(tuner, {1024: 1.0})  # once chosen, it stays
    assert tuner.size == 1024


def test_the_first_runs_of_a_size_are_not_timed() -> None:
    # onnxruntime plans and allocates on a shape's first runs: they say nothing of the size's
    # speed (here absurdly fast ones, which would win the trial if they were timed)
    tuner = BatchSizeTuner((256, 1024))
    for _ in range(microbatch.WARMUP_RUNS):
        tuner.record(256, 1e-9)
    feed(tuner, {256: 1e6, 1024: 2e6})
    assert microbatch.WARMUP_RUNS == 2 and tuner.rates[256] == pytest.approx(1e6)
    assert tuner.choice == 1024


def test_a_larger_size_is_tried_only_while_the_last_step_paid() -> None:
    # 1024 is 5% faster than 256: not the 10% (STEP_GAIN) that would make 4096 worth a try,
    # its warm-up and timed runs paid out of the job's rows
    tuner = BatchSizeTuner((256, 1024, 4096, 16384))
    feed(tuner, {256: 3e6, 1024: 3.15e6, 4096: 9e6})
    assert tuner.choice == 1024 and set(tuner.rates) == {256, 1024}


def test_the_trial_stops_past_the_peak_and_ignores_short_runs() -> None:
    tuner = BatchSizeTuner((256, 1024, 4096, 16384))
    tuner.record(10, 1e-9)  # a chunk's last few rows: not a measure of 256
    feed(tuner, {256: 3e6, 1024: 1e6})
    assert tuner.choice == 256 and set(tuner.rates) == {256, 1024}


def test_a_disturbed_trial_does_not_climb_to_the_largest_size() -> None:
    # The runs of 1024 met the job's first reads: slower than 256, they end the trial there
    # (it once went on while each size was within 0.8x of the best, and chose 16384)
    tuner = BatchSizeTuner((256, 1024, 4096, 16384))
    feed(tuner, {256: 3e6, 1024: 2.9e6, 4096: 3.1e6, 16384: 3.2e6})
    assert tuner.choice == 256 and set(tuner.rates) == {256, 1024}


def test_a_fixed_size_is_used_as_given_and_halved_on_out_of_memory() -> None:
    tuner = BatchSizeTuner((256, 1024), fixed=100)
    feed(tuner, {100: 1e6})
    assert tuner.size == 100 and not tuner.rates
    assert tuner.out_of_memory(100) == 50 and tuner.size == 50


def test_out_of_memory_during_the_trial_ends_it_below_that_size() -> None:
    tuner = BatchSizeTuner((256, 1024, 4096, 16384))
    feed(tuner, {256: 1e6, 1024: 2e6}, runs=24)  # 2 + 10 runs of each
    assert tuner.size == 4096
    assert tuner.out_of_memory(4096) == 1024 and tuner.size == 1024


def test_a_run_beside_others_counts_as_their_throughput() -> None:
    # Two runs side by side, each at 0.6x the speed of one alone: 1.2x the rows a second
    tuner = BatchSizeTuner((256, 1024))
    while tuner.size == 256:
        tuner.record(256, 256 / 1e6)
    while tuner.choice is None:
        tuner.record(1024, 1024 / 0.6e6, at_once=2)
    assert tuner.rates == {256: pytest.approx(1e6), 1024: pytest.approx(1.2e6)}
    assert tuner.choice == 1024


def test_npy_runs_shorter_than_a_millisecond_run_one_at_a_time(
        cloud: Cloud, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Runs under the threshold (here 10 s, so that no run on a busy machine is slow enough to
    # count as long): after the first runs, side by side until one was timed, the rest run
    # in the job's own thread
    from model_api.model import LoadedModel

    monkeypatch.setattr(microbatch, "SIDE_BY_SIDE_SECONDS", 10.0)

    original = LoadedModel.run
    threads: list[str] = []

    def recorded(self: LoadedModel, inputs: dict[str, np.ndarray], names: Any) -> Any:
        threads.append(threading.current_thread().name)
        return original(self, inputs, names)

    monkeypatch.setattr(LoadedModel, "run", recorded)
    rows = RNG.normal(size=(500, FEATURES)).astype(np.float32)
    job = npy_job(cloud, models_dir, rows, batch_rows=10, workers=2)
    batch_job.run_job(job)
    np.testing.assert_array_equal(npy_output(cloud, job, "label"), expected(rows)[0])
    assert len(threads) == 50 and set(threads[4:]) == {"MainThread"}


def test_npy_job_killed_at_any_request_resumes_to_the_same_outputs(
        cloud: Cloud, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As tests/batch/test_batch_fuzz.py does for JSON Lines: the job dies (a BaseException
    nothing catches) just before one of its S3 requests, then runs again; its outputs
    are byte-identical to an uninterrupted run's, with no upload left behind. Small parts
    (the fake S3's least lowered from 5 MiB) make several parts per output."""
    monkeypatch.setattr("moto.s3.models.S3_UPLOAD_PART_MIN_SIZE", 256)
    monkeypatch.setattr(writer, "PART_BYTES", 512)  # 3 parts of each output
    monkeypatch.setattr(batch_job, "ONE_PUT_BYTES", 0)  # parts, however small the files
    rows = RNG.normal(size=(200, FEATURES)).astype(np.float32)
    # 16 rows a chunk (its outputs: 128 bytes of each), ramping up from 2 rows (32 bytes)
    monkeypatch.setattr(batch_job, "FIRST_CHUNK_BYTES", 32)
    overrides = {"chunk_bytes": 256, "batch_rows": 8, "table": None}
    whole = npy_job(cloud, models_dir, rows, **overrides)
    calls: list[tuple[str, Any]] = []
    batch_job.run_job(whole, s3=recording_s3(calls))
    assert [part for name, part in calls if name == "UploadPart"] == [1, 1, 2, 2, 3, 3]
    wanted = {name: client("s3").get_object(
        Bucket=cloud.bucket, Key=parse_key(whole.bucket, whole.key, whole.version_id)
        .output_prefix + f"{name}.npy")["Body"].read() for name in ("label", "probabilities")}
    # Every other request (the parity shifts with each part's three requests, so both of a
    # pair of parts, the checkpoint and the completions are each hit): half the seconds
    assert len(calls) >= 15
    for kill_at in range(1, len(calls) + 1, 2):
        killed = npy_job(cloud, models_dir, rows, **overrides)
        with pytest.raises(Killed):
            run_until(killed, kill_at)
        summary = batch_job.run_job(killed)
        prefix = parse_key(killed.bucket, killed.key, killed.version_id).output_prefix
        for name, data in wanted.items():
            assert client("s3").get_object(Bucket=cloud.bucket, Key=f"{prefix}{name}.npy")[
                "Body"].read() == data, (kill_at, name)
        assert summary["rows_read"] == 200 and uploads_in_progress(cloud, killed) == []


def test_npy_outputs_of_one_part_are_one_put_each(cloud: Cloud, models_dir: Path) -> None:
    # A job whose outputs are under PART_BYTES: written with one PUT each, no multipart upload
    rows = RNG.normal(size=(23, FEATURES)).astype(np.float32)
    job = npy_job(cloud, models_dir, rows, chunk_bytes=100, batch_rows=4)
    calls: list[tuple[str, Any]] = []
    summary = batch_job.run_job(job, s3=recording_s3(calls))
    assert not [name for name, _ in calls if "Multipart" in name or name == "UploadPart"]
    labels, probabilities = expected(rows)
    np.testing.assert_array_equal(npy_output(cloud, job, "label"), labels)
    np.testing.assert_allclose(npy_output(cloud, job, "probabilities"), probabilities,
                               rtol=1e-5, atol=1e-6)
    assert summary["outputs"] == {"label": [23], "probabilities": [23, 2]}


def requested_keys(s3: Any) -> list[str]:
    """'<operation> <the key's last name>' of each request `s3` makes from now on."""
    keys: list[str] = []
    s3.meta.events.register("before-parameter-build.s3", lambda model, params, **_: keys.append(
        f"{model.name} {params.get('Key', '').rsplit('/', 1)[-1]}"))
    return keys


def test_a_small_npy_job_holds_its_outputs_for_one_put_each_unless_held_too_long(
        cloud: Cloud, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Outputs that make parts (the fake S3's least lowered from 5 MiB) but whose files total
    # at most ONE_PUT_BYTES: held, then one PUT each after the last rows, no checkpoint
    monkeypatch.setattr("moto.s3.models.S3_UPLOAD_PART_MIN_SIZE", 64)
    monkeypatch.setattr(writer, "PART_BYTES", 128)
    rows = RNG.normal(size=(23, FEATURES)).astype(np.float32)
    labels, probabilities = expected(rows)
    for hold_seconds, multipart in ((batch_job.HOLD_SECONDS, False), (0.0, True)):
        # ... unless they were held HOLD_SECONDS: then parts and checkpoints as they go
        monkeypatch.setattr(batch_job, "HOLD_SECONDS", hold_seconds)
        job = npy_job(cloud, models_dir, rows, chunk_bytes=100, batch_rows=4)
        keys = requested_keys(s3 := client("s3"))
        batch_job.run_job(job, s3=s3)
        uploaded = [key for key in keys if "Multipart" in key or "UploadPart" in key]
        assert bool(uploaded) == multipart, keys
        assert ("PutObject _checkpoint.json" in keys) == multipart, keys
        np.testing.assert_array_equal(npy_output(cloud, job, "label"), labels)
        np.testing.assert_allclose(npy_output(cloud, job, "probabilities"), probabilities,
                                   rtol=1e-5, atol=1e-6)


def test_a_first_attempt_reads_no_checkpoint_and_records_its_version_with_its_end(
        cloud: Cloud, models_dir: Path) -> None:
    # A job of one child whose start update counted its first attempt reads no checkpoint
    # (no earlier attempt wrote one); a small job's model version goes with its final update,
    # and its last writes are checked by that conditional update: two requests to the table
    rows = RNG.normal(size=(23, FEATURES)).astype(np.float32)
    job = npy_job(cloud, models_dir, rows)
    keys = requested_keys(s3 := client("s3"))
    store = cloud.store
    table: list[str] = []
    store.table.meta.client.meta.events.register(
        "before-parameter-build.dynamodb", lambda model, **_: table.append(model.name))
    batch_job.run_job(job, s3=s3, store=store)
    assert not [key for key in keys if key.endswith("_checkpoint.json")], keys
    assert table == ["UpdateItem", "UpdateItem"], table
    record = store.get(job.job_id)
    assert record is not None and record["status"] == jobs.SUCCEEDED
    assert record["model_version"] == "1" and record["attempts"] == 1
    np.testing.assert_array_equal(npy_output(cloud, job, "label"), expected(rows)[0])


def test_a_npy_job_holding_its_outputs_still_stops_within_seconds_of_an_erasure(
        cloud: Cloud, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its outputs held for one PUT each (no write due until the last rows), a .npy job still
    # asks every LIVE_SECONDS whether it lives: erased after its first chunk, it stops there,
    # writes no output and leaves nothing
    monkeypatch.setattr(batch_job, "LIVE_SECONDS", 0.0)
    rows = RNG.normal(size=(23, FEATURES)).astype(np.float32)
    job = npy_job(cloud, models_dir, rows, chunk_bytes=100, batch_rows=4)  # 6 rows a chunk
    asked: list[int] = []
    live = batch_job.Job._live

    def erased_at_the_first_ask(self: batch_job.Job) -> None:
        if not asked:
            cloud.store.mark_erasing(job.job_id)
        asked.append(1)
        live(self)

    monkeypatch.setattr(batch_job.Job, "_live", erased_at_the_first_ask)
    keys = requested_keys(s3 := client("s3"))
    with pytest.raises(jobs.JobErased):
        batch_job.run_job(job, s3=s3)
    assert len(asked) == 1 and not [key for key in keys if key.endswith(".npy")
                                     and key.startswith("PutObject")], keys
    prefix = parse_key(job.bucket, job.key, job.version_id).output_prefix
    assert not client("s3").list_object_versions(Bucket=cloud.bucket, Prefix=prefix).get(
        "Versions")


def slowed_updates(monkeypatch: pytest.MonkeyPatch, events: list[str], which: str) -> None:
    """Every JobStore.update of the job's start (`which` "start") or that records its model
    version ("model_version") lands 0.3 s late, and says so in `events` when it has."""
    real = jobs.JobStore.update

    def late(self: jobs.JobStore, job_id: str, *args: Any, **kwargs: Any) -> Any:
        if (which == "start" and kwargs.get("increment_attempts")) or (
                which in (kwargs.get("fields") or {})):
            time.sleep(0.3)
            answer = real(self, job_id, *args, **kwargs)
            events.append(f"{which} recorded")
            return answer
        return real(self, job_id, *args, **kwargs)

    monkeypatch.setattr(jobs.JobStore, "update", late)


def test_a_job_of_no_rows_writes_nothing_before_its_start_is_recorded(
        cloud: Cloud, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The start is recorded while the job reads; its first write waits for it, even the
    # outputs of a job that has no rows (written when the uploads complete)
    events: list[str] = []
    slowed_updates(monkeypatch, events, "start")
    job = npy_job(cloud, models_dir, np.zeros((0, FEATURES), np.float32))
    keys = requested_keys(s3 := client("s3"))
    s3.meta.events.register("before-parameter-build.s3.PutObject",
                            lambda params, **_: events.append(params["Key"].rsplit("/", 1)[-1]))
    batch_job.run_job(job, s3=s3)
    assert events[0] == "start recorded", events
    assert "PutObject label.npy" in keys


def test_a_failed_job_records_its_model_version_with_its_failure(
        cloud: Cloud, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The version goes with the job's next record update: a job that fails before any write
    # (rows of the wrong width) records it with its failure, and the job-end event has it
    events: list[str] = []
    slowed_updates(monkeypatch, events, "model_version")
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(batch_job.notify, "job_finished",
                        lambda record, client=None: sent.append(record) or True)
    job = npy_job(cloud, models_dir, np.zeros((5, FEATURES + 3), np.float32))
    with pytest.raises(PermanentError, match="rows have shape"):
        batch_job.run_job(job)
    assert events == ["model_version recorded"]
    assert sent and sent[0]["status"] == jobs.FAILED and sent[0]["model_version"] == "1", sent


def test_a_bytes_output_is_refused_in_a_npy_file_not_written_as_pointers(cloud: Cloud) -> None:
    # text-topics' label is BYTES (an object array): its bytes are heap pointers, and a .npy
    # holding them is garbage that np.load refuses. The job fails with a reason instead.
    upload = writer.NpyUpload(client("s3"), cloud.bucket, "batch/output/x/label.npy", rows=2)
    with pytest.raises(ValueError, match="JSON Lines"):
        upload.add(np.array(["sport", "tech"], dtype=object))
    upload.add(np.array([1, 2], dtype=np.int64))  # numbers still go


def test_a_model_with_text_inputs_or_outputs_is_refused_on_the_npy_header() -> None:
    # text-topics takes a BYTES input and answers a BYTES label: a .npy job of it fails on the
    # file's header, before any row runs (not after running them all, at its first output)
    from batch.loading import CPU, load_version, version_dir
    from batch.npy import input_spec
    from batch.reader import NpyLayout
    from tests.conftest import MODELS_DIR

    model = load_version(version_dir(MODELS_DIR, "text-topics", None), [CPU])
    for dtype in ("<U12", "<f4"):
        with pytest.raises(PermanentError, match=r"input 'text', output 'label'.*JSON Lines"):
            input_spec(NpyLayout((3,), np.dtype(dtype), 128), model)


def test_outputs_too_uneven_for_npy_parts_fail_with_the_reason_not_out_of_memory(
        cloud: Cloud, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A wide output waits in memory for a narrow one to make a part (all outputs' parts end at
    # the same row); past MAX_HELD_BYTES the job fails saying what to do, and leaves no upload.
    monkeypatch.setattr(batch_job, "MAX_HELD_BYTES", 1000)
    rows = RNG.normal(size=(400, FEATURES)).astype(np.float32)
    job = npy_job(cloud, models_dir, rows, chunk_bytes=4000, batch_rows=64)
    with pytest.raises(Exception, match=r"differ too much in size for \.npy outputs"):
        batch_job.run_job(job)
    assert uploads_in_progress(cloud, job) == []
