"""A JSON Lines job's chunks worked in worker processes (batch.workers): the same records, byte
for byte, as in one process; a worker that dies fails the attempt as transient and the retry
resumes; no worker outlives the runner, whatever stops it. Real processes (multiprocessing's
fork server), the real tiny model, the shared moto server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from batch import job as batch_job
from batch import workers
from batch.failures import Terminated, is_transient
from batch.keys import parse_key
from tests.batch.conftest import FEATURES, MODEL, Cloud, request_line
from tests.batch.test_batch_runner import settings, upload_lines

ROOT = Path(__file__).resolve().parents[2]


def mixed_lines(count: int) -> list[str]:
    """Requests of 1-3 rows, with bad lines and an explanation among them."""
    rng = np.random.default_rng(7)
    found = []
    for index in range(count):
        if index % 37 == 5:
            found.append('{"id": "broken", "inputs": [')
        elif index % 53 == 9:
            found.append("")
        elif index % 61 == 11:
            found.append(request_line(f"why-{index}", rng.normal(size=(1, FEATURES)),
                                      parameters={"explain": True}))
        else:
            rows = int(rng.integers(1, 4))
            found.append(request_line(f"r-{index}", rng.normal(size=(rows, FEATURES))))
    return found


class Recorded(workers.ChunkWorkers):
    """ChunkWorkers that remember their processes' ids (and can play a fault at a chunk);
    ready only once every worker has started, so that the chunks go to them."""

    made: list[Recorded] = []  # noqa: RUF012 (one test's pools)
    fault_at: int | None = None  # the submit at which the fault is played
    fault: str = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ready.result(timeout=60)  # (the runner itself does not wait)
        self.pids: set[int] = set()
        self.submitted = 0
        Recorded.made.append(self)

    def submit(self, lines: Any, first_number: int) -> Any:
        self.submitted += 1
        if self.submitted == Recorded.fault_at and Recorded.fault == "terminated":
            raise Terminated("stopped by signal 15 (SIGTERM)")
        future = super().submit(lines, first_number)
        self.pids |= {process.pid for process in self.processes if process.pid}
        if self.submitted == Recorded.fault_at and Recorded.fault == "kill":
            future.result()  # this chunk is done; then one worker dies, as the OOM killer does
            os.kill(next(iter(self.pids)), signal.SIGKILL)
        return future

    def close(self, wait: bool = True) -> None:
        self.pids |= {process.pid for process in self.processes if process.pid}
        super().close(wait)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> type[Recorded]:
    monkeypatch.setattr(workers, "MIN_POOL_BYTES", 0)  # the tests' inputs are small
    monkeypatch.setattr(batch_job.workers, "ChunkWorkers", Recorded)
    Recorded.made, Recorded.fault_at, Recorded.fault = [], None, ""
    return Recorded


def gone(pids: set[int], within: float = 10.0) -> bool:
    """Whether every process of `pids` has ended (and been reaped) within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = set()
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.add(pid)
        if not alive:
            return True
        time.sleep(0.05)
    return False


def parts(cloud: Cloud, job: batch_job.JobConfig) -> tuple[bytes, dict[str, Any]]:
    prefix = parse_key(job.bucket, job.key, job.version_id).output_prefix
    marker = json.loads(cloud.text(prefix + "_SUCCESS.json"))
    return b"".join(cloud.s3.get_object(Bucket=job.bucket, Key=prefix + part)["Body"].read()
                    for part in marker["parts"]), marker


def test_two_workers_write_the_same_records_as_one_process_and_capture_them(
        cloud: Cloud, models_dir: Path, recorded: type[Recorded], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Given every row captured (CAPTURE_SAMPLING=100) and a job of many chunks, when it runs
    in this process and again with two worker processes, then both write the same parts, byte
    for byte, the workers' data capture delivers every answered row, and no worker is left."""
    monkeypatch.setenv("CAPTURE_SAMPLING", "100")
    lines = mixed_lines(160)
    key, version = upload_lines(cloud, lines, "workers")
    outputs = {}
    for count in (1, 2):
        monkeypatch.setenv("CAPTURE_DIR", str(tmp_path / f"capture-{count}"))
        job = settings(cloud, models_dir, key, version, chunk_bytes=4500, batch_rows=8,
                       workers=count)
        batch_job.run_job(job, s3=cloud.s3, store=cloud.store)
        outputs[count] = parts(cloud, job)
        cloud.s3.delete_object(Bucket=job.bucket, Key=parse_key(
            job.bucket, key, version).checkpoint_key)  # the second run starts afresh
    assert [pool.count for pool in recorded.made] == [2]
    (pool,) = recorded.made
    assert len(pool.pids) == 2 and gone(pool.pids)
    one, two = outputs[1], outputs[2]
    assert two[0] == one[0] and len(two[0].splitlines()) == len(lines)
    assert two[1]["parts"] == one[1]["parts"] and len(one[1]["parts"]) > 4
    assert (two[1]["rows_read"], two[1]["errors"]) == (one[1]["rows_read"], one[1]["errors"])
    answered = [json.loads(record) for record in two[0].splitlines()]
    # predictions: neither error records nor explanations (not captured: drift would weigh
    # their rows, most often predicted already, twice)
    answered = [r for r in answered if "error" not in r and not r["id"].startswith("why-")]
    captured = [line for path in (tmp_path / "capture-2").rglob("*.jsonl")
                for line in path.read_text().splitlines()]
    assert len(captured) >= len(answered) > 100
    assert not [line for line in captured if json.loads(line)["id"].startswith("why-")]
    # every worker's flushes in the job's own folders, each record naming it (what erasing
    # the job erases: model_api.capture.store.erase_job)
    job_id = parse_key(job.bucket, key, version).job_id
    assert {path.parent.name for path in (tmp_path / "capture-2").rglob("*.jsonl")} == {
        f"job-{job_id}"}
    assert {json.loads(line)["job_id"] for line in captured} == {job_id}


class LateWorkers(workers.ChunkWorkers):
    """ChunkWorkers that become ready only once `released` is set (as a cold fork server's
    do, about 1 s into a job), counting the chunks submitted to them."""

    released = threading.Event()
    submitted = 0

    def _start(self) -> None:
        assert LateWorkers.released.wait(timeout=60)
        super()._start()

    def submit(self, lines: Any, first_number: int) -> Any:
        LateWorkers.submitted += 1
        return super().submit(lines, first_number)


def test_the_next_chunk_goes_to_the_workers_while_the_runner_works_its_own(
        cloud: Cloud, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given workers that start while the runner works the job's first chunk itself, when
    they are ready, then the next chunks go to them at once, while the runner's chunk is still
    worked (on a thread of the runner's own, not the one that hands chunks out), and the
    records are those of one process, byte for byte."""
    monkeypatch.setattr(workers, "MIN_POOL_BYTES", 0)
    monkeypatch.setattr(batch_job.workers, "ChunkWorkers", LateWorkers)
    LateWorkers.released.clear()
    LateWorkers.submitted = 0
    original = batch_job.chunk_part
    runners: list[str] = []
    went_meanwhile: list[int] = []

    def runner_chunk(*args: Any) -> Any:
        runners.append(threading.current_thread().name)
        if len(runners) == 1:  # the first chunk: the workers start, and get the next ones
            LateWorkers.released.set()
            deadline = time.monotonic() + 30
            while LateWorkers.submitted < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            went_meanwhile.append(LateWorkers.submitted)
        return original(*args)

    monkeypatch.setattr(batch_job, "chunk_part", runner_chunk)
    lines = mixed_lines(120)
    key, version = upload_lines(cloud, lines, "late-workers")
    job = settings(cloud, models_dir, key, version, chunk_bytes=2000, batch_rows=8, workers=2)
    batch_job.run_job(job, s3=cloud.s3, store=cloud.store)
    together, marker = parts(cloud, job)
    assert runners[:1] and runners[0].startswith("chunk") and went_meanwhile[0] >= 2
    assert len(marker["parts"]) > len(runners) + 2  # the workers worked the rest
    cloud.s3.delete_object(Bucket=job.bucket, Key=parse_key(job.bucket, key,
                                                            version).checkpoint_key)
    alone = settings(cloud, models_dir, key, version, chunk_bytes=2000, batch_rows=8,
                     workers=1, table=None)
    batch_job.run_job(alone, s3=cloud.s3)
    assert together == parts(cloud, alone)[0]


def test_a_worker_that_dies_fails_the_attempt_as_transient_and_the_retry_resumes(
        cloud: Cloud, models_dir: Path, recorded: type[Recorded]) -> None:
    """Given a worker killed (SIGKILL) after the job's third chunk, when the job runs, then the
    attempt fails with BrokenProcessPool, a transient fault ("to be retried"), its workers are
    all gone, and the retry resumes from the checkpoint to the same records as one process."""
    lines = mixed_lines(90)
    key, version = upload_lines(cloud, lines, "killed")
    job = settings(cloud, models_dir, key, version, chunk_bytes=2000, batch_rows=8, workers=2)
    recorded.fault_at, recorded.fault = 3, "kill"
    with pytest.raises(Exception) as failed:
        batch_job.run_job(job, s3=cloud.s3, store=cloud.store)
    assert type(failed.value).__name__ == "BrokenProcessPool" and is_transient(failed.value)
    record = cloud.store.get(job.job_id) or {}
    assert record["status"] == "running"
    assert record["reason"].startswith("attempt failed, to be retried: BrokenProcessPool")
    assert gone(recorded.made[0].pids)
    obj = parse_key(job.bucket, key, version)
    resumed_at = json.loads(cloud.text(obj.checkpoint_key))["next_chunk"]
    assert resumed_at >= 1
    recorded.fault_at = None
    batch_job.run_job(job, s3=cloud.s3, store=cloud.store)
    assert (cloud.store.get(job.job_id) or {})["status"] == "succeeded"
    retried, _ = parts(cloud, job)
    cloud.s3.delete_object(Bucket=job.bucket, Key=obj.checkpoint_key)
    alone = settings(cloud, models_dir, key, version, chunk_bytes=2000, batch_rows=8,
                     workers=1, table=None)
    batch_job.run_job(alone, s3=cloud.s3)
    assert retried == parts(cloud, alone)[0]


def test_sigterm_stops_the_workers(cloud: Cloud, models_dir: Path,
                                   recorded: type[Recorded]) -> None:
    """Given a job whose runner gets SIGTERM (Terminated) while its workers run chunks, then
    the attempt fails as transient and every worker is gone when run_job returns."""
    key, version = upload_lines(cloud, mixed_lines(120), "terminated")
    job = settings(cloud, models_dir, key, version, chunk_bytes=2000, batch_rows=8, workers=2)
    recorded.fault_at, recorded.fault = 4, "terminated"
    with pytest.raises(Terminated):
        batch_job.run_job(job, s3=cloud.s3, store=cloud.store)
    (pool,) = recorded.made
    assert len(pool.pids) == 2 and gone(pool.pids, within=0.5)


WORKERS_THEN_WAIT = """
import sys, time
from pathlib import Path
from batch import workers
pool = workers.ChunkWorkers(2, Path(sys.argv[1]), None, 4)
futures = [pool.submit([b'{"inputs": []}'] * 50, 1) for _ in range(4)]
[future.result() for future in futures]
print(" ".join(map(str, pool.pool._processes)), flush=True)
time.sleep(60)
"""


def test_workers_die_with_a_killed_runner(models_dir: Path) -> None:
    """Given a process whose chunk workers are up, when it is killed with SIGKILL (nothing of
    it runs after that), then its workers end too (PR_SET_PDEATHSIG): no orphans."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "layers/serving/python")])}
    runner = subprocess.Popen([sys.executable, "-c", WORKERS_THEN_WAIT,
                               str(models_dir / MODEL / "1")], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert runner.stdout is not None
        pids = {int(pid) for pid in runner.stdout.readline().split()}
        assert len(pids) == 2 and not gone(pids, within=0.2)
        runner.kill()
        runner.wait(timeout=10)
        assert gone(pids)
    finally:
        runner.kill()


def test_worker_count() -> None:
    """One per CPU unless told; in-process for a small input or one CPU; capped so that the
    workers' models fit half the memory."""
    big = workers.MIN_POOL_BYTES
    assert workers.worker_count(0, big, 1 << 20, cpus=8, memory=16 << 30) == 8
    assert workers.worker_count(3, big, 1 << 20, cpus=8, memory=16 << 30) == 3
    assert workers.worker_count(0, big - 1, 1 << 20, cpus=8, memory=16 << 30) == 1
    assert workers.worker_count(0, big, 1 << 20, cpus=1, memory=16 << 30) == 1
    assert workers.worker_count(0, big, 3 << 30, cpus=8, memory=16 << 30) == 2
    assert workers.worker_count(0, big, 20 << 30, cpus=8, memory=16 << 30) == 1



RUNNER_AFTER_PRELOAD = """
import sys
from batch import workers
for name in workers.PRELOAD:
    __import__(name)
before = set(sys.modules)
import batch.runner
print(" ".join(sorted(set(sys.modules) - before - {"batch.runner"})))
"""


def test_the_fork_server_imports_what_the_runner_imports() -> None:
    """Given the fork server's imports, when a worker runs `batch.runner` again (multiprocessing
    does so with the main module of `python -m batch.runner`), then it imports nothing more:
    no worker pays for the job's modules and boto3 again."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "layers/serving/python")])}
    done = subprocess.run([sys.executable, "-c", RUNNER_AFTER_PRELOAD], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [], f"imported by batch.runner alone: {done.stdout[:500]}"
