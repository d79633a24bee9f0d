"""Synchronous Lambda invocation, for the server function: the root API's model routes
(model_api.aws.router) and the repository index (model_api.aws.invoked_repository).

The local API runs the same code: it gives its functions a Lambda endpoint
(`AWS_ENDPOINT_URL_LAMBDA`, boto3's own setting) that invokes its local functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from model_api import limits

# The alias API Gateway invokes (AutoPublishAlias: live): the index shows what clients get.
MODEL_ALIAS = "live"

# (function name, event) -> the function's answer (a Lambda proxy response); raises on failure.
Invoke = Callable[[str, dict[str, Any]], dict[str, Any]]


def lambda_invoke(qualifier: str = MODEL_ALIAS,
                  timeout_s: float = limits.REPOSITORY_INVOKE_TIMEOUT_S) -> Invoke:
    """Invoke a function synchronously with boto3 (imported here: only the server function pays
    for botocore). The endpoint is boto3's own: Lambda's, or AWS_ENDPOINT_URL_LAMBDA where the
    local API sets it. One attempt, bounded by `timeout_s` (seconds). Raises RuntimeError when
    the function itself failed, botocore's errors when it could not be invoked."""
    import boto3
    from botocore.config import Config

    client = boto3.client("lambda", config=Config(
        connect_timeout=limits.REPOSITORY_INVOKE_TIMEOUT_S,
        read_timeout=timeout_s, retries={"max_attempts": 1},
        max_pool_connections=limits.REPOSITORY_INVOKE_CONCURRENCY))

    def invoke(function: str, event: dict[str, Any]) -> dict[str, Any]:
        answer = client.invoke(FunctionName=function, Qualifier=qualifier,
                               Payload=json.dumps(event).encode())
        payload = json.loads(answer["Payload"].read() or b"null")
        if answer.get("FunctionError"):
            error = payload if isinstance(payload, dict) else {}
            raise RuntimeError(f"{error.get('errorType', 'function error')}: "
                               f"{error.get('errorMessage', '')}")
        if not isinstance(payload, dict):
            raise RuntimeError("the function's answer is not a Lambda proxy response")
        return payload

    return invoke
