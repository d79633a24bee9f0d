"""Warm overhead: the real handler, in-process, against `InferenceSession.run` on the same input.

Each model is measured in a child process (`python -m bench.warm MODEL`) that imports
functions/inference/app.py as Lambda does, with the function's Lambda environment (tracing on,
every request sampled: the dearest case), so Powertools' per-process state and the model's
memory never leak between models. Three timings per request, taken in turns: the whole handler
(API Gateway event in, response dict out), the serving library alone (`service.infer`: decode,
run, encode) and the raw session run on the very arrays the codec decoded, in a session with
the same options. Their differences split the handler's own time into the Lambda adapter
(Powertools: routing, logs, metrics, X-Ray) and the protocol codec. Requests are JSON at 1, 32
and 1,024 rows, and binary tensors at 32 and 1,024.

Each case also gets `phases_ms`: the request's steps timed one by one on the same event, in
turns like the timings above (medians): `decorators` (the handler minus the resolver: the
Logger's context, the X-Ray subsegment, the EMF flush), `envelope` (the resolver minus the
service and the body's base64: routing, the metrics and log line of the request, the proxy
answer), `base64` (the event's body), `parse` (orjson's parse of the JSON, what the codec's
fast path for the common request parses with), `validate` (the rest of decoding: fields,
shapes, types, finiteness, repeated keys, the arrays), `run` (the model's session),
`hooks` (the pipeline's predict minus the run, and its after_model hooks once answered:
class counts, data capture), `encode` (the
answer's JSON or binary tensors), `flush` (the rest of `service.infer`: the hooks' flush,
PredictedRows' EMF lines). And per model, `floor_ms`: the least any request can cost on
this function, a handler that only returns `{}` through the same three Powertools decorators
(`decorators_only`), and GET /v2/health/live through the real handler (`live`).
"""

from __future__ import annotations

import base64
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

from model_api.binary import HEADER_LENGTH

from bench.common import (
    MODELS_DIR,
    ROOT,
    ROWS,
    budget,
    peak_rss_mb,
    run_child,
    summary,
    time_interleaved,
    write_child_result,
)
from bench.functions import HANDLER, inference_functions, lambda_environment
from bench.payloads import example_event
from local_api.context import LambdaContext
from local_api.template import FunctionSpec

# Per row count: (most rounds, seconds) of the three interleaved timings.
BUDGET = {1: (300, 1.0), 32: (300, 1.0), 1024: (40, 1.5)}
Case = tuple[int, str]  # (rows, encoding "json" or "binary")
NO_SPLIT = "--no-split"  # the child's flag: no phases, no floor
CASES: list[Case] = [(rows, "json") for rows in ROWS] + [(rows, "binary") for rows in ROWS
                                                         if rows > 1]


def measure(model: str, cases: Sequence[Case] = CASES, split: bool = True
            ) -> list[dict[str, Any]]:
    """In the child: handler, service and raw run timings for every case, and the sizes of the
    request and of the handler's response body (bytes); with `split`, each case's phases and
    the function's floor too."""
    import onnxruntime as ort
    from model_api.codec import decode_request
    from model_api.model import CPU, session_options

    from bench.payloads import api_event, request

    spec = importlib.util.spec_from_file_location("app", HANDLER)
    assert spec is not None and spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)  # module-scope init: the model loads here, as in Lambda
    loaded = loaded_model(app.service, model)
    raw = ort.InferenceSession(str(MODELS_DIR / model / loaded.manifest.version / "model.onnx"),
                               sess_options=session_options(), providers=list(CPU))
    context = LambdaContext(function_name=model)
    results = []
    for rows, encoding in cases:
        sent = request(model, rows, encoding)
        event = api_event(model, sent)
        decoded = decode_request(sent.body, sent.headers, loaded.manifest)
        outputs = [output.name for output in decoded.outputs]
        answer = app.lambda_handler(event, context)
        if answer["statusCode"] != 200:
            raise RuntimeError(f"{model} {encoding} at {rows} rows answered "
                               f"{answer['statusCode']}: {answer['body'][:300]}")
        timings = time_interleaved({
            "handler": partial(app.lambda_handler, event, context),
            "service": partial(app.service.infer, model, None, sent.body, sent.headers),
            "raw": partial(raw.run, outputs, decoded.inputs),
        }, *budget(*BUDGET[rows]))
        result: dict[str, Any] = {"model": model, "rows": rows, "encoding": encoding,
                                  "request_bytes": len(sent.body),
                                  "response_bytes": len(base64.b64decode(answer["body"])
                                                      if answer.get("isBase64Encoded")
                                                      else answer["body"].encode()),
                                  **{name: summary(ms) for name, ms in timings.items()}}
        if split:
            result["phases_ms"] = phases(app, model, event, context, sent)
        handler, service, run = (result[k]["p50_ms"] for k in ("handler", "service", "raw"))
        result["ratio"] = round(handler / run, 2)
        result["overhead_ms"] = round(handler - run, 3)
        result["overhead_per_row_us"] = round((handler - run) / rows * 1000, 2)
        result["adapter_ms"] = round(handler - service, 3)
        result["codec_ms"] = round(service - run, 3)
        results.append(result)
    peak = peak_rss_mb()  # after 1,024-row requests: what the memory size must hold
    floor = {"floor_ms": floors(app, model, context)} if split else {}
    return [{**result, "max_rss_mb": round(peak, 1), **floor} for result in results]


def loaded_model(service: Any, model: str, timeout_s: float = 600) -> Any:
    """The service's model, once loaded: a version in the model store loads in the background
    (model_api.service), read from the local one that `run` fills. Loading (503) after
    `timeout_s` seconds."""
    import time

    from model_api.errors import Loading

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return service.model(model, wait=True)
        except Loading:
            if time.monotonic() > deadline:
                raise


def phases(app: Any, model: str, event: dict[str, Any], context: LambdaContext,
           sent: Any) -> dict[str, float]:
    """Median milliseconds of each step of one request (see the module's docstring)."""
    import orjson
    from model_api.aws.lambda_adapter import raw_body
    from model_api.codec import decode_request, split_body

    service = app.service
    loaded = loaded_model(service, model)
    pipeline = service.pipeline
    exchange = pipeline.decode(loaded, sent.body, sent.headers)
    json_part = split_body(sent.body, int(sent.headers[HEADER_LENGTH]))[0] \
        if HEADER_LENGTH in sent.headers else sent.body
    names = [output.name for output in exchange.request.outputs]
    rows = exchange.request.rows
    timings = time_interleaved({
        "handler": partial(app.lambda_handler, event, context),
        "resolve": partial(app.app.resolve, event, context),
        "infer": partial(service.infer, model, None, sent.body, sent.headers),
        "base64": partial(raw_body, event),
        "parse": partial(orjson.loads, json_part),
        "decode": partial(decode_request, sent.body, sent.headers, loaded.manifest,
                          pipeline.limits),
        "run": partial(loaded.run, exchange.request.inputs, names),
        "predict": partial(pipeline.predict, exchange),
        "encode": partial(pipeline.encode, exchange),
        "answered": partial(pipeline.answered, [exchange]),
    }, *budget(*BUDGET[rows]))
    p50 = {name: summary(ms)["p50_ms"] for name, ms in timings.items()}
    steps = {"decorators": p50["handler"] - p50["resolve"],
             "envelope": p50["resolve"] - p50["infer"] - p50["base64"],
             "base64": p50["base64"], "parse": p50["parse"],
             "validate": p50["decode"] - p50["parse"], "run": p50["run"],
             "hooks": p50["predict"] - p50["run"] + p50["answered"], "encode": p50["encode"],
             "flush": (p50["infer"] - p50["decode"] - p50["predict"] - p50["encode"]
                       - p50["answered"])}
    return {name: round(ms, 4) for name, ms in steps.items()}


def floors(app: Any, model: str, context: LambdaContext) -> dict[str, float]:
    """The cheapest requests of this function (median ms): nothing but the decorators, and
    GET /v2/health/live through the real handler."""
    from aws_lambda_powertools.logging import correlation_paths
    from model_api.aws.lambda_adapter import logger, metrics, tracer

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
    @tracer.capture_lambda_handler(capture_response=False)
    @metrics.log_metrics(capture_cold_start_metric=True)
    def decorators_only(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {}

    live = {**example_event(model), "resource": "/v2/health/live", "path": "/v2/health/live",
            "httpMethod": "GET", "body": None, "isBase64Encoded": False}
    timings = time_interleaved({
        "decorators_only": partial(decorators_only, live, context),
        "live": partial(app.lambda_handler, live, context),
    }, *budget(*BUDGET[1]))
    return {name: summary(ms)["p50_ms"] for name, ms in timings.items()}


def run(cases: Sequence[Case] = CASES, models: Sequence[str] | None = None,
        split: bool = True) -> list[dict[str, Any]]:
    """Every model function (or those of `models`), one child process each, over `cases`;
    `split`: with each request's phases and the function's floor (make cost needs neither).
    A model served from the model store (`make add-model PLACE=store`) reads its version from
    a local one (a moto server, filled as `make serve` fills its own) and is timed once
    loaded."""
    from local_api import model_store

    functions = [function for function in inference_functions() if function.model is not None
                 and (models is None or function.model in models)]
    stored = [function.spec for function in functions if model_store.stored(function.spec)]
    results: list[dict[str, Any]] = []
    with local_model_store(stored):
        for function in functions:
            env = {**os.environ, **lambda_environment(function, MODELS_DIR),
                   "PYTHONPATH": os.pathsep.join([str(ROOT),
                                                  str(ROOT / "layers/serving/python")])}
            if function.spec in stored:
                env[model_store.BUCKET_VARIABLE] = model_store.BUCKET
            assert function.model is not None
            results.extend(run_child("bench.warm", [function.model, *(
                f"{rows}:{encoding}" for rows, encoding in cases),
                *([] if split else [NO_SPLIT])], env))
    return results


@contextmanager
def local_model_store(functions: Sequence[FunctionSpec]) -> Iterator[None]:
    """For the store-backed `functions` (none: nothing is started), a moto server holding
    their stored versions in local_api.model_store's bucket, boto3's environment pointing at
    it while the block runs."""
    if not functions:
        yield
        return
    from bench.batch import moto_server
    from local_api import model_store

    with moto_server(capture=False):
        model_store.publish(functions, MODELS_DIR)
        yield


def main() -> None:
    """Child entry: the handler's logs go to /dev/null, the results to the real stdout."""
    arguments = [argument for argument in sys.argv[2:] if argument != NO_SPLIT]
    cases = [(int(rows), encoding) for rows, _, encoding in
             (case.partition(":") for case in arguments)]
    write_child_result(partial(measure, sys.argv[1], cases or CASES,
                               NO_SPLIT not in sys.argv[2:]))


if __name__ == "__main__":
    main()
