"""The one place the serving library meets API Gateway and Lambda (aws-lambda-powertools for
logs, metrics and traces; model_api.aws.rest for the routing, which says why it is not
Powertools' resolver).

Routes of the Open Inference Protocol map onto `InferenceService`; every failure becomes the
protocol's `{"error": ...}` body in one place, `answer_errors`, which the batch jobs function
uses too (this module imports neither numpy nor onnxruntime). Logs carry ids, shapes and timings,
never tensors (inference inputs are users' data).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from model_api import server
from model_api.aws.rest import Response, RestApiResolver, path_from_parameters
from model_api.errors import Loading, ModelAPIError, NotFound
from model_api.routes import MODEL, SERVER, routes_of

if TYPE_CHECKING:  # only for annotations: answer_errors must not import numpy or onnxruntime
    from model_api.aws.router import ModelRouter
    from model_api.capture.store import CaptureStore
    from model_api.console import Console, StaticFile
    from model_api.repository import Repository
    from model_api.service import InferenceService

# With the names below: what the functions import.
__all__ = ["Response", "RestApiResolver", "path_from_parameters"]



def log_line(record: dict[str, Any]) -> str:
    """One JSON log line that every stream can write, whatever a client sent.

    Powertools' default serializer keeps non-ASCII text as is (`ensure_ascii=False`), so a lone
    surrogate that a client sent as a JSON escape (`{"\\ud800": 1}`) and that an error message
    quotes back makes the UTF-8 stream raise UnicodeEncodeError: the record is lost and the
    logging module prints a traceback. Here such a code point becomes its `\\uXXXX` escape
    (valid JSON for the same string); other text stays readable. Values JSON cannot hold are
    written with str(), as Powertools does.
    """
    text = json.dumps(record, default=str, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


logger = Logger(json_serializer=log_line)
# A request that records no metric (a ready or metadata route) is normal here: Powertools'
# UserWarning about it would be one stray stderr line per such request and worker.
warnings.filterwarnings("ignore", message="No application metrics to publish",
                        category=UserWarning)
# No auto-patching: Powertools' default patches every library X-Ray knows, which imports
# botocore's client stack (~50 ms of every cold start, docs/performance.md) into inference
# functions that call no AWS service. A function that does patches what it uses.
tracer = Tracer(auto_patch=False)
metrics = Metrics()

JSON = "application/json"


def json_response(status: int, payload: dict[str, Any] | list[Any]) -> Response:
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


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None,
                   counted: bool = True) -> Response:
    """The protocol's error answer (with `headers`: Retry-After while a model loads), logged: a
    refusal (4xx) as info; a 5xx as an error that counts in ServerErrors unless not `counted`
    (a large model still loading: its cold start, not a fault, must not roll a deployment
    back), which is logged as info."""
    if status >= 500 and not counted:
        logger.info("model loading", extra={"status": status, "reason": message})
    elif status >= 500:
        count_server_error()
        logger.error("server error", extra={"status": status, "reason": message})
    else:
        logger.info("request refused", extra={"status": status, "reason": message})
    response = json_response(status, {"error": message})
    response.headers.update(headers or {})
    return response


def answer_errors(app: RestApiResolver) -> RestApiResolver:
    """Make every failure of `app` the protocol's `{"error": message}` (every function of the API
    answers this way): a `ModelAPIError` with its status; a path no route matches, a 404 (a
    path parameter the routes cannot match, such as a control character, included); anything
    else a 500 that counts in ServerErrors and logs its traceback, but shows only the request
    id."""

    @app.exception_handler(ModelAPIError)
    def protocol_error(error: ModelAPIError) -> Response:
        return error_response(error.status, error.message, error.headers,
                              counted=not isinstance(error, Loading))

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


def bind_routes(app: RestApiResolver, function: str,
                handlers: Mapping[str, Callable[..., Response]]) -> RestApiResolver:
    """Serve on `app` every route of `model_api.routes` that `function` serves, each calling
    `handlers[route.operation]` with the route's path parameters (a model route's versioned
    twin adds `version`). Raises ValueError when `handlers` misses or adds an operation, so a
    route in the table can never go unserved."""
    table = routes_of(function)
    wanted = {route.operation for route in table}
    if wanted != set(handlers):
        raise ValueError(f"{function} function: handlers for {sorted(set(handlers))}, routes "
                         f"for {sorted(wanted)}")
    for route in table:
        app.route(route.resolver_path, route.method)(handlers[route.operation])
    return app


def static_response(found: StaticFile) -> Response:
    """A console file: text as text (no base64), gzip when the client accepts it; `Vary:
    Accept-Encoding` either way, so that a cache never hands gzip to a client that did not
    ask for it (RFC 9110 §12.5.5)."""
    body: str | bytes = (found.body.decode("utf-8") if found.content_type.startswith(("text/",
                         "application/json")) else found.body)
    return Response(status_code=200, content_type=found.content_type, body=body,
                    headers={**found.headers, "Vary": "Accept-Encoding"}, compress=True)


def json_handler(document: Callable[..., dict[str, Any]]) -> Callable[..., Response]:
    """A route handler answering 200 with the JSON of `document(**the route's parameters)`."""
    return lambda **parameters: json_response(200, document(**parameters))


def create_app(service: InferenceService | None, repository: Repository | None = None,
               console: Console | None = None,
               router: ModelRouter | None = None,
               reports: CaptureStore | None = None) -> RestApiResolver:
    """A resolver serving the server's and the model's routes for the models `service` holds.

    `service` is None only with a `router` and a `repository` (the server function, which holds
    no model: it then imports neither numpy nor onnxruntime; ValueError otherwise).
    `repository` answers the repository index and server readiness (default: the models
    `service` holds; the server function's asks every model function, see
    model_api.repository); `console` serves the static pages (default: $CONSOLE_DIR); with
    `router` (the server function's), the model routes are forwarded to each model's own
    function (model_api.router) instead of being served from `service`; `reports` is the store
    the model's drift reports are read from (default: REPORTS_BUCKET or REPORTS_DIR,
    model_api.aws.monitor.report_store).
    """
    app = answer_errors(RestApiResolver())
    if repository is None and service is None:
        raise ValueError("create_app: a function without a service (the server function) "
                         "needs its repository and its router")

    # What only some routes read is built, and its modules imported, by the first route that
    # reads it (functools.cache: once): a model function's first /infer pays for none of it.
    @functools.cache
    def report_store() -> CaptureStore | None:
        # The drift reports' modules (monitoring, zipfile: 8-12 ms of a cold start)
        if reports is not None:
            return reports
        from model_api.aws.monitor import report_store as of  # numpy: imported here alone

        return of(os.environ)

    @functools.cache
    def versions() -> Repository:
        # A model function's repository: its own versions (model_api.repository)
        if repository is not None:
            return repository
        from model_api.repository import ServiceRepository

        return ServiceRepository(service)  # type: ignore[arg-type]

    def refuse_load(model: str) -> dict[str, Any]:
        from model_api.repository import refuse_load as refused

        return refused(model)

    @functools.cache
    def pages() -> Console:
        # The console's module (its pages' table, StaticFile)
        if console is not None:
            return console
        from model_api.console import Console

        return Console.from_environment()

    def repository_index() -> Response:
        body = raw_body(app.current_event.raw_event)
        from model_api.repository import repository_index as index

        return json_response(200, index(versions(), body))

    def monitoring(model: str) -> Response:
        if router is not None:  # the server function: the models of its catalog
            if router.catalog.find(model) is None:
                raise NotFound(router.catalog.unknown(model))
        elif service is not None:
            service.model(model)
        from model_api.monitoring.reports import answer as monitoring_report

        return json_response(200, monitoring_report(report_store(), model))

    def console_page() -> Response:
        # API Gateway serves the stage's root both as /v1 and /v1/; the page's relative links
        # (static/…, v2/…) need the slash.
        sent = app.current_event.request_context.path or "/"
        if not sent.endswith("/"):
            return Response(status_code=301, headers={"Location": sent + "/"}, body="")
        return static_response(pages().page("console"))

    bind_routes(app, SERVER, {
        "server_metadata": json_handler(server.server_metadata),
        "live": json_handler(server.live),
        "ready": json_handler(lambda: versions().ready()),
        "repository_index": repository_index,
        "repository_load": json_handler(refuse_load),
        "repository_unload": json_handler(refuse_load),
        "console": console_page,
        "docs": lambda: static_response(pages().page("docs")),
        "asset": lambda asset: static_response(pages().asset(asset)),
        "openapi": lambda: static_response(pages().openapi()),
        "monitoring": monitoring,
    })
    if router is not None:
        from model_api.aws.router import proxy_parts

        def forward(model: str, version: str | None = None) -> Response:
            status, headers, body = proxy_parts(router.forward(model, app.current_event.raw_event))
            return Response(status_code=status, headers=headers, body=body)

        return bind_routes(app, MODEL, {route.operation: forward for route in routes_of(MODEL)})
    if service is None:
        raise ValueError("create_app: a function without a service (the server function) "
                         "needs its router")
    return _serve_models(app, service)


def _serve_models(app: RestApiResolver, service: InferenceService) -> RestApiResolver:
    """`app` with the model routes served from `service`."""
    @tracer.capture_method(capture_response=False)
    def run_inference(model: str, version: str | None, explain: bool = False) -> Response:
        """Infer (or, `explain`, explain) and answer; metrics ExplainLatency/ExplainRows
        for explanations, InferenceLatency/InferenceRows otherwise."""
        event = app.current_event
        started = time.perf_counter()
        operation = service.explain if explain else service.infer
        # An answer's `id` when the request has none: API Gateway's request id, which the
        # client also gets as x-amzn-RequestId and the logs carry.
        result = operation(model, version, raw_body(event.raw_event), dict(event.headers),
                           event.request_context.request_id or "")
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

    return bind_routes(app, MODEL, {
        "metadata": json_handler(service.model_metadata),
        "ready": json_handler(service.model_ready),
        "infer": lambda model, version=None: run_inference(model, version),
        "explain": lambda model, version=None: run_inference(model, version, explain=True),
    })
