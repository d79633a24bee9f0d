"""`make bench ONLY=large`: a model too large for a layer, read from the model store (issue 21).

Models (generated, cached in build/large-models/): transformer encoders of 150 MB and 400 MB
exported by PyTorch (model_export.large; mostly a token embedding), and a 400 MB stack of
MatMul layers built with onnx's helpers (`dense`: every weight a MatMul's, the case
onnxruntime's pre-packing copies). Each is kept as the store keeps it (model_export.weights:
its graph and one file of its weights) on a local S3 (the moto server `make serve` runs, in
its own process). With MODEL_API_BIG_JOBS=1 (or --big) a 2.2 GB embedding model in the
external-data format too, read from files: moto reads the whole object for every ranged GET,
so a 2.2 GB object's 132 ranges would copy 290 GB.

- read: the store's read of the weights (model_api.store.fetch_into: parallel ranged GETs
  straight into one buffer, sha256 on the stream) against a plain boto3
  `get_object().read()` of the same object to memory, in turns in one child process, medians
  of 3: the ratio is plain / store (>= 0.8 is the goal); the same reading code on the local
  file (its own cost: moto reads the whole object for every range, S3 does not); then
  onnxruntime's session time on the checked buffer (model_api.model.session_on_weights);
- memory: a fresh child's peak resident memory (VmHWM) over the whole LoadedModel.load from
  the store, less its resident memory before it, against the size; and what stays resident
  after; with the weights in place (the default) and copied (MODEL_API_WEIGHTS=copy:
  onnxruntime's own copy, pre-packed);
- warm: an infer request through the pipeline (decode, run, encode) against raw session.run
  on the same arrays, interleaved, 1 row; and session.run at 1 and 32 rows with the weights
  in place (no pre-packing) against copied (pre-packed).

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ROOT, run_child, scaled, summary, time_interleaved, write_child_result

CACHE = ROOT / "build" / "large-models"
BUCKET = "bench-model-store"
KEY = "models/large/1/"
BIG_VARIABLE = "MODEL_API_BIG_JOBS"


def store_form(model: Path, work: Path) -> tuple[Path, dict[str, Path]]:
    """A version folder as a layer holds it (the manifest naming the two stored objects) and
    the objects' files by key (model_export.weights: the graph and its weights' file)."""
    import onnx
    from model_api.integrity import sha256_of

    from model_export.artifact import signature
    from model_export.weights import DATA_FILE, split, store_section

    data_path = model.with_name(DATA_FILE)
    graph, data = split(model.read_bytes(),
                        data_path.read_bytes() if data_path.is_file() else None)
    folder = work / "large" / "1"
    folder.mkdir(parents=True)
    files = {KEY + "model.onnx": work / "model.onnx", KEY + DATA_FILE: work / DATA_FILE}
    files[KEY + "model.onnx"].write_bytes(graph)
    files[KEY + DATA_FILE].write_bytes(data)
    (folder / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "name": "large", "version": "1", "platform": "onnxruntime_onnx",
        "model_file": "model.onnx", "sha256": sha256_of(graph),
        **signature(onnx.load_from_string(graph)),
        "store": store_section(graph, data, KEY + "model.onnx", KEY + DATA_FILE)}))
    return folder, files


def _child_env(endpoint: str) -> dict[str, str]:
    serving = str(ROOT / "layers" / "serving" / "python")
    return {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), serving,
                                                        os.environ.get("PYTHONPATH")]))}


def measure_model(label: str, model: Path, endpoint: str | None, work: Path) -> dict[str, Any]:
    """One model's measurements (see the module's docstring); `endpoint` None: from files."""
    folder, files = store_form(model, work)
    graph_key, data_key = list(files)
    env = _child_env(endpoint or "")
    if endpoint is not None:
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        for key, path in files.items():
            s3.upload_file(str(path), BUCKET, key)
    where = ["--files", json.dumps({k: str(v) for k, v in files.items()})]
    size = sum(path.stat().st_size for path in files.values())
    read = run_child("bench.large", ["--child", "read", "--folder", str(folder),
                                     "--repeats", str(scaled(3, 1)), *where], env)
    loads = {mode: run_child("bench.large", ["--child", "load", "--folder", str(folder),
                                             *where],
                             {**env, "MODEL_API_WEIGHTS": mode,
                              "BENCH_LARGE_S3": "1" if endpoint else ""})
             for mode in ("in-place", "copy")}
    if endpoint is not None:
        for key in (graph_key, data_key):
            s3.delete_object(Bucket=BUCKET, Key=key)
    mb = size / 2**20
    return {"model": label, "bytes": size, "from": "local S3" if endpoint else "files",
            **read, "ratio_plain_over_store": round(read["plain_s"] / read["store_s"], 2),
            **{f"{mode.replace('-', '_')}_{key}": value for mode, found in loads.items()
               for key, value in found.items()},
            "peak_over_size": round(loads["in-place"]["peak_mb"] / mb, 2),
            "copy_peak_over_size": round(loads["copy"]["peak_mb"] / mb, 2)}


def run(big: bool | None = None) -> list[dict[str, Any]]:
    """Each model's measurements (see the module's docstring)."""
    from local_api.background import free_port, wait_until_answering
    from model_export.large import dense, embedding, transformer

    big = os.environ.get(BIG_VARIABLE) == "1" if big is None else big
    with tempfile.TemporaryDirectory(prefix="bench-large-") as work:
        made: list[tuple[str, Callable[[], Path]]] = scaled(
            [("transformer 150MB", lambda: transformer(150, CACHE)),
             ("transformer 400MB", lambda: transformer(400, CACHE)),
             ("dense 400MB", lambda: dense(400, CACHE))],
            [("embedding 20MB", lambda: embedding(20, Path(work)))])
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
            results = [measure_model(label, make(), endpoint, Path(work) / f"m{i}")
                       for i, (label, make) in enumerate(made)]
        finally:
            server.terminate()
            server.wait(timeout=20)
        if big:
            model = embedding(2200, CACHE, external=True)
            results.append(measure_model("embedding 2.2GB", model, None, Path(work) / "big"))
        return results


# ------------------------------------------------------------------------ child processes
def _rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


class _FileRanges:
    """Ranges of local files by key (os.preadv): the store's reading code without the store,
    to tell its own cost (threads, sha256) from moto's: moto reads the whole object for every
    ranged GET (a 1 KiB range of a 150 MB object took 0.11 s, the whole object 0.29 s), which
    S3 does not."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files

    def read_range_into(self, key: str, start: int, out: memoryview) -> int:
        with open(self.files[key], "rb") as handle:
            return os.preadv(handle.fileno(), [out], start)


def _stored(folder: Path) -> tuple[Any, Any]:
    from model_api.manifest import load_manifest
    from model_api.store import StoredObject, external_data

    manifest = load_manifest(folder / "manifest.json")
    graph = StoredObject.from_manifest(dict(manifest.extra), manifest.sha256)
    return graph, external_data(dict(manifest.extra))


def _child_read(folder: Path, files: dict[str, str], repeats: int) -> dict[str, Any]:
    """plain read vs fetch_into, in turns, medians; the same reading code on local files;
    onnxruntime's session time on the checked buffer."""
    from model_api.model import CPU, session_on_weights
    from model_api.store import aligned_buffer, fetch_into, fetch_verified

    graph, data = _stored(folder)
    from_files = _FileRanges(files)
    if os.environ.get("AWS_ENDPOINT_URL"):
        import boto3
        from model_api.aws.model_store import S3Ranges

        s3 = boto3.client("s3")
        store: Any = S3Ranges(BUCKET, s3)

        def plain() -> bytes:
            return bytes(s3.get_object(Bucket=BUCKET, Key=data.key)["Body"].read())
    else:
        store = from_files

        def plain() -> bytes:
            return Path(files[data.key]).read_bytes()
    plain_s, store_s = [], []
    weights = aligned_buffer(data.size)
    for _ in range(repeats):
        started = time.perf_counter()
        plain_bytes = plain()
        plain_s.append(time.perf_counter() - started)
        del plain_bytes
        started = time.perf_counter()
        fetch_into(store, data, weights)
        store_s.append(time.perf_counter() - started)
    started = time.perf_counter()
    fetch_into(from_files, data, weights)
    file_s = time.perf_counter() - started
    graph_bytes = fetch_verified(store, graph)
    started = time.perf_counter()
    session_on_weights(graph_bytes, weights, data, list(CPU), None)
    session_s = time.perf_counter() - started
    store_median = statistics.median(store_s)
    return {"plain_s": round(statistics.median(plain_s), 3), "file_s": round(file_s, 3),
            "store_s": round(store_median, 3),
            "store_mb_per_s": round(data.size / 1e6 / store_median, 1),
            "session_s": round(session_s, 3)}


def _feeds(inputs: list[Any], rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    if inputs[0].name == "x":
        return {"x": rng.standard_normal((rows, inputs[0].shape[1]), dtype=np.float32)}
    ids = rng.integers(0, 1000, (rows, 16), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def _child_load(folder: Path, files: dict[str, str]) -> dict[str, Any]:
    """Peak and resident memory of LoadedModel.load from the store; warm overhead; session.run
    at 1 and 32 rows."""
    import onnxruntime as ort
    from model_api.aws.model_store import S3Ranges
    from model_api.limits import API_REQUEST
    from model_api.model import LoadedModel
    from model_api.pipeline import Pipeline

    store: Any = S3Ranges(BUCKET) if os.environ.get("BENCH_LARGE_S3") else _FileRanges(files)
    if isinstance(store, S3Ranges):
        store.client  # noqa: B018 - boto3's client in the baseline, as on Lambda
    baseline = _rss_mb()
    started = time.perf_counter()
    loaded = LoadedModel.load(folder, store=store)
    load_s = time.perf_counter() - started
    peak = _rss_mb("VmHWM") - baseline
    resident = _rss_mb() - baseline
    session: ort.InferenceSession = loaded.session
    inputs = session.get_inputs()
    datatype = "FP32" if inputs[0].name == "x" else "INT64"
    one = _feeds(inputs, 1)
    body = json.dumps({"inputs": [{"name": n, "shape": list(a.shape), "datatype": datatype,
                                   "data": a.ravel().tolist()} for n, a in one.items()]}
                      ).encode()
    pipeline = Pipeline(API_REQUEST, ())
    many = _feeds(inputs, 32)
    count, seconds = scaled(100, 5), scaled(8.0, 0.5)
    samples = time_interleaved({
        "served": lambda: pipeline.handle(loaded, body, {}),
        "raw": lambda: session.run(None, one),
        "raw32": lambda: session.run(None, many)}, count, seconds, warmup=scaled(5, 1))
    served, raw = summary(samples["served"]), summary(samples["raw"])
    return {"load_s": round(load_s, 3), "baseline_mb": round(baseline, 1),
            "peak_mb": round(peak, 1), "resident_mb": round(resident, 1),
            "served": served, "raw": raw, "raw32": summary(samples["raw32"]),
            "overhead_ms": round(served["p50_ms"] - raw["p50_ms"], 3)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="make bench ONLY=large's child processes")
    parser.add_argument("--child", choices=("read", "load"), required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--files", required=True, help="the stored objects' files by key")
    args = parser.parse_args(argv)
    files = json.loads(args.files)
    if args.child == "read":
        write_child_result(lambda: _child_read(args.folder, files, args.repeats))
    else:
        write_child_result(lambda: _child_load(args.folder, files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
