"""The one place the serving library meets API Gateway and Lambda (aws-lambda-powertools).

Routes of the Open Inference Protocol map onto `InferenceService`; every failure becomes the
protocol's `{"error": ...}` body in one place, `answer_errors`, which the batch jobs function
uses too (this module imports neither numpy nor onnxruntime). Logs carry ids, shapes and timings,
never tensors (inference inputs are users' data).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import ServiceError
from aws_lambda_powertools.metrics import MetricUnit

from model_api.errors import ModelAPIError

if TYPE_CHECKING:  # only for annotations: answer_errors must not import numpy or onnxruntime
    from model_api.service import InferenceService

logger = Logger()
# No auto-patching: Powertools' default patches every library X-Ray knows, which imports
# botocore's client stack (~50 ms of every cold start, docs/performance.md) into inference
# functions that call no AWS service. A function that does patches what it uses.
tracer = Tracer(auto_patch=False)
metrics = Metrics()

JSON = "application/json"


def json_response(status: int, payload: dict[str, Any]) -> Response:
    return Response(status_code=status, content_type=JSON, body=json.dumps(payload))


def raw_body(event: dict[str, Any]) -> bytes:
    """The request body as bytes; API Gateway base64-encodes it for our `*/*` binary media type."""
    body = event.get("body") or ""
    if not event.get("isBase64Encoded"):
        return body.encode("utf-8")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ModelAPIError(400, f"request body is not valid base64: {exc}") from exc


def count_server_error() -> None:
    """Every 5xx counts: the rollout alarm on ServerErrors rolls back a version answering them."""
    metrics.add_metric(name="ServerErrors", unit=MetricUnit.Count, value=1)


def error_answer(status: int, message: str) -> Response:
    """The protocol's error answer, logged: a refusal (4xx) as info; a 5xx as an error that
    counts in ServerErrors."""
    if status >= 500:
        count_server_error()
        logger.error("server error", extra={"status": status, "reason": message})
    else:
        logger.info("request refused", extra={"status": status, "reason": message})
    return json_response(status, {"error": message})


def answer_errors(app: APIGatewayRestResolver) -> APIGatewayRestResolver:
    """Make every failure of `app` the protocol's `{"error": message}` (every function of the API
    answers this way): a `ModelAPIError` with its status; a path no route matches, a 404 (a
    path parameter Powertools cannot match, such as a control character, included); Powertools'
    own HTTP errors (`ServiceError`) with their status; anything else a 500 that counts in
    ServerErrors and logs its traceback, but shows only the request id."""

    @app.exception_handler(ModelAPIError)
    def protocol_error(error: ModelAPIError) -> Response:
        return error_answer(error.status, error.message)

    @app.exception_handler(ServiceError)
    def http_error(error: ServiceError) -> Response:
        message = error.msg if isinstance(error.msg, str) else json.dumps(error.msg)
        return error_answer(error.status_code, message or "request refused")

    # Powertools would answer a path no route matches through the ServiceError handler above
    # (NotFoundError is one) with its bare "Not found"; this says which route was asked for.
    @app.not_found
    def no_route(_: Exception) -> Response:
        event = app.current_event
        return json_response(404, {"error": f"No such route: {event.http_method} {event.path}"})

    @app.exception_handler(Exception)
    def unexpected_error(error: Exception) -> Response:
        count_server_error()
        logger.exception("unexpected error")
        request_id = app.lambda_context.aws_request_id if app.lambda_context else "unknown"
        return json_response(500, {"error": f"internal error (request id {request_id})"})

    return app


def create_app(service: InferenceService) -> APIGatewayRestResolver:
    """A resolver serving the protocol's routes for the models `service` holds."""
    app = answer_errors(APIGatewayRestResolver())

    @app.get("/v2")
    def server_metadata() -> Response:
        return json_response(200, service.server_metadata())

    @app.get("/v2/health/live")
    def live() -> Response:
        return json_response(200, service.live())

    @app.get("/v2/health/ready")
    def ready() -> Response:
        return json_response(200, service.ready())

    @app.get("/v2/models/<model>")
    def model_metadata(model: str) -> Response:
        return json_response(200, service.model_metadata(model))

    @app.get("/v2/models/<model>/versions/<version>")
    def version_metadata(model: str, version: str) -> Response:
        return json_response(200, service.model_metadata(model, version))

    @app.get("/v2/models/<model>/ready")
    def model_ready(model: str) -> Response:
        return json_response(200, service.model_ready(model))

    @app.get("/v2/models/<model>/versions/<version>/ready")
    def version_ready(model: str, version: str) -> Response:
        return json_response(200, service.model_ready(model, version))

    @app.post("/v2/models/<model>/infer")
    def infer(model: str) -> Response:
        return run_inference(model, None)

    @app.post("/v2/models/<model>/versions/<version>/infer")
    def version_infer(model: str, version: str) -> Response:
        return run_inference(model, version)

    @app.post("/v2/models/<model>/explain")
    def explain(model: str) -> Response:
        return run_inference(model, None, explain=True)

    @app.post("/v2/models/<model>/versions/<version>/explain")
    def version_explain(model: str, version: str) -> Response:
        return run_inference(model, version, explain=True)

    @tracer.capture_method(capture_response=False)
    def run_inference(model: str, version: str | None, explain: bool = False) -> Response:
        """Infer (or, `explain`, explain) and answer; metrics ExplainLatency/ExplainRows
        for explanations, InferenceLatency/InferenceRows otherwise."""
        event = app.current_event
        started = time.perf_counter()
        operation = service.explain if explain else service.infer
        result = operation(model, version, raw_body(event.raw_event), dict(event.headers))
        elapsed_ms = (time.perf_counter() - started) * 1000
        kind = "Explain" if explain else "Inference"
        metrics.add_metric(name=f"{kind}Latency", unit=MetricUnit.Milliseconds, value=elapsed_ms)
        metrics.add_metric(name=f"{kind}Rows", unit=MetricUnit.Count, value=result.rows)
        logger.info(
            kind.lower(),
            extra={"model": model, "version": version, "rows": result.rows,
                   "latency_ms": round(elapsed_ms, 3)},
        )
        content_type = result.headers.get("Content-Type", JSON)
        headers = {k: v for k, v in result.headers.items() if k != "Content-Type"}
        # JSON answers go back as text; only binary tensors pay base64's 33 % in the 6 MB budget.
        body: str | bytes = result.body.decode("utf-8") if content_type == JSON else result.body
        return Response(status_code=200, content_type=content_type, body=body, headers=headers)

    return app
