"""GPU: the batch image's runner on CUDA against onnxruntime's own loop and job on CUDA, and all
three on the CPU of the same machine.

`python -m bench.gpu [--rows N] [--rounds R] [--out FILE] [--allow-no-gpu]` measures digits-cnn
(the CNN) on `.npy` rows, with S3 and the jobs table on a local moto server as `make bench`'s
batch section (bench.batch) has them; each figure is that section's, on each device:

- raw loop: `InferenceSession.run` over the rows in host memory (each run copies its rows to the
  GPU and its outputs back, as the runner's runs do), per batch size, best of two passes;
- raw job: session, one S3 GET of the `.npy`, the raw loop at its best batch size, one PUT per
  output and the marker;
- runner: `batch.job.run_job` as the image's runner runs it: on CUDA with the GPU required
  (`REQUIRE_GPU=1`: an attempt without CUDA fails), at `BATCH_ROWS` 256, 1,024, 4,096 and 16,384
  and its default (0: timed on the first rows); on the CPU with `--cpu`'s settings (micro-batches
  side by side, one per CPU);
- the loud fallback: the runner's own process (`python -m batch.runner`) with the GPU hidden
  (`CUDA_VISIBLE_DEVICES` empty) must fail an attempt that requires the GPU (exit 1: "a GPU was
  required but CUDA is not active") and say "runs on the CPU" in one that only asked for it.

Raw jobs and runner jobs run `--rounds` times each, interleaved; the best of each is kept. The
card (nvidia-smi's name, driver and memory) and the CPU go into the results with the figures, and
a Markdown table for docs/performance.md is printed.

It needs onnxruntime-gpu with its CUDA libraries (the batch image's, batch/Dockerfile: on a
machine of your own, batch/README.md "On a GPU" says how to swap it in; the development
sandbox's GPU machines lack it, and `python -m bench.gpu_kit` packs what to carry there). On a
machine without CUDA it exits 3 before measuring, or, with `--allow-no-gpu`, measures the CPU
alone (what CI's test runs, at a few rows).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench import batch
from bench.common import MODELS_DIR, QUICK_ENV, machine, scaled

MODEL = "digits-cnn"
ROWS = 1_000_000  # 256 MB of 1x8x8 FP32 rows: about a second of an H100's raw loop
QUICK_ROWS = 2048
CUDA_SIZES = (256, 1024, 4096, 16384, 65536)
RUNNER_SIZES = (256, 1024, 4096, 16384, 0)  # 0: the runner's own trial
ROUNDS = 3
NO_GPU_EXIT = 3
REQUIRED_SAYS = "a GPU was required but CUDA is not active"
FALLBACK_SAYS = "runs on the CPU"


def card() -> dict[str, Any] | None:
    """The GPU as nvidia-smi names it ({"name", "driver", "memory_mib"}), None without one."""
    try:
        answer = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
             "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30,
            check=True).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None
    name, driver, memory = (part.strip() for part in answer.split(","))
    return {"name": name, "driver": driver, "memory_mib": int(memory)}


def cuda_missing() -> str | None:
    """Why a CUDA session cannot run here (None when it can): CUDA not in this onnxruntime
    build, or a session asked for CUDA and got the CPU (its libraries or the device missing)."""
    import onnxruntime as ort

    from batch.loading import CUDA, version_dir

    available = ort.get_available_providers()
    if CUDA not in available:
        return f"onnxruntime {ort.__version__} has no CUDA provider (available {available})"
    from model_api.model import session_options

    model_file = str(version_dir(MODELS_DIR, MODEL, None) / "model.onnx")
    try:
        batch.raw_session(model_file, session_options(), (CUDA, "CPUExecutionProvider"))
    except RuntimeError as error:
        return str(error)
    return None


def device_figures(path: Path, rows: int, sizes: tuple[int, ...], providers: tuple[str, ...],
                   gpu: bool, rounds: int) -> dict[str, Any]:
    """One device's raw loop, raw job and runner over the `.npy` at `path` (see the module's
    docstring); rows/s rounded, ratios to two places."""
    array = np.load(path)
    raw = batch.raw_loop(MODEL, array, sizes, providers)
    size = batch.best_size(raw)
    runner_sizes = RUNNER_SIZES if gpu else (0,)
    job = 0.0
    runner = dict.fromkeys(runner_sizes, 0.0)
    for _ in range(rounds):  # interleaved; the best of each
        job = max(job, batch.raw_job(MODEL, path, size, providers))
        for batch_rows in runner_sizes:
            runner[batch_rows] = max(runner[batch_rows],
                                     batch.runner_speed(MODEL, path, batch_rows, gpu=gpu)[0])
    return {
        "rows": rows, "providers": list(providers),
        "raw_rows_per_s": {str(k): round(v) for k, v in raw.items()},
        "raw_best_batch": size, "raw_best_rows_per_s": round(raw[size]),
        "raw_job_rows_per_s": round(job),
        "runner_rows_per_s": {str(k): round(v) for k, v in runner.items()},
        "ratio_raw_job": {str(k): round(v / job, 2) for k, v in runner.items()}}


def fallback(path: Path) -> dict[str, Any]:
    """The runner's process with the GPU hidden: an attempt that requires it, then one that
    only asks for it; each one's exit code and whether it said so (see the module's docstring)."""
    from local_api.batch import loop

    said: dict[str, Any] = {}
    for required in (True, False):
        key, version, job_id = batch.submit(MODEL, path, f"fallback-{required:d}")
        command = [sys.executable, "-m", "batch.runner", "--bucket", loop.BUCKET, "--key", key,
                   "--version-id", version, "--job-id", job_id, "--table", loop.TABLE,
                   "--models-dir", str(MODELS_DIR), *(["--require-gpu"] if required else [])]
        ran = subprocess.run(command, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
                             capture_output=True, text=True, timeout=300, check=False)
        expected = REQUIRED_SAYS if required else FALLBACK_SAYS
        said["required" if required else "asked"] = {
            "returncode": ran.returncode, "says": expected,
            "said": expected in ran.stderr,
            "line": next((line for line in ran.stderr.splitlines() if expected in line), None)}
    said["rule_holds"] = (said["required"]["returncode"] == 1 and said["required"]["said"]
                          and said["asked"]["returncode"] == 0 and said["asked"]["said"])
    return said


def markdown(results: dict[str, Any]) -> str:
    """The results as the table docs/performance.md records (rows/s; runner / raw job)."""
    lines = ["| device | raw loop, best size | raw job | runner, default | runner at "
             "BATCH_ROWS 256 / 1,024 / 4,096 / 16,384 | runner ÷ raw job (default) |",
             "|---|---|---|---|---|---|"]
    for name, figures in (("cuda", results.get("cuda")), ("cpu", results["cpu"])):
        if not figures:
            continue
        who = (f"CUDA, {results['card']['name']}" if name == "cuda" and results.get("card")
               else name.upper() if name == "cuda"
               else f"CPU, {results['machine']['cores']} cores")
        runner = figures["runner_rows_per_s"]
        sizes = " / ".join(f"{runner[str(size)]:,}" for size in RUNNER_SIZES[:-1]
                           if str(size) in runner) or "—"
        lines.append(f"| {who} | {figures['raw_best_rows_per_s']:,} "
                     f"(b{figures['raw_best_batch']}) | {figures['raw_job_rows_per_s']:,} | "
                     f"{runner['0']:,} | {sizes} | {figures['ratio_raw_job']['0']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=None,
                        help=f"rows of the .npy (default {ROWS:,}; {QUICK_ROWS:,} in a quick "
                             "pass, BENCH_QUICK=1)")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"raw and runner jobs per figure, the best kept (default {ROUNDS})")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--allow-no-gpu", action="store_true",
                        help="without CUDA, measure the CPU alone instead of exiting "
                             f"{NO_GPU_EXIT}")
    args = parser.parse_args(argv)
    rows = args.rows or scaled(ROWS, QUICK_ROWS)
    rounds = args.rounds or scaled(ROUNDS, 1)
    missing = cuda_missing()
    if missing and not args.allow_no_gpu:
        print(f"bench.gpu: no GPU to measure: {missing}", file=sys.stderr)
        return NO_GPU_EXIT
    results: dict[str, Any] = {"model": MODEL, "card": card(), "machine": machine(),
                               "quick": os.environ.get(QUICK_ENV) == "1",
                               "onnxruntime": __import__("onnxruntime").__version__,
                               "cuda_missing": missing}
    batch.quiet_logs()
    with batch.moto_server(), tempfile.TemporaryDirectory(prefix="bench-gpu-") as work, \
            batch.metrics_to_stderr():
        from local_api.batch import loop

        loop.create_resources()
        path = Path(work) / f"{MODEL}.npy"
        np.save(path, batch.input_rows(MODEL, rows))
        if not missing:
            results["cuda"] = device_figures(path, rows, CUDA_SIZES,
                                             ("CUDAExecutionProvider", "CPUExecutionProvider"),
                                             True, rounds)
            results["fallback"] = fallback(path)
        results["cpu"] = device_figures(path, rows, batch.BATCH_SIZES,
                                        ("CPUExecutionProvider",), False, rounds)
    if results.get("cuda"):
        results["ratio_cuda_cpu_runner"] = round(
            results["cuda"]["runner_rows_per_s"]["0"] / results["cpu"]["runner_rows_per_s"]["0"],
            2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(results))
    if "fallback" in results:
        print(f"loud fallback: {json.dumps(results['fallback'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
