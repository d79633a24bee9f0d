"""Batch: the batch runner's rows/s on the CPU against a raw onnxruntime loop over the same rows.

The runner runs in-process (`batch.runner.run_job`) on a .npy input kept by a moto server on
127.0.0.1 (S3 and the jobs table, as `make batch-local` uses; in a process of its own, so
that the fake S3 does not share our interpreter's lock), as configured by default and tuned
(the raw loop's best batch size, larger chunks); the raw loop runs `InferenceSession.run` over
the same array in memory at several batch sizes, with the serving library's session options.
The runner's time includes its reads, checkpoints and writes: it is the job's real speed. The
time its model runs take (`LoadedModel.run`, timed from outside while the tuned job runs) tells
how much of the gap is the fake S3's and how much the runner's own.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import MODELS_DIR
from bench.http import HOST, free_port, wait_for
from bench.payloads import example_inputs

# Rows per model, enough for a dozen chunks of the runner; .npy fits numeric inputs only.
ROWS = {"breast-cancer-mlp": 400_000, "diabetes-linear": 400_000, "digits-cnn": 60_000}
BATCH_SIZES = (256, 1024, 4096, 16384)
TUNED_CHUNK_ROWS = 100_000  # the runner's default is 10,000: a checkpoint every 10,000 rows


@contextmanager
def moto_server() -> Iterator[None]:
    """A moto server process on a free loopback port, and boto3's environment pointing at it."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = dict(os.environ)
    os.environ.update({"AWS_ENDPOINT_URL": f"http://{HOST}:{port}",
                       "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    os.environ.pop("AWS_PROFILE", None)
    try:
        wait_for(port, server, "/moto-api/")
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.terminate()
        server.wait(timeout=20)


def input_rows(model: str, rows: int) -> np.ndarray:
    """The example request's rows repeated to `rows` rows."""
    (tensor,) = example_inputs(model, 4)
    examples = np.array(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    return np.resize(examples, (rows, *examples.shape[1:]))


def raw_loop(model: str, rows: np.ndarray) -> dict[int, float]:
    """Rows per second of `InferenceSession.run` over `rows`, per batch size: the best of two
    passes, each in a fresh session as a job has (its first runs allocate memory too)."""
    import onnxruntime as ort
    from model_api.model import CPU, session_options

    from batch.runner import version_dir

    model_file = str(version_dir(MODELS_DIR, model, None) / "model.onnx")
    speeds = {}
    for size in BATCH_SIZES:
        passes = []
        for _ in range(2):
            session = ort.InferenceSession(model_file, sess_options=session_options(),
                                           providers=list(CPU))
            name = session.get_inputs()[0].name
            outputs = [output.name for output in session.get_outputs()]
            started = time.perf_counter()
            for first in range(0, len(rows), size):
                session.run(outputs, {name: rows[first:first + size]})
            passes.append(time.perf_counter() - started)
        speeds[size] = len(rows) / min(passes)
    return speeds


@contextmanager
def time_in_runs() -> Iterator[list[float]]:
    """Seconds spent in `LoadedModel.run` while the block runs, appended to the yielded list."""
    from model_api.model import LoadedModel

    spent: list[float] = []
    original = LoadedModel.run

    def timed(self: LoadedModel, inputs: dict[str, np.ndarray],
              output_names: Sequence[str]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        try:
            return original(self, inputs, output_names)
        finally:
            spent.append(time.perf_counter() - started)

    LoadedModel.run = timed  # type: ignore[method-assign]
    try:
        yield spent
    finally:
        LoadedModel.run = original  # type: ignore[method-assign]


def runner_speed(model: str, path: Path, batch_rows: int, chunk_rows: int) -> tuple[float, float]:
    """Rows per second of one whole runner job over the uploaded file (a fresh job each time),
    and rows per second of the time its model runs took."""
    from batch import local, runner
    from batch.keys import parse_key

    key = f"batch/input/{model}/bench-{batch_rows}-{chunk_rows}.npy"
    event = local.upload(path, local.BUCKET, key)
    version = event["detail"]["object"]["version-id"]
    job = parse_key(local.BUCKET, key, version)
    settings = runner.Settings(bucket=local.BUCKET, key=key, version_id=version,
                               job_id=job.job_id, models_dir=MODELS_DIR, table=local.TABLE,
                               batch_rows=batch_rows, chunk_rows=chunk_rows, use_gpu=False,
                               progress_seconds=3600)
    with time_in_runs() as spent:
        started = time.perf_counter()
        summary = runner.run_job(settings)
        elapsed = time.perf_counter() - started
    rows = int(summary["rows_read"])
    return rows / elapsed, rows / sum(spent)


def run() -> list[dict[str, Any]]:
    """Per model: the raw loop at every batch size, the runner as configured and tuned."""
    from batch import local
    from batch.runner import Settings

    logging.getLogger("batch").setLevel(logging.ERROR)  # its CPU-only warning, once per job
    logging.getLogger("botocore").setLevel(logging.WARNING)  # "Found endpoint for s3 via ..."
    default_chunk = Settings(bucket="", key="", version_id="", job_id="",
                             models_dir=MODELS_DIR).chunk_rows
    results = []
    with moto_server(), tempfile.TemporaryDirectory(prefix="bench-batch-") as work:
        local.create_resources()
        for model, count in ROWS.items():
            rows = input_rows(model, count)
            path = Path(work) / f"{model}.npy"
            np.save(path, rows)
            raw = raw_loop(model, rows)
            best = max(raw, key=lambda size: raw[size])
            default, _ = runner_speed(model, path, 0, default_chunk)
            tuned, in_runs = runner_speed(model, path, best, TUNED_CHUNK_ROWS)
            results.append({
                "model": model, "rows": count,
                "raw_rows_per_s": {str(size): round(speed) for size, speed in raw.items()},
                "raw_best_batch": best, "raw_best_rows_per_s": round(raw[best]),
                "runner_rows_per_s": round(default), "runner_tuned_rows_per_s": round(tuned),
                "runner_run_rows_per_s": round(in_runs),
                "tuned": {"batch_rows": best, "chunk_rows": TUNED_CHUNK_ROWS},
                "ratio": round(default / raw[best], 2),
                "ratio_tuned": round(tuned / raw[best], 2)})
    return results
