"""The model store for `make serve`: the template's ModelStoreBucket in the local S3 (the moto
server local_api.batch.stack starts), filled at start-up with every built version whose
manifest names a stored object (model_api.store), so a large model's function reads it through
the same code as on Lambda (model_api.aws.model_store: ranged GETs, sha256 on the stream).

Local only: nothing here ships.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

# The variable a store-backed function (and the batch runner) reads the bucket's name from
from model_api.aws.model_store import BUCKET_VARIABLE

from batch.aws import client
from local_api.template import FunctionSpec
from model_registry.store import stored_versions, sync

LOG = logging.getLogger(__name__)
BUCKET = "local-model-api-models"


__all__ = ["BUCKET", "BUCKET_VARIABLE", "fill", "overrides", "publish", "stored"]


def stored(function: FunctionSpec) -> bool:
    """Whether `function` serves a model version from the model store (its template
    environment names the store's bucket)."""
    return BUCKET_VARIABLE in function.environment


def publish(functions: Iterable[FunctionSpec], models_dir: Path,
            bucket: str = BUCKET) -> list[str]:
    """Create the versioned bucket in the local S3 boto3 is pointed at (AWS_ENDPOINT_URL) and
    fill it as `make deploy` fills the deployed one (model_registry.store.sync) with the stored
    versions the store-backed `functions`' model layers name (their files from the layer when
    it has them, else from `models_dir`, the exported models); the keys."""
    wanted: dict[str, tuple[Path, str]] = {}
    for function in functions:
        if not stored(function):
            continue
        for layer in function.layer_dirs:
            if (layer / "models").is_dir():
                wanted.update(stored_versions(layer / "models", models_dir))
    return fill(wanted, bucket)


def fill(wanted: dict[str, tuple[Path, str]], bucket: str = BUCKET) -> list[str]:
    """Create the versioned `bucket` in the local S3 boto3 is pointed at (AWS_ENDPOINT_URL) and
    sync `wanted` into it (key -> (file, sha256): model_registry.store.stored_versions), as
    `make deploy` fills the deployed one; the keys. `make serve` (publish) and `make
    batch-local` (local_api.batch.loop) both fill theirs here."""
    s3 = client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    sync(wanted, bucket, s3, log=LOG.info)
    return sorted(wanted)


def overrides(environments: Mapping[str, Mapping[str, str]], endpoint: str,
              credentials: Mapping[str, str], bucket: str = BUCKET) -> dict[str, dict[str, str]]:
    """For each function whose template environment names the model store, the variables that
    point it at the local one (function id -> variables)."""
    values = {"AWS_ENDPOINT_URL": endpoint, **credentials, BUCKET_VARIABLE: bucket}
    return {function: dict(values) for function, environment in environments.items()
            if BUCKET_VARIABLE in environment}
