"""Data capture's cost on the warm handler (issue 22: at most +0.1 ms p50 at 1 row, capture at
100 % against capture off).

`python -m bench.capture [MODEL ...]` (default: breast-cancer-mlp text-topics) runs each model in
a child process that imports functions/inference/app.py as Lambda does, with the function's
Lambda environment and capture at 100 %, then times the real handler on a 1-row JSON request
in turns: with the capture hook in the pipeline ("on") and without it ("off"), everything else
equal (the same process, model, Powertools state). Capture delivers as it does on Lambda (one
line per record on stdout, model_api.aws.capture); the child's stdout is /dev/null, so the
timing holds the write system call but not what reads the pipe on Lambda.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from functools import partial
from typing import Any

from bench.common import (
    MODELS_DIR,
    ROOT,
    run_child,
    summary,
    time_interleaved,
    write_child_result,
)
from bench.functions import HANDLER, inference_functions, lambda_environment
from local_api.context import LambdaContext

MODELS = ("breast-cancer-mlp", "text-topics")
ROUNDS, SECONDS = 3000, 20.0


def measure(model: str) -> dict[str, Any]:
    """In the child: handler timings with and without the capture hook, interleaved."""
    from model_api.capture.hook import CaptureHook

    from bench.payloads import api_event, request

    spec = importlib.util.spec_from_file_location("app", HANDLER)
    assert spec is not None and spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    pipeline = app.service.pipeline
    on = pipeline.hooks
    off = tuple(hook for hook in on if not isinstance(hook, CaptureHook))
    if on == off:
        raise RuntimeError(f"{model}: no capture hook installed (is CAPTURE set?)")
    hook = next(hook for hook in on if isinstance(hook, CaptureHook))
    context = LambdaContext(function_name=model)
    event = api_event(model, request(model, 1, "json"))

    def handler(hooks: tuple[Any, ...]) -> None:
        pipeline.hooks = hooks
        answer = app.lambda_handler(event, context)
        if answer["statusCode"] != 200:
            raise RuntimeError(f"{model} answered {answer['statusCode']}: {answer['body']}")

    timings = time_interleaved({"off": partial(handler, off), "on": partial(handler, on)},
                               ROUNDS, SECONDS, warmup=20)
    result: dict[str, Any] = {"model": model, "rows": 1,
                              **{name: summary(ms) for name, ms in timings.items()}}
    result["overhead_p50_ms"] = round(result["on"]["p50_ms"] - result["off"]["p50_ms"], 4)
    result["counts_pending"] = {"/".join(k): v for k, v in hook.counts.items()}
    return result


def run(models: tuple[str, ...] = MODELS) -> list[dict[str, Any]]:
    """Each model in its own child process, capture at 100 %."""
    functions = {f.model: f for f in inference_functions() if f.model}
    results = []
    for model in models:
        env = {**os.environ, **lambda_environment(functions[model], MODELS_DIR),
               "CAPTURE_SAMPLING": "100", "CAPTURE_HASH_KEY": "bench", "CAPTURE_BUCKET": "",
               # BENCH_CAPTURE_DIR: a folder store instead of stdout (the earlier transport)
               "CAPTURE_DIR": os.environ.get("BENCH_CAPTURE_DIR", ""),
               "CAPTURE_HASH_KEY_SECRET": "",
               "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "layers/serving/python")])}
        results.append(run_child("bench.capture", ["--child", model], env))
    return results


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        write_child_result(partial(measure, sys.argv[2]))
        return
    for result in run(tuple(sys.argv[1:]) or MODELS):
        print(json.dumps(result))


if __name__ == "__main__":
    main()
