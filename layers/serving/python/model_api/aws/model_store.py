"""The model store on S3 (template.src.yaml's ModelStoreBucket): ranged GETs through boto3 for
model_api.store.fetch_verified. The same code reads the deployed bucket (a model function, the
batch runner) and `make serve`'s local S3 (a moto server: AWS_ENDPOINT_URL points boto3 at it).
boto3 comes with Lambda's python runtime: no layer carries it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

# The variable naming the bucket: set on the functions of store-backed models and on the batch
# runner by the template (model_registry/template.py), and by `make serve` locally.
BUCKET_VARIABLE = "MODEL_STORE_BUCKET"
# The body of a ranged GET is copied into the model's buffer this many bytes at a time.
CHUNK_BYTES = 1 << 20


class S3Ranges:
    """Byte ranges of the objects of one S3 bucket (model_api.store.RangeReader)."""

    def __init__(self, bucket: str, client: Any = None) -> None:
        self.bucket = bucket
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            # As many connections as model_api.store's workers read parts at once, and retries
            # in standard mode (throttling and 5xx are retried with backoff).
            self._client = boto3.client("s3", config=Config(
                max_pool_connections=32, retries={"mode": "standard", "max_attempts": 5}))
        return self._client

    def read_range_into(self, key: str, start: int, out: memoryview) -> int:
        """One ranged GET, its body copied into `out` a chunk at a time as it arrives
        (model_api.store.RangeReader): no part held whole beside the buffer."""
        from botocore.exceptions import BotoCoreError, ClientError

        from model_api.store import StoreError

        end = start + len(out)
        done = 0
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=key,
                                            Range=f"bytes={start}-{end - 1}")
            for chunk in answer["Body"].iter_chunks(CHUNK_BYTES):
                if done + len(chunk) > len(out):
                    raise StoreError(f"s3://{self.bucket}/{key} bytes {start}-{end - 1}: "
                                     "more bytes came than the range holds")
                out[done:done + len(chunk)] = chunk
                done += len(chunk)
        except (BotoCoreError, ClientError) as error:
            raise StoreError(f"s3://{self.bucket}/{key} bytes {start}-{end - 1}: "
                             f"{error}") from error
        return done


def from_environment(environ: Mapping[str, str] = os.environ) -> S3Ranges | None:
    """The store a function is given ($MODEL_STORE_BUCKET), or None (no store-backed model)."""
    bucket = environ.get(BUCKET_VARIABLE, "")
    return S3Ranges(bucket) if bucket else None
