"""What every section shares: paths, bounded timing loops, percentiles and the machine's state.

Timing loops stop at a count or a time budget, whichever comes first, so `make bench` stays
within minutes on a loaded 2-core machine; every summary says how many samples it holds.

A quick pass (`python -m bench --quick`, `make bench QUICK=1`; BENCH_QUICK=1 in the
environment, so that the sections' child processes see it too) runs every section with a few
rounds, repeats and rows: it proves each section still runs, in CI, and its numbers mean little.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model_registry.registry import PROJECT

ROOT = Path(__file__).resolve().parent.parent
BUILT_TEMPLATE = ROOT / ".aws-sam" / "build" / "template.yaml"
MODELS_DIR = PROJECT.models_dir
EVENTS_DIR = ROOT / "events"
RESULTS = ROOT / "bench-results" / "latest.json"
QUICK_RESULTS = ROOT / "bench-results" / "quick.json"
ROWS = (1, 32, 1024)
QUICK_ENV = "BENCH_QUICK"
QUICK_ROUNDS = 5
QUICK_SECONDS = 0.2


def quick() -> bool:
    """Whether this is a quick pass (BENCH_QUICK=1): a few rounds of everything, no figures."""
    return os.environ.get(QUICK_ENV) == "1"


def budget(count: int, seconds: float) -> tuple[int, float]:
    """A timing loop's (most rounds, seconds): as given, or at most QUICK_ROUNDS rounds within
    QUICK_SECONDS in a quick pass."""
    if quick():
        return min(count, QUICK_ROUNDS), min(seconds, QUICK_SECONDS)
    return count, seconds


def scaled[T](full: T, small: T) -> T:
    """`full` normally, `small` in a quick pass (repeats, row counts, model counts)."""
    return small if quick() else full


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of 100 samples is the 99th smallest, not interpolated)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summary(samples_ms: list[float]) -> dict[str, float]:
    """p50, p99 and the sample count of a list of milliseconds."""
    return {"p50_ms": round(percentile(samples_ms, 0.5), 4),
            "p99_ms": round(percentile(samples_ms, 0.99), 4), "n": len(samples_ms)}


def time_interleaved(calls: dict[str, Callable[[], object]], count: int, seconds: float,
                     warmup: int = 5) -> dict[str, list[float]]:
    """Milliseconds of each call, taken in turns: round i times every call once.

    Alternating the calls spreads whatever else the machine does over all of them alike, so
    their ratios hold even when the absolute numbers wander. Up to `count` rounds within
    `seconds`, after `warmup` untimed rounds.
    """
    for _ in range(warmup):
        for call in calls.values():
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    deadline = time.perf_counter() + seconds
    while len(samples[next(iter(calls))]) < count and time.perf_counter() < deadline:
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - started) * 1000)
    return samples


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine() -> dict[str, Any]:
    """Where the numbers come from: CPU, cores, load (others' jobs share these cores)."""
    cpu = next((line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    return {"cpu": cpu, "cores": os.cpu_count(), "uptime": uptime.strip(),
            "python": platform.python_version(), "platform": platform.platform(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_child(module: str, arguments: list[str], env: dict[str, str]) -> Any:
    """Run `python -m <module> <arguments>` (a section's child: a handler measured in a fresh
    process) and return the JSON document its last line of stdout holds; RuntimeError with
    its stderr's tail when it fails."""
    child = subprocess.run([sys.executable, "-m", module, *arguments], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=300, check=False)
    if child.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(arguments)} failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.splitlines()[-1])


def write_child_result(measure: Callable[[], Any]) -> None:
    """In a child of run_child: the handler's logs (stdout) go to /dev/null while `measure`
    runs, and its result, as one JSON line, to the real stdout."""
    result_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - fd 1 lives as long as we do
    result = measure()
    with open(result_fd, "w") as out:
        out.write(json.dumps(result) + "\n")
