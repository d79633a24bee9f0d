"""The local API Gateway: a Starlette app served by uvicorn, one FunctionPool per function.

Each request goes through API Gateway's steps in its order: the 10 MB payload limit, the route,
the API key (only when the server was given one), then the function through a Lambda proxy
integration within the integration timeout; whatever API Gateway would answer itself is a
gateway response rendered from the template. Requests are served concurrently; each function's
pool decides how many run at once (see local_api.worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import request_response

from local_api import codings, events, gateway, lambda_endpoint
from local_api.http11 import READ_TIMEOUT_S, FramingProtocol
from local_api.lambda_endpoint import LocalLambda
from local_api.logs import FunctionLogs
from local_api.routes import RouteTable
from local_api.sandbox import Sandbox
from local_api.template import TemplateSpec
from local_api.worker import (
    ACCOUNT_CONCURRENCY,
    IDLE_TIMEOUT_S,
    MAX_LIVE_WORKERS,
    MAX_WORKERS,
    FunctionError,
    FunctionPool,
    NoWorker,
    RequestTooLarge,
    Reservation,
    Throttled,
    WorkerBudget,
)

LOG = logging.getLogger(__name__)
# What a gateway response's $context.path may hold as is: RFC 3986 path characters and the
# escapes; anything else a client got through raw (a quote, a backslash, a control character)
# is percent-encoded, so the path always renders inside a JSON string.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
# What is read and dropped of a refused request's body so that its client can read the refusal
# (Body.drain): a little over the largest body a client may mean to send (API Gateway's 10 MB),
# and never longer than a slow client deserves. Past either the connection is closed.
DRAIN_LIMIT = 4 * gateway.PAYLOAD_LIMIT
DRAIN_TIMEOUT_S = 10.0


def _concurrency(box: Sandbox, settings: LocalApiOptions) -> int:
    """A function's concurrency limit, Lambda's: its reserved concurrency, else the account's."""
    reserved = box.function.reserved_concurrency
    return settings.account_concurrency if reserved is None else \
        min(reserved, settings.account_concurrency)


@dataclass(frozen=True)
class LocalApiOptions:
    """How the local API serves: its API key (None: none asked), API Gateway's integration
    timeout, this machine's workers per function (`max_workers`) and in all, their idle time,
    the account's concurrency limit (Lambda's, which throttles), and whether it offers Lambda's
    Invoke API for the functions themselves."""

    api_key: str | None = None
    integration_timeout: float = gateway.INTEGRATION_TIMEOUT_S
    max_workers: int = MAX_WORKERS
    idle_timeout: float = IDLE_TIMEOUT_S
    max_live_workers: int = MAX_LIVE_WORKERS
    # Lambda's Invoke API for the functions themselves (None: not offered).
    local_lambda: LocalLambda | None = None
    # Seconds without a byte in the middle of a request before it is answered 408 (http11).
    read_timeout: float = READ_TIMEOUT_S
    # Lambda's concurrency limit of a function without reserved concurrency (the account's).
    account_concurrency: int = ACCOUNT_CONCURRENCY
    # Where the functions' log lines go (local_api.logs); default: all of them to stderr.
    function_logs: FunctionLogs = dataclasses.field(default_factory=FunctionLogs)


class ClientGone(Exception):
    """The client closed its connection before its request was whole."""


class Body:
    """A request's body read from the ASGI channel, so that what is left of it can be drained
    after an early refusal: a client that writes its whole body before it reads (Python's
    urllib, any client without `Expect: 100-continue`) then reads the refusal instead of a
    reset connection."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.started = False  # whether any of the body was asked for
        self.complete = request.method in ("GET", "HEAD") and \
            not request.headers.get("content-length") and \
            "transfer-encoding" not in request.headers

    async def _chunks(self) -> AsyncIterator[bytes]:
        while not self.complete:
            self.started = True  # the first receive sends `100 Continue` to a client waiting
            message = await self.request.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            self.complete = not message.get("more_body", False)
            yield message.get("body", b"")

    async def read(self) -> bytes:
        """The whole body, refused past API Gateway's payload limit without reading all of it."""
        declared = self.request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > gateway.PAYLOAD_LIMIT:
            raise gateway.GatewayError("REQUEST_TOO_LARGE", f"Content-Length {declared}")
        body = bytearray()
        async for chunk in self._chunks():
            body += chunk
            if len(body) > gateway.PAYLOAD_LIMIT:
                raise gateway.GatewayError("REQUEST_TOO_LARGE", "body over 10 MB")
        return bytes(body)

    async def drain(self) -> bool:
        """Read and drop the rest of the body, up to DRAIN_LIMIT bytes and DRAIN_TIMEOUT_S
        seconds; whether it was all read (if not, the connection is closed after the answer).
        A client waiting for `100 Continue` before it sends its body is not invited to send it
        (RFC 9110 §10.1.1): it gets the refusal at once, and the connection is closed."""
        declared = self.request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > DRAIN_LIMIT:
            return self.complete
        if not self.started and "100-continue" in self.request.headers.get("expect", "").lower():
            return self.complete
        dropped = 0
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                async for chunk in self._chunks():
                    dropped += len(chunk)
                    if dropped > DRAIN_LIMIT:
                        break
        except (TimeoutError, ClientGone):
            pass
        return self.complete


class LocalApi:
    """What the app serves: the template's routes, a pool per function, the gateway's rules."""

    def __init__(self, spec: TemplateSpec, sandboxes: dict[str, Sandbox],
                 settings: LocalApiOptions):
        self.spec = spec
        self.settings = settings
        self.routes = RouteTable(spec.routes)
        self.budget = WorkerBudget(settings.max_live_workers)
        self.pools = {
            name: FunctionPool(sandbox, _concurrency(sandbox, settings), settings.idle_timeout,
                               self.budget, settings.max_workers, settings.function_logs)
            for name, sandbox in sandboxes.items()}
        # Invocations still running after API Gateway stopped waiting for them (they run on, as
        # in Lambda); kept so that they are not garbage-collected and their errors are read.
        self._detached: set[asyncio.Task[str]] = set()

    async def handle(self, request: Request) -> Response:
        invoke = lambda_endpoint.INVOKE_PATH.match(request.scope["path"])
        if invoke and request.method == "POST" and self.settings.local_lambda is not None:
            return await self.invoke_api(request, invoke.group(1), self.settings.local_lambda)
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        # The path as sent, still percent-encoded, as routes match it and as a REST API passes it
        # on (the event's path, $context.path after the stage); path parameters are decoded by the
        # route match. Never request.url.path, which drops a decoded newline (/versions/%0A1 would
        # become /versions/1). See _PATH_SAFE.
        sent = request.scope.get("raw_path", request.scope["path"].encode()).decode("latin-1")
        raw_path = quote(sent, safe=_PATH_SAFE, encoding="latin-1")  # ASGI: no query string in it
        http = events.HttpRequest(
            method=request.method, path=raw_path, headers=list(request.headers.items()),
            query=list(request.query_params.multi_items()), body=b"",
            source_ip=request.client.host if request.client else "127.0.0.1",
            port=request.scope["server"][1] if request.scope.get("server") else 0,
            protocol=f"HTTP/{request.scope.get('http_version', '1.1')}")
        # $context.path is the path as called: on AWS the stage is part of it, here no caller
        # types one, so a gateway answer never shows a prefix the caller did not send.
        context = {"httpMethod": http.method, "path": raw_path,
                   "stage": self.spec.stage_name, "requestId": request_id,
                   "apiId": events.API_ID, "domainName": http.header("host") or ""}
        body = Body(request)
        served: list[str] = ["gateway"]  # the function that answered, once a route names it
        try:
            answer = await self._through_gateway(request, http, body, context, served)
            response = Response(answer.body, answer.status)
            headers = answer.headers
        except ClientGone:
            LOG.info('%s "%s %s" client closed the connection before its request was whole; '
                     'not invoked (%s)', http.source_ip, http.method, http.path, served[-1])
            return Response(b"", 400, headers={"connection": "close"})
        except gateway.GatewayError as error:
            rendered = gateway.render(self.spec.gateway_responses, error.response_type, context,
                                      error.status)
            response = Response(rendered.body, rendered.status)
            headers = rendered.headers
            if not await body.drain():
                headers = [*headers, ("Connection", "close")]
            refused = f": {error}"  # in the request's one log line, never a line of its own
        else:
            refused = ""
        response.raw_headers += [(name.lower().encode("latin-1"), value.encode("latin-1"))
                                 for name, value in [*headers, ("x-amzn-RequestId", request_id)]]
        LOG.info('%s "%s %s" %d %.1f ms (%s)%s', http.source_ip, http.method, http.path,
                 response.status_code, (time.perf_counter() - started) * 1000, served[-1],
                 refused)
        return response

    async def invoke_api(self, request: Request, name: str, local: LocalLambda) -> Response:
        """Lambda's Invoke API (RequestResponse) for this process's own functions."""
        try:
            local.check_caller(request.headers.get("authorization"))
            function = lambda_endpoint.find_function(name, self.spec.functions)
            kind = request.headers.get("x-amz-invocation-type", "RequestResponse")
            if kind != "RequestResponse":
                raise lambda_endpoint.LambdaError(
                    400, "InvalidParameterValueException",
                    f"the local API invokes RequestResponse only, not {kind}")
            event = lambda_endpoint.parse_payload(await request.body())
            headers = {"X-Amz-Executed-Version": "$LATEST"}
            try:
                answer = await self.pools[function.logical_id].invoke(event)
            except FunctionError as error:
                headers["X-Amz-Function-Error"] = "Unhandled"
                answer = json.dumps(error.payload)
            except RequestTooLarge as error:
                raise lambda_endpoint.LambdaError(
                    413, "RequestEntityTooLargeException", str(error)) from None
            except (Throttled, NoWorker) as error:
                raise lambda_endpoint.LambdaError(
                    429, "TooManyRequestsException", f"Rate Exceeded: {error}") from None
            LOG.info("Lambda Invoke %s (%s)", function.logical_id, "error" if
                     "X-Amz-Function-Error" in headers else "ok")
            return Response(answer.encode(), 200, headers=headers,
                            media_type="application/json")
        except lambda_endpoint.LambdaError as error:
            LOG.warning("Lambda Invoke %s: %s %s", name, error.error_type, error.message)
            return Response(error.body(), error.status, media_type="application/json",
                            headers={"x-amzn-ErrorType": error.error_type})

    async def _through_gateway(self, request: Request, http: events.HttpRequest, body: Body,
                               context: dict[str, str], served: list[str]) -> events.HttpAnswer:
        """API Gateway's steps for one request, in its order; a GatewayError where it answers
        itself, ClientGone when the client left before its request was whole."""
        declared = http.header("content-length") or ""
        if declared.isdigit() and int(declared) > gateway.PAYLOAD_LIMIT:
            raise gateway.GatewayError("REQUEST_TOO_LARGE", f"Content-Length {declared}")
        try:  # API Gateway refuses a coding it does not know before it identifies the API
            codings.check_supported(http.header("content-encoding"))
        except codings.UnsupportedCoding as error:
            raise gateway.GatewayError("UNSUPPORTED_MEDIA_TYPE", str(error)) from None
        match = self.routes.match(http.method, http.path)
        if match is None:
            raise gateway.GatewayError("MISSING_AUTHENTICATION_TOKEN", "no such route")
        context["resourcePath"] = match.route.path
        key = self.settings.api_key
        if (key is not None and match.route.api_key_required
                and http.header("x-api-key") != key):
            raise gateway.GatewayError("INVALID_API_KEY", "missing or wrong x-api-key")
        served.append(match.route.function_id)
        pool = self.pools[match.route.function_id]
        # Lambda's concurrency limit first: past it the request is throttled at once, and API
        # Gateway answers its INTEGRATION_FAILURE response (docs/architecture.md, "Overload").
        try:
            reservation = pool.reserve()
        except Throttled as error:
            raise gateway.GatewayError(
                "INTEGRATION_FAILURE", f"Lambda throttled the invocation: {error}",
                status=500) from None
        handed_over = False
        try:
            # Then one of this machine's workers, before the body is read: a burst holds at most
            # the workers' count of bodies, the others wait in their socket. The wait (the
            # model's turn among the function's flows) counts in API Gateway's timeout.
            waited = time.monotonic()
            try:
                await pool.admit(reservation, self.settings.integration_timeout,
                                 match.path_parameters.get("model", ""))
            except NoWorker as error:
                raise gateway.GatewayError("INTEGRATION_TIMEOUT", str(error)) from None
            waited = time.monotonic() - waited
            raw = await body.read()
            try:
                decoded = codings.decode(raw, http.header("content-encoding"),
                                         gateway.PAYLOAD_LIMIT)
            except codings.UnsupportedCoding as error:
                raise gateway.GatewayError("UNSUPPORTED_MEDIA_TYPE", str(error)) from None
            except codings.DecodedTooLarge as error:
                raise gateway.GatewayError("REQUEST_TOO_LARGE", str(error)) from None
            del raw
            event = events.build_event(
                dataclasses.replace(http, body=decoded), match, stage=self.spec.stage_name,
                stage_variables=self.spec.stage_variables,
                binary_media_types=self.spec.binary_media_types,
                request_id=context["requestId"], api_key=key)
            del decoded
            if await request.is_disconnected():
                raise ClientGone
            # From here the invocation owns the unit: it gives it back when it ends, even after
            # API Gateway stopped waiting for it.
            handed_over = True
            answer = await self._integrate(pool, reservation, event, context["requestId"],
                                           self.settings.integration_timeout - waited)
        finally:
            if not handed_over:
                pool.release(reservation)
        return self._compressed(answer, http.header("accept-encoding"))

    def _compressed(self, answer: events.HttpAnswer,
                    accept_encoding: str | None) -> events.HttpAnswer:
        """The answer as API Gateway sends it with payload compression on (codings module)."""
        threshold = self.spec.minimum_compression_size
        if threshold is None or len(answer.body) < threshold or any(
                name.lower() == "content-encoding" for name, _ in answer.headers):
            return answer
        # Compressed or not, this answer depends on Accept-Encoding: caches must know it.
        headers = codings.with_vary(answer.headers)
        coding = codings.negotiate(accept_encoding)
        if coding is None:
            return events.HttpAnswer(answer.status, headers, answer.body)
        return events.HttpAnswer(answer.status, [*headers, ("Content-Encoding", coding)],
                                 codings.encode(answer.body, coding))

    async def _integrate(self, pool: FunctionPool, reservation: Reservation,
                         event: dict[str, Any], request_id: str,
                         timeout: float) -> events.HttpAnswer:
        """The Lambda proxy integration: invoke, then turn the answer into HTTP. API Gateway's
        timeout (what is left of it after the wait for a worker: `timeout`) answers the client,
        and the invocation runs on to its end (or to the function's own Timeout), holding its
        unit of concurrency, as in Lambda."""
        invocation = asyncio.ensure_future(pool.run(reservation, event, request_id))
        try:
            answer_json = await asyncio.wait_for(asyncio.shield(invocation), max(timeout, 0.0))
            return events.to_http(answer_json, self.spec.binary_media_types)
        except TimeoutError:
            self._detached.add(invocation)
            invocation.add_done_callback(self._finished_late)
            raise gateway.GatewayError(
                "INTEGRATION_TIMEOUT",
                f"no answer within {self.settings.integration_timeout:g} s; the invocation "
                "runs on") from None
        except RequestTooLarge as error:
            raise gateway.GatewayError("REQUEST_TOO_LARGE", f"Lambda: {error}") from None
        except FunctionError as error:
            raise gateway.GatewayError("INTEGRATION_FAILURE", f"function error {error}") from None
        except events.MalformedAnswer as error:
            raise gateway.GatewayError("INTEGRATION_FAILURE",
                                       f"Malformed Lambda proxy response: {error}") from None
        except events.UndecodableBody as error:
            raise gateway.GatewayError("API_CONFIGURATION_ERROR",
                                       f"base64 decoding failed: {error}") from None

    def _finished_late(self, invocation: asyncio.Task[str]) -> None:
        self._detached.discard(invocation)
        if invocation.cancelled():
            return
        error = invocation.exception()
        LOG.info("an invocation the gateway stopped waiting for ended: %s",
                 f"error {error}" if error else "answered (too late for its client)")

    async def close(self) -> None:
        for invocation in list(self._detached):
            invocation.cancel()
        await asyncio.gather(*(pool.close() for pool in self.pools.values()))

    def app(self) -> Starlette:
        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            try:
                yield
            finally:
                await self.close()

        app = Starlette(lifespan=lifespan)
        # Every request reaches handle(), whatever its method or path (a newline included, which
        # a "/{path:path}" route does not match): the template's routes decide, and an unknown
        # one gets API Gateway's answer, never Starlette's plain-text 404 or 405.
        app.router.default = request_response(self.handle)
        return app


def serve(api: LocalApi, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, then stop the workers and return (no traceback)."""
    # HTTP/1.1 framing as RFC 9112 asks of a server at the front (local_api.http11).
    protocol = FramingProtocol.with_read_timeout(api.settings.read_timeout)
    config = uvicorn.Config(api.app(), host=host, port=port, log_level="warning",
                            access_log=False, lifespan="on", timeout_graceful_shutdown=5,
                            server_header=False, http=protocol)
    # uvicorn re-raises the signal that stopped it once it has shut down; these make that a no-op
    # so that Ctrl-C and SIGTERM both end in a clean exit.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(config).run()
