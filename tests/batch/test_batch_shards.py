"""A job as an array job of N children (batch.shards): each child over its own byte range of
the JSON Lines input (from the first line that begins in it) or row range of the .npy, with
its own checkpoints; one `_SUCCESS.json`, written once by the child that finds every child
done, listing the parts in input order.

The 4-child local job runs over 200,000 lines, one child killed twice, as the issue asks
(15 s on a quiet 2-core machine, 43 s at load average 6).
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from batch import job as batch_job
from batch import shards
from batch.failures import PermanentError
from batch.jobs import SUBMITTED
from batch.keys import parse_key
from batch.submit import PERMANENT_EXIT
from tests.batch.conftest import FEATURES, MODEL, Cloud, expected, registry, request_line
from tests.batch.test_batch_runner import output_records

ROOT = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(23)


def run_children(cloud: Cloud, models_dir: Path, key: str, version: str, count: int,
                 order: list[int], **overrides: Any) -> list[dict[str, Any]]:
    """Run each child of a `count`-child job in this process, in `order`; their summaries."""
    obj = parse_key(cloud.bucket, key, version)
    cloud.store.create({"job_id": obj.job_id, "model": obj.model, "status": SUBMITTED,
                        "shards": count, "shard_states": {str(i): {"state": SUBMITTED}
                                                          for i in range(count)}})
    return [batch_job.run_job(batch_job.JobConfig(
        bucket=cloud.bucket, key=key, version_id=version, job_id=obj.job_id,
        models_dir=models_dir, table=cloud.table, progress_seconds=0.0, shard=index,
        shards=count, **overrides)) for index in order]


def test_n_from_the_size_or_the_request_and_ranges_cover_the_input_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_SHARD_BYTES", "1000")
    monkeypatch.setenv("BATCH_MAX_SHARDS", "8")
    assert [shards.choose(size) for size in (1, 1000, 1001, 7999, 10**9)] == [1, 1, 2, 8, 8]
    assert shards.choose(10**9, requested=3) == 3 and shards.choose(1, requested=5) == 5
    for bad in (0, 9, "4", True, 2.0):
        with pytest.raises(shards.ShardsError, match="from 1 to 8"):
            shards.check(bad)
    assert shards.requested_in_key("rows.shards-4") == 4
    assert shards.requested_in_key("rows") is None and shards.requested_in_key("x.shards-0") \
        is None
    for total, count in ((10, 3), (7, 7), (3, 5), (1000003, 20)):
        ranges = [shards.nominal_range(total, i, count) for i in range(count)]
        assert ranges[0][0] == 0 and ranges[-1][1] == total
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


def test_more_children_than_bytes_still_take_each_line_once(cloud: Cloud,
                                                             models_dir: Path) -> None:
    key = f"batch/input/{MODEL}/tiny.jsonl"
    summaries = run_children(cloud, models_dir, key, cloud.put(key, b"x\ny\n"), 5,
                             list(range(5)))
    assert [s["rows_read"] for s in summaries[:-1]] == [0, 1, 0, 1]
    job = batch_job.JobConfig(bucket=cloud.bucket, key=key, version_id=summaries[0]
                              ["input_version"], job_id=summaries[0]["job_id"],
                              models_dir=models_dir)
    assert [r["line"] for r in output_records(cloud, job)] == [1, 2]


@pytest.mark.parametrize(("count", "order"), [(5, [4, 2, 0, 3, 1]), (9, list(range(9)))])
def test_children_take_each_line_once_in_order_whatever_the_cut(
        cloud: Cloud, models_dir: Path, count: int, order: list[int]) -> None:
    # Lines of every length: a long one spans whole ranges (its children get no line), a bad
    # one and an empty one get error records with their line number in the whole input
    rows = RNG.normal(size=(12, FEATURES))
    lines = [request_line(f"r{n}", rows[n:n + 1]) for n in range(12)]
    lines[3] = request_line("long", rows[3:4], parameters={"pad": "x" * 3000})
    lines[7], lines[9] = "not json", ""
    body = ("\n".join(lines) + "\n").encode()
    key = f"batch/input/{MODEL}/cut-{count}.jsonl"
    summaries = run_children(cloud, models_dir, key, cloud.put(key, body), count, order,
                             chunk_rows=2, batch_rows=4)
    # Then only the last child to finish finished the job, and the records are as one job's
    assert [s["finished_job"] for s in summaries] == [False] * (count - 1) + [True]
    job = batch_job.JobConfig(bucket=cloud.bucket, key=key, version_id=summaries[0]
                              ["input_version"], job_id=summaries[0]["job_id"],
                              models_dir=models_dir)
    records = output_records(cloud, job)
    assert len(records) == 12
    assert [r["id"] for r in records] == [f"r{n}" if n not in (3, 7, 9) else
                                          ("long" if n == 3 else None) for n in range(12)]
    assert (records[7]["line"], records[9]["line"]) == (8, 10)
    label, _ = expected(rows)
    assert records[0]["outputs"][0]["data"] == [int(label[0])]
    marker = json.loads(cloud.text(parse_key(cloud.bucket, key, job.version_id).success_key))
    assert marker["rows_read"] == 12 and marker["errors"] == 2
    assert [child["shard"] for child in marker["shards"]] == list(range(count))
    assert sum(child["rows_read"] for child in marker["shards"]) == 12
    assert marker["parts"] == sorted(marker["parts"])  # shard-<i>/part-<c>: input order
    record = cloud.store.get(job.job_id)
    assert record is not None and record["status"] == "succeeded"
    assert record["rows_read"] == 12 and len(record["shard_states"]) == count
    assert {state["state"] for state in record["shard_states"].values()} == {"succeeded"}


def test_npy_children_take_their_rows_and_the_outputs_are_assembled_once(
        cloud: Cloud, models_dir: Path) -> None:
    rows = RNG.normal(size=(101, FEATURES)).astype(np.float32)
    key = f"batch/input/{MODEL}/rows.npy"
    buffer = io.BytesIO()
    np.save(buffer, rows)
    summaries = run_children(cloud, models_dir, key, cloud.put(key, buffer.getvalue()), 4,
                             [1, 3, 0, 2], chunk_rows=10)
    assert summaries[-1]["outputs"] == {"label": [101], "probabilities": [101, 2]}
    prefix = parse_key(cloud.bucket, key, summaries[0]["input_version"]).output_prefix
    _, probabilities = expected(rows)
    got = cloud.s3.get_object(Bucket=cloud.bucket, Key=prefix + "probabilities.npy")
    array = np.load(io.BytesIO(got["Body"].read()))
    np.testing.assert_allclose(array, probabilities, rtol=1e-5)


def test_a_npy_child_records_its_exact_rows_as_it_starts(
        cloud: Cloud, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from batch.jobs import JobStore

    key = f"batch/input/{MODEL}/rows.npy"
    buffer = io.BytesIO()
    np.save(buffer, RNG.normal(size=(101, FEATURES)).astype(np.float32))
    entries: list[dict[str, Any]] = []
    original = JobStore.update_shard

    def spy(self: JobStore, job_id: str, index: int, entry: dict[str, Any],
            merge: bool = False) -> None:
        entries.append(entry)
        original(self, job_id, index, entry, merge)

    monkeypatch.setattr(JobStore, "update_shard", spy)
    run_children(cloud, models_dir, key, cloud.put(key, buffer.getvalue()), 2, [1],
                 chunk_rows=10)
    # child 1 of 2 (rows 50 to 100): its total before any of its rows is done
    first = next(entry["progress"] for entry in entries if "progress" in entry)
    assert (first["rows_done"], first["rows_total"], first["rows_total_exact"]) == (0, 51, True)


def test_a_4_child_local_job_with_one_child_killed_twice(models_dir: Path,
                                                          tmp_path: Path) -> None:
    """`make batch-local` as an array job: 4 child processes, child 1 SIGKILLed twice (each
    retry resumes from its own checkpoint), over 200,000 lines."""
    count = 200_000
    data = RNG.normal(size=(64, FEATURES))
    source = tmp_path / "rows.jsonl"
    with source.open("w") as out:
        for n in range(count):
            out.write(request_line(str(n), data[n % 64:n % 64 + 1]) + "\n")
    output = tmp_path / "answers.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [sys.executable, "-m", "local_api.batch.loop", "--model", MODEL, "--input",
         str(source), "--output", str(output), "--models-dir", str(models_dir),
         "--registry", str(registry(models_dir)), "--shards", "4",
         "--kill-after-rows", str(count // 40), "--kill-attempts", "2", "--kill-shard", "1"],
        cwd=ROOT, env={**env, "BATCH_CHUNK_BYTES": str(source.stat().st_size // 40)},
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.splitlines()[-1])
    # Then child 1 ran three times (killed, killed, done) and the others once
    assert summary["child_exit_codes"] == [[0], [-signal.SIGKILL, -signal.SIGKILL, 0], [0], [0]]
    job = summary["job"]
    # each attempt recorded its start: a retry is killed only after rows of its own
    assert job["status"] == "succeeded" and job["attempts"] == 6
    assert (job["rows_read"], job["outputs_written"], job["errors"]) == (count, count, 0)
    assert [child["state"] for child in job["shards"]] == ["succeeded"] * 4
    assert sum(child["rows"] for child in job["shards"]) == count
    mine = re.findall(r"spot reclaim played: .* rows done, (\d+) by this attempt\)",
                      result.stderr)
    assert len(mine) == 2 and all(int(rows) >= count // 40 for rows in mine), mine
    assert re.search(r"resuming job \S+ \(child 1 of 4\) at chunk [1-9]", result.stderr)
    assert re.search(r"[1-3] of 4 children done, waiting for child(ren)? [0-3](, [0-3])*$",
                     result.stderr, re.MULTILINE)
    # and one _SUCCESS.json, written once, lists parts that hold one record per line, in order
    assert len(re.findall(r"_SUCCESS\.json written by child", result.stderr)) == 1
    assert "was written already" not in result.stderr
    ids = [json.loads(line)["id"] for line in output.read_text().splitlines()]
    assert ids == [str(n) for n in range(count)]
    # the marker, kept beside the output: each child's rows, its parts in input order
    marker = json.loads((tmp_path / "answers._SUCCESS.json").read_text())
    assert summary["marker"] == str(tmp_path / "answers._SUCCESS.json")
    assert [child["shard"] for child in marker["shards"]] == [0, 1, 2, 3]
    assert sum(child["rows_read"] for child in marker["shards"]) == marker["rows_read"] == count
    assert marker["parts"] == [part for child in marker["shards"] for part in child["parts"]]


def test_a_child_that_fails_for_good_fails_the_job_and_the_others_stop(
        cloud: Cloud, models_dir: Path) -> None:
    # Given a 3-child .npy job whose rows do not fit the model (every child fails for good)
    key = f"batch/input/{MODEL}/wrong.npy"
    buffer = io.BytesIO()
    np.save(buffer, np.ones((30, FEATURES + 1), dtype=np.float32))
    version = cloud.put(key, buffer.getvalue())
    obj = parse_key(cloud.bucket, key, version)
    with pytest.raises(PermanentError, match="rows have shape"):
        run_children(cloud, models_dir, key, version, 3, [2], chunk_rows=10)
    # Then the job failed with the first failing child's reason
    record = cloud.store.get(obj.job_id)
    assert record is not None and record["status"] == "failed"
    assert record["reason"].startswith("child 2 of 3: PermanentError: .npy rows have shape")
    assert record["shard_states"]["2"]["state"] == "failed"
    # and a child that starts (or retries) after that stops at once, leaving the reason
    config = batch_job.JobConfig(bucket=cloud.bucket, key=key, version_id=version,
                                 job_id=obj.job_id, models_dir=models_dir, table=cloud.table,
                                 shard=0, shards=3)
    with pytest.raises(batch_job.StoppedByAnotherChild):
        batch_job.run_job(config)
    after = cloud.store.get(obj.job_id)
    assert after is not None and after["status"] == "failed"
    assert after["reason"] == record["reason"] and after["shard_states"]["0"]["state"] == \
        "stopped"


def test_a_stopped_child_exits_without_an_error_of_its_own(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from batch import runner

    def stopped(config: batch_job.JobConfig) -> dict[str, object]:
        raise batch_job.StoppedByAnotherChild("job j failed before child 1 started")

    monkeypatch.setattr(runner, "run_job", stopped)
    code = runner.main(["--bucket", "b", "--key", f"batch/input/{MODEL}/rows.jsonl",
                        "--job-id", "j", "--shard", "1", "--shards", "2", "--cpu"])
    # not retried, and no traceback: the job's reason is the child's that failed it
    assert code == PERMANENT_EXIT
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_running_child_stops_at_its_next_chunk_once_another_failed_the_job(
        cloud: Cloud, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [request_line(f"r{n}", RNG.normal(size=(1, FEATURES))) for n in range(40)]
    key = f"batch/input/{MODEL}/stop.jsonl"
    version = cloud.put(key, ("\n".join(lines) + "\n").encode())
    obj = parse_key(cloud.bucket, key, version)
    cloud.store.create({"job_id": obj.job_id, "model": MODEL, "status": SUBMITTED,
                        "shards": 2, "shard_states": {"0": {}, "1": {}}})
    store = cloud.store
    checks = 0
    live = batch_job.Job._live

    def failed_by_child_1(job: batch_job.Job) -> None:
        nonlocal checks
        checks += 1
        if checks == 2:  # child 1 fails the job while child 0 is between chunks
            store.update(job.obj.job_id, "failed", fields={"reason": "child 1 of 2: boom"})
        live(job)

    monkeypatch.setattr(batch_job.Job, "_live", failed_by_child_1)
    with pytest.raises(batch_job.StoppedByAnotherChild):
        batch_job.run_job(batch_job.JobConfig(
            bucket=cloud.bucket, key=key, version_id=version, job_id=obj.job_id,
            models_dir=models_dir, table=cloud.table, shard=0, shards=2, chunk_rows=5),
            store=store)
    record = store.get(obj.job_id)
    assert record is not None and record["reason"] == "child 1 of 2: boom"
    assert record["shard_states"]["0"]["state"] == "stopped"
    assert record["shard_states"]["0"]["rows_read"] == 5  # one chunk, then it stopped
