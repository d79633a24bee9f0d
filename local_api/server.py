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

from local_api import events, gateway, lambda_endpoint
from local_api.lambda_endpoint import LocalLambda
from local_api.routes import RouteTable
from local_api.sandbox import Sandbox
from local_api.template import TemplateSpec
from local_api.worker import FunctionError, FunctionPool, RequestTooLarge

LOG = logging.getLogger(__name__)
# What a gateway response's $context.path may hold as is: RFC 3986 path characters and the
# escapes; anything else a client got through raw (a quote, a backslash, a control character)
# is percent-encoded, so the path always renders inside a JSON string.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


@dataclass(frozen=True)
class Settings:
    api_key: str | None = None
    integration_timeout: float = gateway.INTEGRATION_TIMEOUT_S
    max_workers: int = 4
    # Lambda's Invoke API for the functions themselves (None: not offered).
    local_lambda: LocalLambda | None = None


async def _read_body(request: Request) -> bytes:
    """The body, refused past API Gateway's payload limit without reading all of it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > gateway.PAYLOAD_LIMIT:
        raise gateway.GatewayError("REQUEST_TOO_LARGE", f"Content-Length {declared}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > gateway.PAYLOAD_LIMIT:
            raise gateway.GatewayError("REQUEST_TOO_LARGE", "body over 10 MB")
    return bytes(body)


class LocalApi:
    """What the app serves: the template's routes, a pool per function, the gateway's rules."""

    def __init__(self, spec: TemplateSpec, sandboxes: dict[str, Sandbox], settings: Settings):
        self.spec = spec
        self.settings = settings
        self.routes = RouteTable(spec.routes)
        self.pools = {name: FunctionPool(sandbox, settings.max_workers)
                      for name, sandbox in sandboxes.items()}

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
        context = {"httpMethod": http.method, "path": f"/{self.spec.stage_name}{raw_path}",
                   "stage": self.spec.stage_name, "requestId": request_id,
                   "apiId": events.API_ID, "domainName": http.header("host") or ""}
        target = "gateway"
        try:
            http = dataclasses.replace(http, body=await _read_body(request))
            match = self.routes.match(http.method, raw_path)
            if match is None:
                raise gateway.GatewayError("MISSING_AUTHENTICATION_TOKEN", "no such route")
            context["resourcePath"] = match.route.path
            key = self.settings.api_key
            if (key is not None and match.route.api_key_required
                    and http.header("x-api-key") != key):
                raise gateway.GatewayError("INVALID_API_KEY", "missing or wrong x-api-key")
            target = match.route.function_id
            event = events.build_event(
                http, match, stage=self.spec.stage_name,
                stage_variables=self.spec.stage_variables,
                binary_media_types=self.spec.binary_media_types, request_id=request_id,
                api_key=key)
            answer = await self._integrate(target, event)
            response = Response(answer.body, answer.status)
            headers = answer.headers
        except gateway.GatewayError as error:
            LOG.warning("%s %s: %s", http.method, http.path, error)
            rendered = gateway.render(self.spec.gateway_responses, error.response_type, context)
            response = Response(rendered.body, rendered.status)
            headers = rendered.headers
        response.raw_headers += [(name.lower().encode("latin-1"), value.encode("latin-1"))
                                 for name, value in [*headers, ("x-amzn-RequestId", request_id)]]
        LOG.info('%s "%s %s" %d %.1f ms (%s)', http.source_ip, http.method, http.path,
                 response.status_code, (time.perf_counter() - started) * 1000, target)
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
            LOG.info("Lambda Invoke %s (%s)", function.logical_id, "error" if
                     "X-Amz-Function-Error" in headers else "ok")
            return Response(answer.encode(), 200, headers=headers,
                            media_type="application/json")
        except lambda_endpoint.LambdaError as error:
            LOG.warning("Lambda Invoke %s: %s %s", name, error.error_type, error.message)
            return Response(error.body(), error.status, media_type="application/json",
                            headers={"x-amzn-ErrorType": error.error_type})

    async def _integrate(self, function_id: str, event: dict[str, Any]) -> events.HttpAnswer:
        """The Lambda proxy integration: invoke, then turn the answer into HTTP."""
        pool = self.pools[function_id]
        try:
            answer_json = await asyncio.wait_for(pool.invoke(event),
                                                 self.settings.integration_timeout)
            return events.to_http(answer_json, self.spec.binary_media_types)
        except TimeoutError:
            raise gateway.GatewayError(
                "INTEGRATION_TIMEOUT",
                f"no answer within {self.settings.integration_timeout:g} s") from None
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

    async def close(self) -> None:
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
    config = uvicorn.Config(api.app(), host=host, port=port, log_level="warning",
                            access_log=False, lifespan="on", timeout_graceful_shutdown=5,
                            server_header=False)
    # uvicorn re-raises the signal that stopped it once it has shut down; these make that a no-op
    # so that Ctrl-C and SIGTERM both end in a clean exit.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(config).run()
