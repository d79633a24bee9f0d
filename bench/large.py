"""`make bench ONLY=large`: a model too large for a layer, read from the model store (issue 21).

For each size (150 MB and 400 MB transformer encoders exported by PyTorch, model_export.large,
cached in build/large-models/), on a local S3 (the moto server `make serve` runs, in its own
process). No 2 GB case: moto reads the whole object for every ranged GET, so a 2.2 GB
object's 132 ranges would copy 290 GB; the opt-in test (MODEL_API_BIG_JOBS=1,
tests/model_registry/test_large_model.py) serves a 2.2 GB external-data model from files.

- load: the store's read (model_api.store.fetch_verified: parallel ranged GETs, sha256 on the
  stream) against a plain boto3 `get_object().read()` of the same object to memory, in turns
  in one child process, medians of 3: the ratio is plain / store (>= 0.8 is the goal); the
  same reading code on the local file (its own cost: moto reads the whole object for every
  range, S3 does not); then onnxruntime's own session time on those bytes;
- memory: a fresh child's peak resident memory (VmHWM) over the whole load
  (LoadedModel.load from the store) less its resident memory before it, against the size;
  and what stays resident after;
- warm: an infer request through the pipeline (decode, run, encode) against raw session.run
  on the same arrays, interleaved.

The quick pass (CI) uses a 20 MB embedding model built with onnx's helpers (no PyTorch) and a
few rounds: it proves the section runs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ROOT, run_child, scaled, summary, time_interleaved, write_child_result

CACHE = ROOT / "build" / "large-models"
BUCKET = "bench-model-store"
KEY = "models/large/1/model.onnx"


def _version_folder(model: Path, work: Path) -> Path:
    """A version folder as a layer holds it: the manifest (naming the stored objects), no file."""
    import onnx
    from model_api.integrity import file_sha256

    from model_export.artifact import signature

    folder = work / "large" / "1"
    folder.mkdir(parents=True)
    graph = onnx.load(model, load_external_data=False)
    store: dict[str, Any] = {"key": KEY, "bytes": model.stat().st_size}
    (folder / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "name": "large", "version": "1", "platform": "onnxruntime_onnx",
        "model_file": "model.onnx", "sha256": file_sha256(model), **signature(graph),
        "store": store}))
    return folder


def _child_env(endpoint: str) -> dict[str, str]:
    serving = str(ROOT / "layers" / "serving" / "python")
    return {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), serving,
                                                        os.environ.get("PYTHONPATH")]))}


def measure_size(mb: float, endpoint: str, work: Path) -> dict[str, Any]:
    import boto3

    from model_export.large import embedding, transformer

    model = embedding(mb, work) if scaled(False, True) else transformer(mb, CACHE)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.upload_file(str(model), BUCKET, KEY)
    size = model.stat().st_size
    folder = _version_folder(model, work / f"v{mb:g}")
    env = _child_env(endpoint)
    repeats = str(scaled(3, 1))
    download = run_child("bench.large", ["--child", "download", "--size", str(size),
                                         "--repeats", repeats, "--local", str(model)], env)
    load = run_child("bench.large", ["--child", "load", "--folder", str(folder)], env)
    s3.delete_object(Bucket=BUCKET, Key=KEY)
    return {"mb": mb, "bytes": size, **download, **load,
            "peak_over_size": round(load["peak_mb"] / (size / 2**20), 2),
            "ratio_plain_over_store": round(download["plain_s"] / download["store_s"], 2)}


def run() -> list[dict[str, Any]]:
    """Each size's measurements (see the module's docstring)."""
    from local_api.background import free_port, wait_until_answering

    sizes = scaled([150.0, 400.0], [20.0])
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "local_api.batch.s3", "--host", "127.0.0.1", "--port",
         str(port), "--access-key", "testing", "--secret-key", "testing"],
        env=_child_env(""), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_answering(port, server, "/moto-api/")
        endpoint = f"http://127.0.0.1:{port}"
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing"
                     ).create_bucket(Bucket=BUCKET)
        with tempfile.TemporaryDirectory(prefix="bench-large-") as work:
            return [measure_size(mb, endpoint, Path(work)) for mb in sizes]
    finally:
        server.terminate()
        server.wait(timeout=20)


# ------------------------------------------------------------------------ child processes
def _rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


class _FileRanges:
    """Ranges of a local file (os.pread): the store's reading code without the store, to tell
    its own cost (threads, sha256, join) from moto's: moto reads the whole object for every
    ranged GET (a 1 KiB range of a 150 MB object took 0.11 s, the whole object 0.29 s), which
    S3 does not."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY)

    def read_range_into(self, key: str, start: int, out: memoryview) -> int:
        return os.preadv(self.fd, [out], start)


def _child_download(size: int, repeats: int, local: Path) -> dict[str, Any]:
    """plain get_object().read() vs fetch_verified, in turns, medians; the same reading code on
    a local file; onnxruntime's time."""
    import boto3
    import onnxruntime as ort
    from model_api.aws.model_store import S3Ranges
    from model_api.integrity import sha256_of
    from model_api.model import session_options
    from model_api.store import StoredObject, fetch_verified

    s3 = boto3.client("s3")
    store = S3Ranges(BUCKET, s3)
    plain, stored, data = [], [], b""
    for _ in range(repeats):
        started = time.perf_counter()
        data = s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read()
        plain.append(time.perf_counter() - started)
        digest = sha256_of(data)
        del data
        started = time.perf_counter()
        data = fetch_verified(store, StoredObject(KEY, size, digest))
        stored.append(time.perf_counter() - started)
    started = time.perf_counter()
    ort.InferenceSession(data, sess_options=session_options(), providers=["CPUExecutionProvider"])
    session_s = round(time.perf_counter() - started, 3)
    digest = sha256_of(data)
    del data
    started = time.perf_counter()
    fetch_verified(_FileRanges(local), StoredObject(KEY, size, digest))
    file_s = time.perf_counter() - started
    return {"plain_s": round(statistics.median(plain), 3),
            "file_s": round(file_s, 3),
            "store_s": round(statistics.median(stored), 3),
            "store_mb_per_s": round(size / 1e6 / statistics.median(stored), 1),
            "session_s": session_s}


def _child_load(folder: Path) -> dict[str, Any]:
    """Peak and resident memory of LoadedModel.load from the store; warm overhead."""
    import onnxruntime as ort
    from model_api.aws.model_store import from_environment
    from model_api.limits import API_REQUEST
    from model_api.model import LoadedModel
    from model_api.pipeline import Pipeline

    os.environ["MODEL_STORE_BUCKET"] = BUCKET
    store = from_environment()
    assert store is not None
    store.client  # noqa: B018 - boto3's client in the baseline, as on Lambda
    baseline = _rss_mb()
    started = time.perf_counter()
    loaded = LoadedModel.load(folder, store=store)
    load_s = time.perf_counter() - started
    peak = _rss_mb("VmHWM") - baseline
    resident = _rss_mb() - baseline
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1000, (1, 16), dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    body = json.dumps({"inputs": [{"name": n, "shape": list(a.shape), "datatype": "INT64",
                                   "data": a.ravel().tolist()} for n, a in feeds.items()]}
                      ).encode()
    pipeline = Pipeline(API_REQUEST, ())
    session: ort.InferenceSession = loaded.session
    count, seconds = scaled(200, 5), scaled(10.0, 0.5)
    samples = time_interleaved({
        "served": lambda: pipeline.handle(loaded, body, {}),
        "raw": lambda: session.run(None, feeds)}, count, seconds, warmup=scaled(5, 1))
    served, raw = summary(samples["served"]), summary(samples["raw"])
    return {"load_s": round(load_s, 3), "baseline_mb": round(baseline, 1),
            "peak_mb": round(peak, 1), "resident_mb": round(resident, 1),
            "served": served, "raw": raw,
            "overhead_ms": round(served["p50_ms"] - raw["p50_ms"], 3)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="make bench ONLY=large's child processes")
    parser.add_argument("--child", choices=("download", "load"), required=True)
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--local", type=Path, help="the model's file (the local-file read)")
    args = parser.parse_args(argv)
    if args.child == "download":
        write_child_result(lambda: _child_download(args.size, args.repeats, args.local))
    else:
        write_child_result(lambda: _child_load(args.folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
