"""Goodput under load on the local API: `python -m bench.overload [seconds per phase]`.

Serves the built template (as `make serve` does, its output kept in a file) and measures, each
phase bounded in time:

- goodput: successful answers (200) per second of 1, 8, 32 and 64 concurrent clients posting a
  1-row infer request to one model (each level twice, interleaved: its best), and the count of
  each status among the answers;
- isolation: another model's median latency (one client, sequential) alone and during a
  64-client burst on a first model;
- log volume: bytes the server wrote per request over the whole run.

Figures depend on the machine and what else runs on it; what matters is their ratios (the rule
is that 32 and 64 clients keep within 20 % of the best goodput at a lower concurrency,
docs/architecture.md "Overload").
"""

from __future__ import annotations

import asyncio
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


def _request(port: int, path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _client(port: int, request: bytes, stop: float, statuses: Counter[int]) -> None:
    """One kept-alive connection sending `request` until `stop` (time.monotonic); a status 0
    counts a connection the server closed or reset. Asyncio rather than threads, so that the
    load generator itself costs little of the CPUs it shares with the server."""
    writer: asyncio.StreamWriter | None = None
    while time.monotonic() < stop:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(request)
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            statuses[status] += 1
        except (OSError, IndexError, ValueError, asyncio.IncompleteReadError):
            statuses[0] += 1
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


def load(port: int, model: str, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` concurrent connections posting 1-row infer requests for `seconds`: goodput
    (answers 200 per second) and the count of each status."""
    request = _request(port, infer_path(model), request_body(model, 1))
    statuses: Counter[int] = Counter()

    async def run() -> None:
        stop = time.monotonic() + seconds
        await asyncio.gather(*(_client(port, request, stop, statuses) for _ in range(clients)))

    started = time.monotonic()
    # In a thread of its own: the caller may already run an event loop (a test session's).
    thread = threading.Thread(target=asyncio.run, args=(run(),), name="overload-clients")
    thread.start()
    thread.join()
    elapsed = time.monotonic() - started
    total = sum(statuses.values())
    return {"clients": clients, "goodput_per_s": round(statuses[200] / elapsed, 1),
            "requests": total, "statuses": dict(sorted(statuses.items()))}


def goodput(port: int, seconds: float, rounds: int = 2) -> dict[int, dict[str, Any]]:
    """Each of LEVELS in turn, `rounds` times (interleaved, so that what else the machine runs
    meanwhile weighs on every level alike); per level its best round, all statuses summed."""
    best: dict[int, dict[str, Any]] = {}
    for _ in range(rounds):
        for clients in LEVELS:
            found = load(port, MODEL, clients, seconds)
            kept = best.setdefault(clients, found)
            if kept is not found:
                statuses = Counter(kept["statuses"]) + Counter(found["statuses"])
                kept.update(goodput_per_s=max(kept["goodput_per_s"], found["goodput_per_s"]),
                            requests=kept["requests"] + found["requests"],
                            statuses=dict(sorted(statuses.items())))
    return best


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
            levels = goodput(port, seconds)
            isolated = isolation(port, seconds)
            requests = sum(level["requests"] for level in levels.values()) + \
                isolated["burst"]["requests"] + isolated["during_burst_requests"]
            log_bytes = log.stat().st_size - written
    best_low = max(levels[1]["goodput_per_s"], levels[8]["goodput_per_s"])
    return {"goodput": list(levels.values()),
            "ratio_to_best_low": {clients: round(level["goodput_per_s"] / best_low, 2)
                                  for clients, level in levels.items()},
            "isolation": isolated,
            "log_bytes_per_request": round(log_bytes / max(requests, 1), 1)}


if __name__ == "__main__":
    print(json.dumps(main(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0), indent=1))
