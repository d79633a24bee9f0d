"""Goodput under load on the local API: `python -m bench.overload [seconds per phase]`.

Serves the built template (as `make serve` does, its output kept in a file) and measures, each
phase bounded in time:

- goodput: successful answers (200) per second of 1, 8, 32 and 64 concurrent clients posting a
  1-row infer request to one model, and the share of each status among the answers;
- isolation: another model's median latency (one client, sequential) alone and during a
  64-client burst on a first model;
- log volume: bytes the server wrote per request over the whole run.

Figures depend on the machine and what else runs on it; what matters is their ratios (the rule
is that 32 and 64 clients keep within 20 % of the best goodput at a lower concurrency,
docs/architecture.md "Overload").
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from model_api.routes import route

from bench.common import BUILT_TEMPLATE
from bench.payloads import request_body
from local_api.background import HOST, serving

MODEL = "breast-cancer-mlp"
BURST_MODEL = "digits-cnn"
LEVELS = (1, 8, 32, 64)


def infer_path(model: str) -> str:
    return route("ModelInfer").url(model=model)


def load(port: int, model: str, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` threads posting 1-row infer requests for `seconds`: goodput and statuses."""
    path, body = infer_path(model), request_body(model, 1)
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=60)
        seen: Counter[int] = Counter()
        while time.monotonic() < stop:
            try:
                connection.request("POST", path, body=body,
                                   headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                seen[response.status] += 1
            except OSError:
                seen[0] += 1
                connection.close()
                connection = http.client.HTTPConnection(HOST, port, timeout=60)
        connection.close()
        with lock:
            statuses.update(seen)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    total = sum(statuses.values())
    return {"clients": clients, "goodput_per_s": round(statuses[200] / elapsed, 1),
            "requests": total, "statuses": dict(sorted(statuses.items()))}


def latencies(port: int, model: str, seconds: float) -> list[float]:
    """One client's sequential 1-row infer latencies (ms) for `seconds` (non-200s counted as
    the time they took too, and reported by the caller through the status counts)."""
    path, body = infer_path(model), request_body(model, 1)
    connection = http.client.HTTPConnection(HOST, port, timeout=60)
    samples: list[float] = []
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        started = time.perf_counter()
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        samples.append((time.perf_counter() - started) * 1000 if response.status == 200
                       else float("inf"))
    connection.close()
    return samples


def isolation(port: int, seconds: float) -> dict[str, Any]:
    """MODEL's median latency alone, then during a 64-client burst on BURST_MODEL."""
    alone = latencies(port, MODEL, seconds)
    burst: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: burst.update(load(port, BURST_MODEL, 64,
                                                                seconds + 1)))
    thread.start()
    time.sleep(0.5)
    during = latencies(port, MODEL, seconds)
    thread.join()
    failed = sum(1 for sample in during if sample == float("inf"))
    return {"alone_median_ms": round(statistics.median(alone), 1),
            "during_burst_median_ms": round(statistics.median(during), 1),
            "during_burst_failed": failed, "during_burst_requests": len(during),
            "burst": burst}


def main(seconds: float = 5.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "serve.log"
        with log.open("w") as out, serving(BUILT_TEMPLATE, out, extra=("--no-batch",)) as port:
            for model in (MODEL, BURST_MODEL):  # warm every worker: cold starts aside
                load(port, model, 8, 2.0)
            written = log.stat().st_size
            goodput = [load(port, MODEL, clients, seconds) for clients in LEVELS]
            isolated = isolation(port, seconds)
            requests = sum(level["requests"] for level in goodput) + \
                isolated["burst"]["requests"] + isolated["during_burst_requests"]
            log_bytes = log.stat().st_size - written
    best_low = max(level["goodput_per_s"] for level in goodput[:2])
    return {"goodput": goodput,
            "ratio_to_best_low": {level["clients"]: round(level["goodput_per_s"] / best_low, 2)
                                  for level in goodput},
            "isolation": isolated,
            "log_bytes_per_request": round(log_bytes / max(requests, 1), 1)}


if __name__ == "__main__":
    print(json.dumps(main(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0), indent=1))
