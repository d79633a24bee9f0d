"""Over HTTP: the same requests through the local API (`python -m local_api serve`) on 127.0.0.1.

The server runs the built template on a free loopback port. Latency is one client's sequential
requests on a kept-alive connection; throughput is a few concurrent clients for a bounded count
and time. What HTTP adds is the difference with the in-process handler of bench.warm (the local
API runs each function in a worker process and turns tracing off, as no X-Ray daemon runs
locally).
"""

from __future__ import annotations

import http.client
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from model_api.routes import route

from bench.common import BUILT_TEMPLATE, ROWS, budget, scaled, summary
from bench.payloads import model_names, request_body
from local_api.background import HOST, serving

CLIENTS = 4  # 1 in a quick pass: each starts a worker process per function
LATENCY_BUDGET = {1: (300, 2.0), 32: (300, 2.0), 1024: (40, 3.0)}  # (most requests, seconds)
THROUGHPUT_BUDGET = (400, 3.0)  # per client, at 1 row


@contextmanager
def local_api() -> Iterator[int]:
    """A local API serving the built template; yields its port."""
    with serving(BUILT_TEMPLATE, subprocess.DEVNULL, max_workers=clients()) as port:
        yield port


def clients() -> int:
    """The concurrent clients of the throughput test (and workers per function)."""
    return scaled(CLIENTS, 1)


def request(connection: http.client.HTTPConnection, method: str, path: str,
            body: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.read()


def timed_requests(port: int, path: str, body: bytes, count: int,
                   seconds: float) -> list[float]:
    """Milliseconds per request of one client on one kept-alive connection."""
    connection = http.client.HTTPConnection(HOST, port, timeout=60)
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    try:
        while len(samples) < count and time.perf_counter() < deadline:
            started = time.perf_counter()
            status, answer = request(connection, "POST", path, body)
            samples.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise RuntimeError(f"POST {path} answered {status}: {answer[:300]!r}")
    finally:
        connection.close()
    return samples


def throughput(port: int, path: str, body: bytes) -> dict[str, Any]:
    """Requests per second of CLIENTS concurrent clients, each bounded by THROUGHPUT_BUDGET."""
    count, seconds = budget(*THROUGHPUT_BUDGET)
    results: list[list[float]] = [[] for _ in range(clients())]

    def client(index: int) -> None:
        results[index] = timed_requests(port, path, body, count, seconds)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients())]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    done = sum(len(samples) for samples in results)
    return {"clients": clients(), "requests": done, "seconds": round(elapsed, 3),
            "requests_per_s": round(done / elapsed, 1),
            **summary([ms for samples in results for ms in samples])}


def run() -> list[dict[str, Any]]:
    """Latency per model and row count, then throughput at 1 row."""
    results: list[dict[str, Any]] = []
    with local_api() as port:
        for model in model_names():
            path = route("ModelInfer").url(model=model)
            for _ in range(clients()):  # start the function's workers before timing
                timed_requests(port, path, request_body(model, 1), 3, 30.0)
            for rows in ROWS:
                body = request_body(model, rows)
                count, seconds = budget(*LATENCY_BUDGET[rows])
                results.append({"model": model, "rows": rows,
                                **summary(timed_requests(port, path, body, count, seconds))})
            results[-len(ROWS)]["throughput"] = throughput(port, path, request_body(model, 1))
    return results
