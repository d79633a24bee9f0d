"""The root API's model routes: one URL and one API key for every model of the deployment.

A deployment serves its models in groups, each group by its own REST API in a nested stack
(docs/architecture.md, "Hundreds of models"), so no single API has every model's resources. The
root API declares each model route once with the model as a path parameter
(`/v2/models/{model}/infer`, ...), served by the server function, which forwards the request
unchanged to the model's own function (`Catalog.function_name`, alias live) with the Lambda
Invoke API and returns that function's answer as it is: the same status, headers and body a
client gets from the group's API. The cost is a second invocation (the server function waits
for the model's): clients that need the lowest latency call the group's URL directly.

Errors of its own, in the protocol's format: an unknown model is a 404 before anything is
invoked; a request too large for Lambda's 6 MB invoke payload a 413; a model function Lambda
throttles a 503 with Retry-After; one that fails, times out or cannot be invoked a 502.
"""

from __future__ import annotations

import base64
from typing import Any

from model_api import limits
from model_api.aws.invoke import Invoke, lambda_invoke
from model_api.catalog import Catalog
from model_api.errors import ModelAPIError, NotFound, TooLarge, Unavailable


class BadGateway(ModelAPIError):
    """502: the model function the request was forwarded to failed or could not be asked."""

    def __init__(self, message: str) -> None:
        super().__init__(502, message)


# Lambda's error code for an invoke payload over 6 MB (RequestResponse).
PAYLOAD_TOO_LARGE = "RequestTooLargeException"
# Lambda's error code for a function at its concurrency limit (429): a throttle, not a fault.
THROTTLED = "TooManyRequestsException"


class ModelRouter:
    """Forwards a model route's API Gateway event to the function of the model it names."""

    def __init__(self, catalog: Catalog, invoke: Invoke | None = None) -> None:
        self.catalog = catalog
        self._invoke = invoke

    def forward(self, model: str, event: dict[str, Any]) -> dict[str, Any]:
        """The model function's Lambda proxy response to `event` (an API Gateway REST proxy
        event of one of its routes). Raises NotFound for a model not in the catalog, TooLarge
        when Lambda refuses the payload, BadGateway when the function fails or cannot be
        invoked."""
        if self.catalog.find(model) is None:
            raise NotFound(self.catalog.unknown(model))
        if self._invoke is None:
            self._invoke = lambda_invoke(timeout_s=limits.ROUTER_INVOKE_TIMEOUT_S)
        function = self.catalog.function_name(model)
        try:
            answer = self._invoke(function, event)
        except Exception as exc:  # botocore's errors, the function's own: never a 500
            if _error_code(exc) == PAYLOAD_TOO_LARGE:
                raise TooLarge("request too large to forward to the model's function (Lambda "
                               "takes at most 6 MB per invocation): split it, or send it as an "
                               "asynchronous job: POST .../jobs") from exc
            if _error_code(exc) == THROTTLED:
                raise Unavailable(f"model {model!r}: its function is at its concurrency limit "
                                  "(Lambda throttled it); retry after Retry-After seconds"
                                  ) from exc
            raise BadGateway(f"model {model!r}: its function could not answer: {exc}") from exc
        if not isinstance(answer.get("statusCode"), int):
            raise BadGateway(f"model {model!r}: its function's answer is not an API response")
        return answer


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code if isinstance(code, str) else None


def proxy_parts(answer: dict[str, Any]) -> tuple[int, dict[str, Any], str | bytes]:
    """A Lambda proxy response as (status, headers, body): headers from multiValueHeaders where
    given (else headers), body as bytes when it was base64-encoded, else as text."""
    headers: dict[str, Any] = dict(answer.get("headers") or {})
    headers.update(answer.get("multiValueHeaders") or {})
    body = answer.get("body") or ""
    if answer.get("isBase64Encoded"):
        return answer["statusCode"], headers, base64.b64decode(body)
    return answer["statusCode"], headers, str(body)

