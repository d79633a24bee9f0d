"""Explanations over HTTP: `/explain` beside `/infer` on the local API, same rows, same run.

For every model that has explanations, 1 and 32 rows of its example request are sent to
/infer and /explain in turns (common.time_interleaved), one client on a kept-alive
connection, so the ratio holds even while other work loads the machine. Issue 12's targets:
explain at most 15x infer for breast-cancer-mlp at 1 row, and at most 50 ms p50 at 1 row for
every seed model.
"""

from __future__ import annotations

import http.client
from typing import Any

from bench.common import budget, scaled, summary, time_interleaved
from bench.http import local_api, request
from bench.payloads import explained, model_names, request_body
from local_api.background import HOST

ROWS = (1, 32)
BUDGET = {1: (200, 8.0), 32: (40, 8.0)}  # (most rounds, seconds) per model and row count


def run() -> list[dict[str, Any]]:
    """p50/p99 of infer and explain per model at 1 and 32 rows, and their ratio."""
    results: list[dict[str, Any]] = []
    with local_api() as port:
        connection = http.client.HTTPConnection(HOST, port, timeout=120)
        try:
            for model in filter(explained, model_names()):  # the others answer 404
                for rows in ROWS:
                    body = request_body(model, rows)
                    calls = {route: _call(connection, f"/v2/models/{model}/{route}", body)
                             for route in ("infer", "explain")}
                    count, seconds = budget(*BUDGET[rows])
                    samples = time_interleaved(calls, count, seconds,
                                               warmup=scaled(3, 1))
                    infer, explain = summary(samples["infer"]), summary(samples["explain"])
                    results.append({"model": model, "rows": rows, "infer": infer,
                                    "explain": explain,
                                    "ratio": round(explain["p50_ms"] / infer["p50_ms"], 2)})
        finally:
            connection.close()
    return results


def _call(connection: http.client.HTTPConnection, path: str, body: bytes) -> Any:
    def call() -> None:
        status, answer = request(connection, "POST", path, body)
        if status != 200:
            raise RuntimeError(f"POST {path} answered {status}: {answer[:300]!r}")

    return call
