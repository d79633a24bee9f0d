"""Batch: the batch runner's rows/s on the CPU against a raw onnxruntime loop over the same rows.

What each number includes (rows/s = input rows / those seconds):

- raw loop (`raw_rows_per_s`, the target's baseline): `InferenceSession.run` over the array
  already in memory, at 256 … 16,384 rows per call, the serving library's session options;
  a fresh session per pass, not counted (its first runs, which allocate memory, are); best of
  two passes. No I/O, no process start.
- raw job (`raw_job_rows_per_s`): the least a program doing the runner's job could do, no
  resumability: create the session, GET the whole .npy from the same S3, the raw loop at its
  best batch size, PUT one .npy per model output, then a `_SUCCESS.json` naming them (the
  runner's S3 writes end with one: the same S3 reads and writes). The honest end-to-end
  baseline.
- runner "default" (`runner_rows_per_s`): `batch.job.run_job` in this process (no process
  start: the runner's import and interpreter start are not counted, like the raw job's; its
  S3 client and jobs-table resource are made before the clock starts, as the raw job's S3
  client is) with
  its default settings: the model load, the jobs table updates, every S3 read, the outputs'
  multipart uploads (parts as the job goes, then their completion), checkpoint and the
  completion marker. It is the job's end-to-end speed against the local fake S3.
- runner "tuned" (`runner_tuned_rows_per_s`): the same, with the overrides set by hand: the raw
  loop's best batch size (`BATCH_ROWS`) and the whole file as one chunk (one checkpoint).
- runner "in run" (`runner_run_rows_per_s`): rows per second of the time the default job spent
  in `LoadedModel.run` (timed from outside), the batch-size trial's slower sizes included.
- The raw job and the default runner run ROUNDS times each, interleaved, and the best of each
  is kept (the same for JSON Lines): on 2 shared cores one run of either moves by 2x. The
  medians of the same rounds come beside them (`*_median_rows_per_s`, `*ratio*_median`): a
  best-of ratio swings with whichever side had the luckiest round (the raw job's rounds
  spread by 25 % where the runner's spread by 6 %, digits-cnn, one run on 2 cores).
- fixed seconds a job (`raw_job_fixed_s`, `runner_fixed_s`): the time of a job of FIXED_ROWS
  rows, each program's cost per job that does not grow with the input (the session or model
  load; the runner's head, checkpoint, jobs-table and marker requests); "per row"
  (`*_per_row_rows_per_s`, `ratio_per_row_raw_job`): rows/s of the rest of the big job, what a
  long job of the same program tends to.

- async path (`async_rows_per_s`): the same .npy as an asynchronous job over HTTP, as a client
  with only the API runs it (`make serve`'s local API and its local stack, local_api.batch.stack):
  from the start of the PUT to `upload_url` to the last output downloaded through
  `output_urls`, polling the job every 0.1 s. It adds to the runner: the upload through the
  presigned URL, the S3 event's delivery to the trigger (polled each second), the runner's
  process start and imports, the status polls and the downloads.

S3 and the jobs table are a moto server on 127.0.0.1 (as `make batch-local` uses), in a
process of its own so that the fake S3 does not share our interpreter's lock, but on the same
2 cores: its request handling and copying take CPU time the model would otherwise have.
"""

from __future__ import annotations

import io
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from model_api.aws.capture import DIR_ENV as CAPTURE_DIR_ENV
from model_api.model import CPU

from bench.common import BUILT_TEMPLATE, MODELS_DIR, scaled
from bench.payloads import example_inputs
from local_api.background import HOST, free_port, serving, wait_until_answering

# Rows per model (.npy fits numeric inputs only): 96, 120 and 31 MB, so that a raw job takes
# about half a second or more on 2 cores (at 400,000 rows diabetes-linear's took 35 ms, less
# than the runner's fixed requests alone). A quick pass takes QUICK_ROWS of each.
ROWS = {"breast-cancer-mlp": 800_000, "diabetes-linear": 3_000_000, "digits-cnn": 120_000}
BATCH_SIZES = (256, 1024, 4096, 16384)
QUICK_ROWS = 2048
# Lines of the JSON Lines runs (one request of one row per line, the examples cycled): every
# seed model, text-topics (a BYTES input: JSON Lines only) too.
JSONL_ROWS = {"breast-cancer-mlp": 50_000, "diabetes-linear": 50_000, "digits-cnn": 10_000,
              "text-topics": 50_000}
# The raw job and the runner run this many times each, interleaved (the best of each is kept:
# the run least disturbed by the other work on the shared cores); a quick pass once. Six, not
# four: the same raw loop over the same rows moved by 0.28-0.36M rows/s within a minute on
# these cores, and a 0.25-0.5 s job's best of four still swung its ratio by 0.1.
ROUNDS = 6
# A job of this many rows measures each program's fixed cost per job (session or model load,
# requests that do not grow with the input), taken off both for the "per row" ratio.
FIXED_ROWS = 1024


@contextmanager
def moto_server(capture: bool = True) -> Iterator[None]:
    """A moto server process on a free loopback port, and boto3's environment pointing at it;
    `capture`: with data capture into a temporary folder (the batch runner's), not onto
    stdout."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = dict(os.environ)
    # The runner captures as the deployed one does (the registry's sampling), into a folder
    # here as there into its bucket: never onto stdout, which is the bench's table
    captured = tempfile.TemporaryDirectory(prefix="bench-capture-")
    os.environ.update({"AWS_ENDPOINT_URL": f"http://{HOST}:{port}",
                       "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1",
                       **({CAPTURE_DIR_ENV: captured.name} if capture else {})})
    os.environ.pop("AWS_PROFILE", None)
    try:
        wait_until_answering(port, server, "/moto-api/")
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        captured.cleanup()
        server.terminate()
        server.wait(timeout=20)


@contextmanager
def metrics_to_stderr() -> Iterator[None]:
    """File descriptor 1 is stderr's while the block runs: the runner's metrics (EMF lines,
    which Lambda and Batch send to CloudWatch from stdout), its worker processes' and the fork
    server's included (they inherit the descriptor), are logs here, not lines of the bench's
    table."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def input_rows(model: str, rows: int) -> np.ndarray:
    """The model's example rows (its single input's) repeated to `rows` rows."""
    _, inputs = example_inputs(model, rows)
    (array,) = inputs.values()
    return array


def raw_session(model_file: str, options: Any, providers: Sequence[str]) -> Any:
    """An `InferenceSession` of `model_file` on `providers` (CUDA's libraries loaded first
    when it asks for CUDA: batch.loading.preload_cuda). Raises RuntimeError when onnxruntime
    fell back from the first provider asked for (a GPU figure that is the CPU's would lie)."""
    import onnxruntime as ort

    from batch.loading import CUDA, preload_cuda

    if CUDA in providers:
        preload_cuda()
    session = ort.InferenceSession(model_file, sess_options=options, providers=list(providers))
    if session.get_providers()[0] != providers[0]:
        raise RuntimeError(f"asked for {providers[0]}, onnxruntime gave "
                           f"{session.get_providers()}")
    return session


def raw_loop(model: str, rows: np.ndarray, sizes: Sequence[int] = BATCH_SIZES,
             providers: Sequence[str] = CPU) -> dict[int, float]:
    """Rows per second of `InferenceSession.run` over `rows`, per batch size of `sizes`: the
    best of two passes, each in a fresh session on `providers` as a job has (its first runs
    allocate memory too)."""
    from model_api.model import session_options

    from batch.loading import version_dir

    model_file = str(version_dir(MODELS_DIR, model, None) / "model.onnx")
    speeds = {}
    for size in sizes:
        passes = []
        for _ in range(2):
            session = raw_session(model_file, session_options(), providers)
            name = session.get_inputs()[0].name
            outputs = [output.name for output in session.get_outputs()]
            started = time.perf_counter()
            for first in range(0, len(rows), size):
                session.run(outputs, {name: rows[first:first + size]})
            passes.append(time.perf_counter() - started)
        speeds[size] = len(rows) / min(passes)
    return speeds


def best_size(speeds: dict[int, float]) -> int:
    """The batch size of the most rows per second (raw_loop's answer)."""
    return max(speeds, key=lambda size: speeds[size])


def raw_job(model: str, path: Path, batch_rows: int, providers: Sequence[str] = CPU) -> float:
    """Rows per second of the runner's job done by hand: session (on `providers`), one GET of
    the .npy from S3, the raw loop, one PUT of a .npy per output, a PUT of the marker naming
    them (no checkpoints, no jobs table)."""
    from model_api.model import session_options

    from batch.aws import client
    from batch.loading import version_dir
    from local_api.batch import loop

    s3 = client("s3")
    key = f"batch/input/{model}/raw-{batch_rows}.npy"
    s3.upload_file(str(path), loop.BUCKET, key)
    started = time.perf_counter()
    session = raw_session(str(version_dir(MODELS_DIR, model, None) / "model.onnx"),
                          session_options(), providers)
    name = session.get_inputs()[0].name
    outputs = [output.name for output in session.get_outputs()]
    rows = np.load(io.BytesIO(s3.get_object(Bucket=loop.BUCKET, Key=key)["Body"].read()))
    results: list[list[np.ndarray]] = [[] for _ in outputs]
    for first in range(0, len(rows), batch_rows):
        ran = session.run(outputs, {name: rows[first:first + batch_rows]})
        for into, result in zip(results, ran, strict=True):
            into.append(result)
    written = []
    for output, parts in zip(outputs, results, strict=True):
        buffer = io.BytesIO()
        np.save(buffer, np.concatenate(parts))
        written.append(f"raw-output/{model}/{output}.npy")
        s3.put_object(Bucket=loop.BUCKET, Key=written[-1], Body=buffer.getvalue())
    put_marker(s3, model, written)
    return len(rows) / (time.perf_counter() - started)


def put_marker(s3: Any, model: str, outputs: list[str]) -> None:
    """A raw job's last write: a `_SUCCESS.json` naming its outputs, as the runner's is."""
    from local_api.batch import loop

    s3.put_object(Bucket=loop.BUCKET, Key=f"raw-output/{model}/_SUCCESS.json",
                  Body=json.dumps({"outputs": outputs}).encode(), ContentType="application/json")


def per_row_speed(rows: int, speed: float, fixed_s: float) -> float:
    """Rows per second of a job of `rows` rows at `speed` rows/s, its `fixed_s` seconds per
    job (measured on a FIXED_ROWS job) taken off: what a long job of the same program tends
    to. The rest is taken as at least a tenth of the job, so that noise in the fixed part
    cannot make it look arbitrarily fast."""
    seconds = rows / speed
    return rows / max(seconds - fixed_s, seconds / 10)


def write_jsonl(model: str, count: int, path: Path) -> None:
    """`count` lines of the model's example rows, one request of one row each (as
    `python -m local_api.batch.sample` writes them)."""
    from local_api.batch.sample import write_jsonl as write

    write(path, *example_inputs(model, 1024), count)


def raw_jsonl_job(model: str, path: Path, batch_rows: int) -> float:
    """Rows per second of a JSON Lines job done by hand, the least a program doing the
    runner's JSON Lines job does: session, one GET of the whole object, `json.loads` of each
    line into arrays of the model's dtypes, the loop at `batch_rows` rows per run (lines of one
    row each, stacked), each line's answer encoded as the protocol's response with
    `json.dumps`, one PUT of all the answers, a PUT of the marker. No checks of the requests
    (shapes, datatypes, limits), no error records, no resumability: what the runner adds to it
    is its price."""
    from model_api.datatypes import numpy_dtype
    from model_api.manifest import MANIFEST_FILE, load_manifest
    from model_api.model import session_options

    from batch.aws import client
    from batch.loading import version_dir
    from local_api.batch import loop

    s3 = client("s3")
    key = f"batch/input/{model}/raw-{batch_rows}.jsonl"
    s3.upload_file(str(path), loop.BUCKET, key)
    folder = version_dir(MODELS_DIR, model, None)
    manifest = load_manifest(folder / MANIFEST_FILE)
    started = time.perf_counter()
    session = raw_session(str(folder / "model.onnx"), session_options(), CPU)
    outputs = [output.name for output in session.get_outputs()]
    types = {spec.name: (numpy_dtype(spec.datatype), spec.datatype) for spec in manifest.inputs}
    out_types = {spec.name: spec.datatype for spec in manifest.outputs}
    lines = s3.get_object(Bucket=loop.BUCKET, Key=key)["Body"].read().splitlines()
    answers: list[bytes] = []
    for first in range(0, len(lines), batch_rows):
        requests = [json.loads(line) for line in lines[first:first + batch_rows]]
        feeds = {name: np.concatenate([
            np.asarray(next(i for i in r["inputs"] if i["name"] == name)["data"],
                       dtype=dtype).reshape(next(i for i in r["inputs"]
                                                 if i["name"] == name)["shape"])
            for r in requests]) for name, (dtype, _) in types.items()}
        ran = session.run(outputs, feeds)
        for row, request in enumerate(requests):
            answers.append(json.dumps({
                "model_name": manifest.name, "model_version": manifest.version,
                "id": request.get("id", ""),
                "outputs": [{"name": name, "datatype": out_types[name],
                             "shape": [1, *result.shape[1:]],
                             "data": result[row:row + 1].ravel().tolist()}
                            for name, result in zip(outputs, ran, strict=True)]},
                separators=(",", ":")).encode())
    s3.put_object(Bucket=loop.BUCKET, Key=f"raw-output/{model}/answers.jsonl",
                  Body=b"\n".join(answers) + b"\n")
    put_marker(s3, model, [f"raw-output/{model}/answers.jsonl"])
    return len(lines) / (time.perf_counter() - started)


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


def submit(model: str, path: Path, name: str) -> tuple[str, str, str]:
    """Upload `path` as the job input `name` of `model` to the local batch bucket and record
    the job as submitted (what the trigger does before the runner starts): its key, the
    object's version and the job's id."""
    from batch.jobs import SUBMITTED, JobStore
    from batch.keys import parse_key
    from local_api.batch import loop

    key = f"batch/input/{model}/{name}{path.suffix}"
    event = loop.upload(path, loop.BUCKET, key)
    version = event["detail"]["object"]["version-id"]
    job = parse_key(loop.BUCKET, key, version)
    JobStore(loop.TABLE).create({"job_id": job.job_id, "model": model, "status": SUBMITTED})
    return key, version, job.job_id


def runner_speed(model: str, path: Path, batch_rows: int, chunk_rows: int = 0,
                 chunk_bytes: int | None = None, gpu: bool = False) -> tuple[float, float]:
    """Rows per second of one whole runner job over the uploaded file (.npy or .jsonl; a fresh
    job each time),
    and rows per second of the time its model runs took. chunk_bytes None: the default. gpu:
    the job requires CUDA (as the image's runner with REQUIRE_GPU), else it runs on the CPU."""
    from batch import job as batch_job
    from batch.aws import client
    from batch.jobs import JobStore
    from local_api.batch import loop

    key, version, job_id = submit(
        model, path, f"bench-{batch_rows}-{chunk_rows}-{chunk_bytes}-{gpu:d}")
    store = JobStore(loop.TABLE)
    s3 = client("s3")  # made before the clock starts, as the raw job's is
    config = batch_job.JobConfig(bucket=loop.BUCKET, key=key, version_id=version,
                                 job_id=job_id, models_dir=MODELS_DIR, table=loop.TABLE,
                                 batch_rows=batch_rows, chunk_rows=chunk_rows,
                                 chunk_bytes=chunk_bytes, use_gpu=gpu, require_gpu=gpu,
                                 progress_seconds=3600)
    with time_in_runs() as spent:
        started = time.perf_counter()
        summary = batch_job.run_job(config, s3=s3, store=store)
        elapsed = time.perf_counter() - started
    rows = int(summary["rows_read"])
    # (no runs in this process: a JSON Lines job's worker processes ran the model)
    return rows / elapsed, rows / sum(spent) if spent else 0.0


def async_speed(api: str, model: str, path: Path) -> float:
    """Rows per second of `path` (.npy) as an asynchronous job over HTTP on the local API at
    `api`: upload to `upload_url`, poll the job, download every output from `output_urls`."""
    import httpx

    size = path.stat().st_size
    with httpx.Client(base_url=api, timeout=300) as client:
        job = client.post(f"/v2/models/{model}/jobs", json={"size": size, "format": "npy"})
        job.raise_for_status()
        created = job.json()
        started = time.perf_counter()
        with path.open("rb") as body:
            httpx.put(created["upload_url"], content=body, timeout=300,
                      headers={"Content-Length": str(size)}).raise_for_status()
        while (record := client.get(created["status_url"]).json())["status"] not in (
                "succeeded", "failed"):
            time.sleep(0.1)
        if record["status"] != "succeeded":
            raise RuntimeError(f"the async job failed: {record.get('reason')}")
        for part in record["output_urls"]["parts"]:
            httpx.get(part["url"], timeout=300).raise_for_status()
        elapsed = time.perf_counter() - started
        client.delete(created["status_url"]).raise_for_status()
    return int(record["rows_read"]) / elapsed


def quiet_logs() -> None:
    """Only the libraries' news worth a line on the bench's stderr."""
    logging.getLogger("batch").setLevel(logging.ERROR)  # its CPU-only warning, once per job
    logging.getLogger("botocore").setLevel(logging.WARNING)  # "Found endpoint for s3 via ..."
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request of the async job


def run() -> list[dict[str, Any]]:
    """Per model: the raw loop at every batch size, the raw job, the runner by default and
    tuned by hand (.npy: the numeric models of ROWS), and JSON Lines (every model of
    JSONL_ROWS)."""
    from local_api.batch import loop

    quiet_logs()
    results = []
    with moto_server(), tempfile.TemporaryDirectory(prefix="bench-batch-") as work, \
            serving(BUILT_TEMPLATE, subprocess.DEVNULL) as port, metrics_to_stderr():
        loop.create_resources()
        for model in [*ROWS, *(name for name in JSONL_ROWS if name not in ROWS)]:
            result: dict[str, Any] = {"model": model}
            if model in ROWS:
                result.update(npy_result(model, Path(work), f"http://{HOST}:{port}"))
                best = result["raw_best_batch"]
            else:
                raw = raw_loop(model, input_rows(model, scaled(JSONL_ROWS[model], QUICK_ROWS)))
                best = best_size(raw)
            result.update(jsonl_result(model, Path(work), best))
            results.append(result)
    return results


def npy_result(model: str, work: Path, api: str) -> dict[str, Any]:
    """The .npy measures of one model (see the module's docstring), printed as they come."""
    count = scaled(ROWS[model], QUICK_ROWS)
    rows = input_rows(model, count)
    path = work / f"{model}.npy"
    np.save(path, rows)
    raw = raw_loop(model, rows)
    best = best_size(raw)
    small = work / f"{model}-small.npy"
    np.save(small, rows[:FIXED_ROWS])
    default = in_runs = fixed_job = fixed_runner = 0.0
    jobs, defaults = [], []  # every round's: the best of each, and the medians
    for _ in range(scaled(ROUNDS, 1)):  # interleaved
        jobs.append(raw_job(model, path, best))
        speed, run_speed = runner_speed(model, path, 0)
        defaults.append(speed)
        if speed > default:
            default, in_runs = speed, run_speed
        fixed_job = max(fixed_job, raw_job(model, small, best))
        fixed_runner = max(fixed_runner, runner_speed(model, small, 0)[0])
    job = max(jobs)
    tuned, _ = runner_speed(model, path, best, chunk_rows=count, chunk_bytes=0)
    over_http = async_speed(api, model, path)
    # Seconds per job that do not grow with the input, and rows/s of the rest
    small_rows = min(FIXED_ROWS, count)
    job_fixed_s, runner_fixed_s = small_rows / fixed_job, small_rows / fixed_runner
    job_per_row = per_row_speed(count, job, job_fixed_s)
    runner_per_row = per_row_speed(count, default, runner_fixed_s)
    print(f"batch: {model}: end to end, runner {default:,.0f} rows/s (tuned {tuned:,.0f}) vs "
          f"raw job {job:,.0f} rows/s (session, S3 GET, loop at b{best}, S3 PUTs): "
          f"{default / job:.2f}x ({tuned / job:.2f}x); fixed seconds a job "
          f"{runner_fixed_s:.3f} vs {job_fixed_s:.3f}, the rest "
          f"{runner_per_row / job_per_row:.2f}x; as an async job over HTTP "
          f"{over_http:,.0f} rows/s", file=sys.stderr)
    return {
        "rows": count,
        "raw_rows_per_s": {str(size): round(speed) for size, speed in raw.items()},
        "raw_best_batch": best, "raw_best_rows_per_s": round(raw[best]),
        "raw_job_rows_per_s": round(job),
        "runner_rows_per_s": round(default), "runner_tuned_rows_per_s": round(tuned),
        "runner_run_rows_per_s": round(in_runs),
        "async_rows_per_s": round(over_http),
        "ratio_async_runner": round(over_http / default, 2),
        "tuned": {"batch_rows": best, "chunk_rows": count, "chunk_bytes": 0},
        "ratio": round(default / raw[best], 2),
        "ratio_tuned": round(tuned / raw[best], 2),
        "ratio_raw_job": round(default / job, 2),
        "ratio_tuned_raw_job": round(tuned / job, 2),
        "raw_job_median_rows_per_s": round(statistics.median(jobs)),
        "runner_median_rows_per_s": round(statistics.median(defaults)),
        "ratio_raw_job_median": round(statistics.median(defaults) / statistics.median(jobs), 2),
        "rounds": scaled(ROUNDS, 1),
        "raw_job_fixed_s": round(job_fixed_s, 3),
        "runner_fixed_s": round(runner_fixed_s, 3),
        "raw_job_per_row_rows_per_s": round(job_per_row),
        "runner_per_row_rows_per_s": round(runner_per_row),
        "ratio_per_row_raw_job": round(runner_per_row / job_per_row, 2)}


def jsonl_result(model: str, work: Path, best: int) -> dict[str, Any]:
    """The JSON Lines measures of one model: its raw job at batch size `best` and the runner,
    ROUNDS each, interleaved, the best of each; printed as they come."""
    lines = scaled(JSONL_ROWS[model], QUICK_ROWS)
    jsonl = work / f"{model}.jsonl"
    write_jsonl(model, lines, jsonl)
    jobs, runners = [], []
    for _ in range(scaled(ROUNDS, 1)):  # interleaved; the best of each, and the medians
        jobs.append(raw_jsonl_job(model, jsonl, best))
        runners.append(runner_speed(model, jsonl, 0)[0])
    jsonl_job, jsonl_runner = max(jobs), max(runners)
    print(f"batch: {model}: JSON Lines ({lines:,} lines): runner {jsonl_runner:,.0f} rows/s vs "
          f"raw job {jsonl_job:,.0f} rows/s: {jsonl_runner / jsonl_job:.2f}x", file=sys.stderr)
    return {"jsonl_rows": lines, "jsonl_bytes": jsonl.stat().st_size,
            "jsonl_raw_job_rows_per_s": round(jsonl_job),
            "jsonl_runner_rows_per_s": round(jsonl_runner),
            "jsonl_ratio_raw_job": round(jsonl_runner / jsonl_job, 2),
            "jsonl_ratio_raw_job_median": round(statistics.median(runners)
                                                / statistics.median(jobs), 2)}


def runner_rows_per_s(rows: dict[str, int]) -> dict[str, float]:
    """Rows per second of the batch runner with its default settings (`runner_speed`: the whole
    job, S3 on a local moto server) over `rows[model]` of each model's example rows (numeric
    single-input models only: .npy). What `make cost` prices the batch path from."""
    from local_api.batch import loop

    quiet_logs()
    speeds = {}
    with moto_server(), tempfile.TemporaryDirectory(prefix="bench-batch-") as work:
        loop.create_resources()
        for model, count in rows.items():
            path = Path(work) / f"{model}.npy"
            np.save(path, input_rows(model, count))
            speeds[model], _ = runner_speed(model, path, 0)
    return speeds
