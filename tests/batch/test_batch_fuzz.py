"""Fuzzing the batch reader as the API is fuzzed (tests/hostile/test_fuzz.py): whatever a JSON
Lines input holds (any bytes, nesting or size per line), every line gets exactly one record,
in input order, and the job succeeds; a job killed at any point and resumed writes output
byte-identical to an uninterrupted run's. Deterministic (derandomized, no example database)
and bounded by its example count, so it costs seconds.

The kill is a BaseException raised at a drawn S3 request of the job, which nothing in the
runner catches (as nothing catches SIGKILL): the job stops there with whatever it had written,
and a fresh run resumes from that. S3 requests are the only points where a runner's progress
becomes visible, so this covers every point a real kill can land (tests/batch/
test_batch_local_loop.py kills a real runner process with SIGKILL).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from batch import job as batch_job
from batch import jsonl, reader, runner
from batch.aws import client
from batch.keys import parse_key
from tests.batch.conftest import FEATURES, MODEL, Cloud, request_line
from tests.batch.test_batch_runner import output_records
from tests.batch.test_batch_runner import settings as job_settings

FUZZ = settings(max_examples=15, derandomize=True, database=None, deadline=None,
                suppress_health_check=list(HealthCheck))
NAMES = itertools.count()


class Killed(BaseException):
    """The runner's process died (not an Exception: no `except Exception` stops it)."""


def valid_request(draw: Any) -> bytes:
    rows = draw(st.integers(1, 3))
    values = draw(st.lists(st.floats(-100, 100, width=32), min_size=rows * FEATURES,
                           max_size=rows * FEATURES))
    return request_line(f"id-{draw(st.integers(0, 99))}",
                        np.array(values, dtype=np.float32).reshape(rows, FEATURES)).encode()


@st.composite
def lines(draw: Any) -> bytes:
    """One line (no b"\\n"): a request, a request broken in one place, or anything at all."""
    kind = draw(st.sampled_from(["valid", "valid", "nested", "mutated", "json", "bytes",
                                 "blank"]))
    if kind == "valid":
        return valid_request(draw)
    if kind == "nested":  # what the recursive JSON parser dies of, with an id to look for
        depth = draw(st.sampled_from([33, 1000, 2000, 5000]))
        opener = draw(st.sampled_from([b"[", b'{"a":', b'{"id": "deep", "inputs": [']))
        return opener * depth
    if kind == "mutated":
        good = json.loads(valid_request(draw))
        change = draw(st.sampled_from([
            ("id", 7), ("id", "\ud800"), ("id", {"nested": ["id"]}),
            ("parameters", {"binary_data_output": True}),
            ("outputs", [{"name": "label", "parameters": {"binary_data": True}}]),
            ("outputs", [{"name": "nope"}]), ("inputs", []), ("inputs", "features"),
            ("extra", 1)]))
        good[change[0]] = change[1]
        return json.dumps(good).encode()
    if kind == "json":
        value = draw(st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
            | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4),
                                                                        inner, max_size=3),
            max_leaves=12))
        return json.dumps(value).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=64)).replace(b"\n", b" ")
    return draw(st.sampled_from([b"", b"   ", b"\r", b"\t"]))


def run_until(job: batch_job.JobConfig, kill_at: int | None) -> None:
    """Run the job in this process; with `kill_at`, die just before its kill_at-th S3 request."""
    s3 = client("s3")
    requests = itertools.count(1)

    def maybe_die(**_: Any) -> None:
        if next(requests) == kill_at:
            raise Killed

    s3.meta.events.register("before-send.s3", maybe_die)
    batch_job.run_job(job, s3=s3)


def parts_bytes(cloud: Cloud, job: batch_job.JobConfig) -> bytes:
    obj = parse_key(job.bucket, job.key, job.version_id)
    marker = json.loads(cloud.text(obj.success_key))
    return b"".join(cloud.s3.get_object(Bucket=job.bucket, Key=obj.output_key(part))["Body"]
                    .read() for part in marker["parts"])


def upload(cloud: Cloud, models_dir: Path, body: bytes, **overrides: Any) -> batch_job.JobConfig:
    key = f"batch/input/{MODEL}/fuzz-{next(NAMES)}.jsonl"
    return job_settings(cloud, models_dir, key, cloud.put(key, body), chunk_rows=4,
                        batch_rows=4, **overrides)


@FUZZ
@given(st.lists(lines(), min_size=1, max_size=14), st.booleans(), st.integers(1, 12))
def test_every_line_gets_one_record_and_a_killed_job_resumes_byte_identical(
        cloud: Cloud, models_dir: Path, drawn: list[bytes], final_newline: bool,
        kill_at: int) -> None:
    body = b"\n".join(drawn) + (b"\n" if final_newline else b"")
    assume(body)  # one empty line and no newline is an empty input: no line at all
    # An empty last line with no newline after it is no line: the body ends with the newline
    # of the line before it, as the same lines without it and with a final newline would
    assume(final_newline or drawn[-1])
    # Given an uninterrupted run
    whole = upload(cloud, models_dir, body)
    summary = batch_job.run_job(whole)
    records = output_records(cloud, whole)
    # Then every line has exactly one record, in order, and the job succeeded
    assert len(records) == len(drawn) == summary["rows_read"]
    for number, record in enumerate(records, start=1):
        if "outputs" not in record:
            assert set(record) == {"id", "line", "error"} and record["line"] == number, record
    assert summary["errors"] == sum("error" in record for record in records)
    assert (whole_record := cloud.store.get(whole.job_id)) is not None
    assert whole_record["status"] == "succeeded"
    # When the same input's job is killed at a drawn S3 request, then run again
    killed = upload(cloud, models_dir, body, table=None)  # S3 is where a kill shows
    try:
        run_until(killed, kill_at)
    except Killed:
        batch_job.run_job(killed)
    # Then its output is byte-identical to the uninterrupted run's
    assert parts_bytes(cloud, killed) == parts_bytes(cloud, whole)


def test_a_line_of_2000_brackets_costs_one_record_not_the_job(cloud: Cloud,
                                                               models_dir: Path) -> None:
    good = request_line("ok", np.ones((1, FEATURES)))
    job = upload(cloud, models_dir, b"\n".join([good.encode(), b"[" * 2000, good.encode()]))
    assert runner.main(["--bucket", job.bucket, "--key", job.key, "--version-id",
                        job.version_id, "--job-id", job.job_id, "--table", job.table or "",
                        "--models-dir", str(models_dir)]) == 0
    first, deep, last = output_records(cloud, job)
    assert first["id"] == last["id"] == "ok" and "outputs" in first and "outputs" in last
    assert deep == {"id": None, "line": 2,
                    "error": "the request JSON nests 2000 levels deep; the limit is 32"}


def test_a_line_over_the_record_limit_is_skipped_unread_with_its_error(
        cloud: Cloud, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small blocks and limit: the long line spans many blocks, none of which is kept
    monkeypatch.setattr(reader, "BLOCK", 100)
    monkeypatch.setattr(jsonl, "BATCH_MAX_RECORD_BYTES", 1000)
    good = request_line("ok", np.ones((1, FEATURES))).encode()
    long = b'{"id": "long", "inputs": [' + b"1," * 5000 + b"1]}"
    job = upload(cloud, models_dir, b"\n".join([good, long, good, long]))
    source = reader.S3Object(cloud.s3, job.bucket, job.key, job.version_id)
    size = len(b"\n".join([good, long, good, long]))
    read = list(reader.iter_lines(source, 0, size, 1000))
    assert [line for line, _ in read] == [good, reader.LongLine(len(long)), good,
                                          reader.LongLine(len(long))]
    assert [end for _, end in read] == [len(good) + 1, len(good) + len(long) + 2,
                                        2 * len(good) + len(long) + 3, size]
    batch_job.run_job(job)
    records = output_records(cloud, job)
    assert [r["id"] for r in records] == ["ok", None, "ok", None]
    assert records[1] == {"id": None, "line": 2, "error": f"the line is {len(long)} bytes; the "
                          "limit is 1000 bytes per JSON Lines record"}
