"""HTTP request -> API Gateway REST proxy event (payload 1.0); handler answer -> HTTP.

The event has the keys and shapes of API Gateway's (and of `sam local start-api`'s, checked by
tests/local_api/test_events.py): empty maps are null, `path` is the request path while
requestContext.path carries the stage prefix, and a body whose Content-Type matches a binary
media type is base64-encoded (`*/*` matches every body; no body is null, isBase64Encoded false).
Header names are presented as `sam local start-api` (werkzeug) presents them, Title-Cased:
an ASGI server lowercases them.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from local_api.routes import Match
from local_api.sandbox import ACCOUNT_ID

API_ID = "1234567890"
RESOURCE_ID = "123456"
# What a REST API accepts in a Lambda proxy answer (any other key is a malformed answer).
ANSWER_KEYS = {"statusCode", "body", "headers", "multiValueHeaders", "isBase64Encoded",
               "base64Encoded", "cookies"}
# Headers API Gateway does not pass through from an answer: it sends them as x-amzn-Remapped-*.
REMAPPED_HEADERS = {"connection", "content-length", "date", "server", "transfer-encoding"}


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str  # as sent, percent-encoded (as a REST API passes it on), without the stage
    headers: Sequence[tuple[str, str]]
    query: Sequence[tuple[str, str]]
    body: bytes
    source_ip: str
    port: int
    protocol: str = "HTTP/1.1"

    def header(self, name: str) -> str | None:
        """The last value of a header, matched case-insensitively."""
        found = [value for key, value in self.headers if key.lower() == name.lower()]
        return found[-1] if found else None


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class MalformedAnswer(ValueError):
    """An answer API Gateway refuses ("Malformed Lambda proxy response"): a 502."""


class UndecodableBody(ValueError):
    """isBase64Encoded with a body that is not base64: API Gateway's API_CONFIGURATION_ERROR."""


def is_binary(binary_media_types: Sequence[str], content_type: str | None) -> bool:
    """Whether a Content-Type matches one of the API's binary media types (`type/*` included)."""
    if "*/*" in binary_media_types:
        return True
    if not content_type:
        return False
    media_type = content_type.split(";")[0].strip().lower()
    return any(media_type == pattern.lower()
               or (pattern.endswith("/*") and media_type.startswith(pattern[:-1].lower()))
               for pattern in binary_media_types)


def _single_and_multi(pairs: Sequence[tuple[str, str]]) -> tuple[dict[str, str] | None,
                                                                 dict[str, list[str]] | None]:
    """API Gateway's pair of maps: the last value of each name, and all of them; null if none."""
    multi: dict[str, list[str]] = {}
    for key, value in pairs:
        multi.setdefault(key, []).append(value)
    if not multi:
        return None, None
    return {key: values[-1] for key, values in multi.items()}, multi


def build_event(request: HttpRequest, match: Match, *, stage: str,
                stage_variables: dict[str, str] | None, binary_media_types: Sequence[str],
                request_id: str, api_key: str | None = None) -> dict[str, Any]:
    """The event API Gateway sends the function for this request."""
    headers = [(key.title(), value) for key, value in request.headers]
    forwarded_for = request.header("x-forwarded-for")
    headers = [pair for pair in headers if pair[0] not in
               ("X-Forwarded-For", "X-Forwarded-Port", "X-Forwarded-Proto")]
    headers += [("X-Forwarded-For", f"{forwarded_for}, {request.source_ip}" if forwarded_for
                 else request.source_ip),
                ("X-Forwarded-Port", str(request.port)), ("X-Forwarded-Proto", "http")]
    single_headers, multi_headers = _single_and_multi(headers)
    query, multi_query = _single_and_multi(request.query)

    body: str | None = None
    encoded = False
    if request.body:
        encoded = is_binary(binary_media_types, request.header("content-type"))
        body = (base64.b64encode(request.body).decode() if encoded
                else request.body.decode("utf-8", errors="replace"))

    now = time.time()
    context: dict[str, Any] = {
        "resourceId": RESOURCE_ID,
        "resourcePath": match.route.path,
        "httpMethod": request.method,
        "extendedRequestId": request_id,
        "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "path": f"/{stage}{request.path}",
        "accountId": ACCOUNT_ID,
        "protocol": request.protocol,
        "stage": stage,
        "domainName": request.header("host"),
        "requestTimeEpoch": int(now * 1000),
        "requestId": request_id,
        "identity": {
            "cognitoIdentityPoolId": None, "accountId": None, "cognitoIdentityId": None,
            "caller": None, "apiKey": api_key, "accessKey": None,
            "sourceIp": request.source_ip, "cognitoAuthenticationType": None,
            "cognitoAuthenticationProvider": None, "userArn": None,
            "userAgent": request.header("user-agent"), "user": None,
        },
        "apiId": API_ID,
    }
    if match.route.operation_name:
        context["operationName"] = match.route.operation_name
    return {
        "resource": match.route.path,
        "path": request.path,
        "httpMethod": request.method,
        "headers": single_headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": match.path_parameters or None,
        "stageVariables": stage_variables or None,
        "requestContext": context,
        "body": body,
        "isBase64Encoded": encoded,
    }


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _flag(answer: dict[str, Any]) -> bool:
    """REST APIs read `base64Encoded` first, then `isBase64Encoded` (as SAM CLI found)."""
    value = answer.get("base64Encoded", answer.get("isBase64Encoded", False))
    if value in ("true", "True", "false", "False"):
        return value in ("true", "True")
    if not isinstance(value, bool):
        raise MalformedAnswer(f"isBase64Encoded is not a boolean: {value!r}")
    return value


def _merged_headers(answer: dict[str, Any]) -> list[tuple[str, str]]:
    """multiValueHeaders, then the `headers` values they do not already hold."""
    single, multi = answer.get("headers"), answer.get("multiValueHeaders")
    single, multi = {} if single is None else single, {} if multi is None else multi
    if not isinstance(single, dict) or not isinstance(multi, dict) or not all(
            isinstance(values, list) for values in multi.values()):
        raise MalformedAnswer("headers must be a map and multiValueHeaders a map of lists")
    merged = [(key, _text(value)) for key, values in multi.items() for value in values]
    for key, value in single.items():
        if (key, _text(value)) not in merged:
            merged.append((key, _text(value)))
    return [(f"x-amzn-Remapped-{key}" if key.lower() in REMAPPED_HEADERS else key, value)
            for key, value in merged]


def to_http(answer_json: str, binary_media_types: Sequence[str]) -> HttpAnswer:
    """The HTTP answer API Gateway makes of a Lambda proxy answer (a MalformedAnswer if none)."""
    answer = json.loads(answer_json)
    if not isinstance(answer, dict):
        raise MalformedAnswer(f"the answer is a {type(answer).__name__}, not an object")
    if unknown := set(answer) - ANSWER_KEYS:
        raise MalformedAnswer(f"unknown keys {sorted(unknown)}")
    status = answer.get("statusCode")
    try:
        status = int(status)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise MalformedAnswer(f"statusCode is not an integer: {status!r}") from None
    if not 100 <= status <= 599:
        raise MalformedAnswer(f"statusCode {status} is not an HTTP status")
    body = answer.get("body")
    if body is not None and not isinstance(body, str):
        raise MalformedAnswer(f"body is a {type(body).__name__}, not a string")
    headers = _merged_headers(answer)
    if not any(key.lower() == "content-type" for key, _ in headers):
        headers.append(("Content-Type", "application/json"))
    content_type = next(value for key, value in headers if key.lower() == "content-type")
    data = (body or "").encode()
    if _flag(answer) and is_binary(binary_media_types, content_type):
        try:
            data = base64.b64decode(body or "", validate=True)
        except binascii.Error as exc:
            raise UndecodableBody(str(exc)) from None
    return HttpAnswer(status, headers, data)
