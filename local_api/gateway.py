"""API Gateway's own answers: its limits and the template's GatewayResponses.

When API Gateway answers instead of the function (no route, bad API key, body too large,
function error, timeout) it renders the GatewayResponse of that type, else DEFAULT_4XX or
DEFAULT_5XX, else its built-in `{"message": $context.error.messageString}`, with the type's own
status code unless the template sets one. The templates are VTL; those in use only reference
$context variables, which is what this renders (`messageString` is the message as a quoted
JSON string, `message` the bare text).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from local_api.template import GatewayResponses

PAYLOAD_LIMIT = 10 * 1024 * 1024  # API Gateway REST request payload: 10 MB
INTEGRATION_TIMEOUT_S = 29.0  # API Gateway REST integration timeout (the default maximum)

# Response type -> (API Gateway's default status, default message).
DEFAULTS: dict[str, tuple[int, str]] = {
    "MISSING_AUTHENTICATION_TOKEN": (403, "Missing Authentication Token"),
    "INVALID_API_KEY": (403, "Forbidden"),
    "REQUEST_TOO_LARGE": (413, "Request Too Long"),
    "UNSUPPORTED_MEDIA_TYPE": (415, "Unsupported Media Type"),
    # A Lambda proxy function error or malformed answer is a 502 (the documented default of the
    # type, 504, is not what a Lambda integration answers). Lambda's throttle (its 429) is this
    # type too, 500 where the template does not set a status (GatewayError.status;
    # docs/architecture.md, "Overload").
    "INTEGRATION_FAILURE": (502, "Internal server error"),
    "INTEGRATION_TIMEOUT": (504, "Endpoint request timed out"),
    "API_CONFIGURATION_ERROR": (500, "Internal server error"),
}
_BUILT_IN_TEMPLATE = '{"message":$context.error.messageString}'
_VARIABLE = re.compile(r"\$(?:context((?:\.[A-Za-z_]\w*)+)|\{context((?:\.[A-Za-z_]\w*)+)\})")


class GatewayError(Exception):
    """API Gateway answers this request itself, with the gateway response `response_type`."""

    def __init__(self, response_type: str, detail: str = "", status: int | None = None) -> None:
        super().__init__(f"{response_type}{': ' + detail if detail else ''}")
        self.response_type = response_type
        self.detail = detail  # for the local log only, never in the answer
        # API Gateway's status for this case where the template sets none (else the type's)
        self.status = status


@dataclass(frozen=True)
class GatewayAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def render_template(template: str, variables: dict[str, str]) -> str:
    """Substitute $context.x / ${context.x}; an unknown variable renders empty, as in VTL here."""
    def value(found: re.Match[str]) -> str:
        return variables.get((found.group(1) or found.group(2))[1:], "")
    return _VARIABLE.sub(value, template)


def render(responses: GatewayResponses, response_type: str,
           context: dict[str, str], status: int | None = None) -> GatewayAnswer:
    """The answer API Gateway gives for `response_type`; context holds the $context variables
    of the request (httpMethod, path, stage, requestId, resourcePath...); `status`, where given,
    is API Gateway's own status for the case when the template sets none."""
    default_status, message = DEFAULTS[response_type]
    default_status = status or default_status
    fallback = responses.get("DEFAULT_4XX" if default_status < 500 else "DEFAULT_5XX") or {}
    own = responses.get(response_type)
    chosen = own if own is not None else fallback
    status = int(chosen.get("StatusCode") or fallback.get("StatusCode") or default_status)
    templates = chosen.get("ResponseTemplates") or {}
    content_type = "application/json" if "application/json" in templates or not templates \
        else next(iter(templates))
    template = templates.get(content_type, _BUILT_IN_TEMPLATE)
    variables = {**context, "error.message": message,
                 "error.messageString": json.dumps(message),
                 "error.responseType": response_type}
    headers = [("Content-Type", content_type)]
    for name, value in (chosen.get("Headers") or {}).items():
        # Static values only ('...'); request mappings (method.request.header.x) are not rendered.
        if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == "'":
            headers.append((name, value[1:-1]))
    return GatewayAnswer(status, headers, render_template(template, variables).encode())
