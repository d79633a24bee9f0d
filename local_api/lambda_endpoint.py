"""Lambda's Invoke API on the local API, for a function that invokes another (the server function
asks each model function whether it is ready, model_api.aws.invoked_repository): what `sam local
start-lambda` offers, served by the same process so the invoked function runs in the same pools.

`POST /2015-03-31/functions/{FunctionName}/invocations` (boto3's `invoke`), RequestResponse
only; FunctionName is the logical id or function name, with an optional `:qualifier` or as an
ARN (there is one build of each function locally, so `live` and `$LATEST` are the same code).
Answers as Lambda does: 200 with the function's answer, or with its error document and
`X-Amz-Function-Error: Unhandled`; 404 ResourceNotFoundException for an unknown function.

Only the functions this process runs can call it: each gets, as Lambda gives a function its
role's credentials, a per-process access key (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and
boto3's endpoint setting AWS_ENDPOINT_URL_LAMBDA pointing here; a request whose SigV4
`Credential=` is not that key id is refused (403), so a client of the API cannot invoke a
function directly, past the API key. Only the local API sets these variables: in AWS the same
code reaches Lambda itself.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from local_api.template import FunctionSpec

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations$")
_ARN = re.compile(r"^arn:[^:]+:lambda:[^:]*:[^:]*:function:(?P<name>[^:]+)(?::[^:]+)?$")


@dataclass(frozen=True)
class LambdaError(Exception):
    """An error answer of the Invoke API: HTTP status, Lambda's error type and message."""

    status: int
    error_type: str
    message: str

    def body(self) -> bytes:
        return json.dumps({"Type": "User", "message": self.message}).encode()


@dataclass(frozen=True)
class LocalLambda:
    """The endpoint's URL and the per-process access key that its callers sign with."""

    url: str
    access_key_id: str
    secret_access_key: str
    # Other key ids of this process's functions: the batch functions sign with the local
    # stack's (local_api.batch.stack), which is local too.
    other_key_ids: tuple[str, ...] = ()

    @classmethod
    def create(cls, host: str, port: int) -> LocalLambda:
        """For a local API on `host`:`port` (a wildcard host is reached on loopback)."""
        reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        if ":" in reachable:
            reachable = f"[{reachable}]"
        return cls(f"http://{reachable}:{port}", "LOCAL" + secrets.token_hex(8).upper(),
                   secrets.token_urlsafe(30))

    def environment(self) -> dict[str, str]:
        """What each function gets: boto3 finds the endpoint and the credentials by itself."""
        return {"AWS_ENDPOINT_URL_LAMBDA": self.url, "AWS_ACCESS_KEY_ID": self.access_key_id,
                "AWS_SECRET_ACCESS_KEY": self.secret_access_key}

    def check_caller(self, authorization: str | None) -> None:
        """LambdaError 403 unless the request is signed with this process's access key id."""
        if not any(f"Credential={key}/" in (authorization or "")
                   for key in (self.access_key_id, *self.other_key_ids)):
            raise LambdaError(403, "UnrecognizedClientException",
                              "The security token included in the request is invalid: only "
                              "the functions of this local API may invoke its functions")


def find_function(name: str, functions: dict[str, FunctionSpec]) -> FunctionSpec:
    """The function `name` (logical id, function name, `name:qualifier` or ARN) refers to;
    LambdaError 404 when there is none."""
    name = unquote(name)
    arn = _ARN.match(name)
    bare = arn.group("name") if arn else name.split(":", 1)[0]
    for function in functions.values():
        if bare in (function.logical_id, function.function_name):
            return function
    raise LambdaError(404, "ResourceNotFoundException", f"Function not found: {name}")


def parse_payload(body: bytes) -> Any:
    """The invocation's event; LambdaError 400 when it is not JSON (as Lambda refuses it)."""
    try:
        return json.loads(body or b"{}")
    except ValueError as exc:
        raise LambdaError(400, "InvalidRequestContentException",
                          f"Could not parse request body into json: {exc}") from exc
