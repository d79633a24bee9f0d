"""boto3 clients with the retry policy every batch component shares.

Transient S3 and DynamoDB faults (throttling, 5xx, dropped connections) are retried with
exponential backoff and jitter by botocore's "standard" mode; anything still failing after
`AWS_MAX_ATTEMPTS` attempts surfaces as a clear error. `AWS_ENDPOINT_URL` (read by boto3
itself) points every client at a local moto server in `make batch-local` and the tests.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config

DEFAULT_ATTEMPTS = 8


def retry_config() -> Config:
    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", DEFAULT_ATTEMPTS))
    return Config(retries={"total_max_attempts": attempts, "mode": "standard"},
                  connect_timeout=10, read_timeout=60)


# What the jobs API (an API Gateway request, answered within its 29 s) allows a store call:
# seconds to connect, seconds to read an answer, attempts in all. A store that does not answer
# is then a 503 in a few seconds (batch.jobs_api.store_faults), not a 504 after 29 s.
API_CONNECT_TIMEOUT_S = 2
API_READ_TIMEOUT_S = 3
API_ATTEMPTS = 2


def api_config() -> Config:
    """The retry policy of a call made while a client waits (the jobs API): short timeouts and
    one retry, so that the worst case (2 x (2 + 3) s) stays far inside API Gateway's 29 s."""
    return Config(retries={"total_max_attempts": API_ATTEMPTS, "mode": "standard"},
                  connect_timeout=API_CONNECT_TIMEOUT_S, read_timeout=API_READ_TIMEOUT_S)


def client(service: str, config: Config | None = None) -> Any:
    """A client for `service` with the shared retry policy (or `config`)."""
    return boto3.client(service, config=config or retry_config())  # type: ignore[call-overload]


def resource(service: str, config: Config | None = None) -> Any:
    return boto3.resource(service, config=config or retry_config())  # type: ignore[call-overload]
