"""A thin dispatch of API Gateway REST proxy events over the route table (model_api.routes).

Why not Powertools' `APIGatewayRestResolver`, which the developers' guide would prefer: importing
it costs 45 ms of every cold start (`python -X importtime` in the deployed sandbox, issue 24;
docs/performance.md, "Cold start since issue 24"), because the package `__init__` of
`aws_lambda_powertools.event_handler` imports every resolver it has (AppSync's pulls in
asyncio, 20 ms; the data classes pull in zipfile and tempfile for CodePipeline events, 15 ms;
OpenAPI) while a model function needs one table lookup. This module keeps the part of that
resolver this API uses, with its behaviour unchanged for our routes:

- routes match `<name>` segments of `[-._~()'!*:@,;=+&$%<> \\[\\]{}|^\\w]+` (Powertools' rule
  syntax, `Route.resolver_path`), static routes before dynamic ones, each in the order added,
  the path's trailing slashes ignored (the REST resolver's rule);
- a handler's exception goes to the handler registered for the nearest class in its MRO
  (`exception_handler`, `not_found` for a path no route matches);
- the answer is the REST proxy integration's dict: `statusCode`, `body`, `isBase64Encoded` and
  `multiValueHeaders`; a bytes body goes base64-encoded; a `Response(compress=True)` is gzipped
  (level 9) when the request's Accept-Encoding names gzip, with `Content-Encoding: gzip`.

No CORS (the API sets none) and no OpenAPI validation (docs/openapi.json is generated from the
route table, model_registry.openapi). The Lambda handler's Powertools decorators (logger,
tracer, metrics) are unchanged.
"""

from __future__ import annotations

import base64
import functools
import re
import zlib
from collections.abc import Callable, Mapping
from typing import Any

JSON = "application/json"
_PARAMETER = re.compile(r"<(\w+)>")
_SEGMENT = r"[-._~()'!*:@,;=+&$%<> \[\]{}|^\w]+"  # one path segment (Powertools' rule)
_TEMPLATE_PARAMETER = re.compile(r"\{([^{}+]+)\+?\}")


class Response:
    """One answer: status, headers (`content_type` fills Content-Type unless `headers` has it; a
    list is a header sent several times), a text or bytes body; `compress` gzips it for a client
    that accepts gzip."""

    def __init__(self, status_code: int, content_type: str | None = None,
                 body: str | bytes | None = None,
                 headers: Mapping[str, str | list[str]] | None = None,
                 compress: bool | None = None) -> None:
        self.status_code = status_code
        self.body = body
        self.headers: dict[str, str | list[str]] = dict(headers) if headers else {}
        self.compress = compress
        if content_type:
            self.headers.setdefault("Content-Type", content_type)


class NotFoundError(Exception):
    """No route matches the request's method and path."""


class RequestContext:
    """The event's `requestContext`: the id API Gateway gave the request and the path the client
    sent (with the stage)."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw

    @property
    def request_id(self) -> str:
        return str(self.raw["requestId"])

    @property
    def path(self) -> str:
        return str(self.raw["path"])


class RestEvent:
    """A REST API proxy event (payload 1.0): what the handlers read of it."""

    def __init__(self, raw_event: dict[str, Any]) -> None:
        self.raw_event = raw_event

    @property
    def http_method(self) -> str:
        return str(self.raw_event["httpMethod"])

    @property
    def path(self) -> str:
        return str(self.raw_event["path"])

    @property
    def headers(self) -> dict[str, str]:
        """The single-value headers, names lower-cased (HTTP names are case-insensitive)."""
        sent = self.raw_event.get("headers") or {}
        return {name.lower(): value for name, value in sent.items()}

    @property
    def request_context(self) -> RequestContext:
        return RequestContext(self.raw_event["requestContext"])

    def get_query_string_value(self, name: str, default_value: str | None = None) -> str | None:
        """A query string parameter's value, or `default_value` when the request has none."""
        found = (self.raw_event.get("queryStringParameters") or {}).get(name)
        return default_value if found is None else str(found)

    def accepts_gzip(self) -> bool:
        """Whether Accept-Encoding names gzip (the multi-value headers first, as API Gateway
        sends both)."""
        multi = {name.lower(): value
                 for name, value in (self.raw_event.get("multiValueHeaders") or {}).items()}
        encoding: Any = multi.get("accept-encoding", "") if multi else \
            self.headers.get("accept-encoding", "")
        if isinstance(encoding, list):
            encoding = ",".join(encoding)
        return isinstance(encoding, str) and "gzip" in encoding


def path_from_parameters(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """The event with `path` rebuilt from the `resource` API Gateway matched and its decoded
    `pathParameters`.

    A REST API matches the decoded path against its resources, then hands the function the path
    as the client sent it, still percent-encoded (`/v2/models/breast%2Dcancer-mlp/ready`,
    `.../versions/%31/infer`), with the resource (`/v2/models/breast-cancer-mlp/ready`, or
    `.../versions/{version}/infer`) and the parameters decoded (`{"version": "1"}`). The resolver
    routes on `path` and passes its raw segments on, so without this step the function would
    look up model `breast%2Dcancer-mlp` and version `%31`; with it, the function serves what the
    resource and the parameters name. An event without a resource is returned unchanged.
    """
    resource, parameters = event.get("resource"), event.get("pathParameters") or {}
    if not isinstance(resource, str) or not isinstance(parameters, dict):
        return event

    def value(found: re.Match[str]) -> str:
        named = parameters.get(found.group(1))
        return named if isinstance(named, str) else found.group(0)

    return {**event, "path": _TEMPLATE_PARAMETER.sub(value, resource)}


class _Route:
    def __init__(self, rule: str, method: str, handler: Callable[..., Response]) -> None:
        self.rule = rule
        self.method = method
        self.dynamic = _PARAMETER.search(rule) is not None
        self.handler = handler

    @functools.cached_property
    def pattern(self) -> re.Pattern[str]:
        """The rule as a regular expression, compiled when a request first gets this far: a
        cold start compiles only the routes its first request tries (each compile is
        Python, ~0.2 ms; a function has 20 routes)."""
        return re.compile("^" + _PARAMETER.sub(
            lambda found: f"(?P<{found.group(1)}>{_SEGMENT})", self.rule) + "/*$")


class RestApiResolver:
    """Routes REST API proxy events to their handlers (see the module's docstring)."""

    current_event: RestEvent
    lambda_context: Any = None

    def __init__(self) -> None:
        self._routes: list[_Route] = []
        self._exception_handlers: dict[type[BaseException], Callable[[Any], Response]] = {}

    def route(self, rule: str, method: str) -> Callable[[Callable[..., Response]],
                                                        Callable[..., Response]]:
        """Serve `method` at `rule` (`/v2/models/<model>/infer`) with the decorated handler,
        called with the rule's parameters as keywords."""
        def add(handler: Callable[..., Response]) -> Callable[..., Response]:
            self._routes.append(_Route(rule.rstrip("/"), method.upper(), handler))
            return handler
        return add

    def exception_handler(self, kind: type[BaseException]) -> Callable[[Callable[[Any], Response]],
                                                                       Callable[[Any], Response]]:
        """Answer an exception of `kind` (or a subclass without its own handler) with the
        decorated function."""
        def add(handler: Callable[[Any], Response]) -> Callable[[Any], Response]:
            self._exception_handlers[kind] = handler
            return handler
        return add

    def not_found(self, handler: Callable[[Any], Response]) -> Callable[[Any], Response]:
        """Answer a request no route matches with the decorated function."""
        return self.exception_handler(NotFoundError)(handler)

    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        """The proxy integration's answer to `event`, routed on its resource and decoded path
        parameters (`path_from_parameters`)."""
        self.current_event = RestEvent(dict(path_from_parameters(event)))
        self.lambda_context = context
        method, path = self.current_event.http_method.upper(), self.current_event.path
        compress: bool | None = False
        try:
            response = self._dispatch(method, path)
            compress = response.compress
        except Exception as error:  # every failure is answered by its exception handler
            response = self._answer_error(error)
        return self._build(response, compress=bool(compress))

    def _dispatch(self, method: str, path: str) -> Response:
        for dynamic in (False, True):
            for route in self._routes:
                if route.dynamic is not dynamic or route.method != method:
                    continue
                found = route.pattern.match(path)
                if found:
                    return route.handler(**found.groupdict())
        raise NotFoundError()

    def _answer_error(self, error: Exception) -> Response:
        for kind in type(error).__mro__:
            handler = self._exception_handlers.get(kind)
            if handler is not None:
                return handler(error)
        raise error

    def _build(self, response: Response, compress: bool) -> dict[str, Any]:
        body = response.body
        if compress and body is not None and self.current_event.accepts_gzip():
            response.headers["Content-Encoding"] = "gzip"
            gzip = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
            raw = body.encode("utf-8") if isinstance(body, str) else body
            body = gzip.compress(raw) + gzip.flush()
        encoded = isinstance(body, bytes)
        if isinstance(body, bytes):
            body = base64.b64encode(body).decode()
        return {"statusCode": response.status_code, "body": body, "isBase64Encoded": encoded,
                "multiValueHeaders": {name: [value] if isinstance(value, str) else list(value)
                                      for name, value in response.headers.items()
                                      if value is not None}}
