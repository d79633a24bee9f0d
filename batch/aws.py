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


def client(service: str) -> Any:
    """A client for `service` with the shared retry policy."""
    return boto3.client(service, config=retry_config())  # type: ignore[call-overload]


def resource(service: str) -> Any:
    return boto3.resource(service, config=retry_config())  # type: ignore[call-overload]
