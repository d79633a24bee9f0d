"""What the trigger function does with one S3 "Object Created" event (no Powertools here).

It validates the key, the model and the object's size, then claims the job id derived from
the object version with a conditional put and only then submits: a duplicate or retried event
finds the claim (or the submitted job) and submits nothing. A claim held by an invocation that
died expires with that invocation, so the retried event can take it over. The upload of a job
the API created (batch/input/<model>/jobs/<job_id>.<ext>) claims that job while it is
`awaiting_upload`; any other upload to its key (a second one, one after DELETE) starts nothing,
and an upload to the key of a job that is not there or being erased (erased, or never
created: its presigned URL outlives an erasure by up to its expiry) is deleted, that version of
it (`discard`): no job would ever erase its bytes.
A large input, or one whose creator asked for it, runs as an array job of N children
(batch.shards says how N is chosen); its record then has `shards` (N) and `shard_states`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.data_classes import S3EventBridgeNotificationEvent
from model_api.aws.dependencies import BATCH_BUCKET_ENV
from model_api.catalog import Catalog

from batch import shards
from batch.jobs import AWAITING_UPLOAD, ERASING, SUBMIT_FAILED, SUBMITTED, SUBMITTING, JobStore
from batch.keys import InputObject, InvalidKey, parse_key
from batch.submit import Submitter

LOG = logging.getLogger(__name__)
DEFAULT_MAX_BYTES = 100 * 1024**3


@dataclass(frozen=True)
class TriggerConfig:
    """The trigger's environment, read once at cold start."""

    models: Catalog
    max_bytes: int
    bucket: str | None = None

    @classmethod
    def from_environment(cls) -> TriggerConfig:
        return cls(models=Catalog.required(os.environ),
                   max_bytes=int(os.environ.get("BATCH_MAX_INPUT_BYTES", DEFAULT_MAX_BYTES)),
                   bucket=os.environ.get(BATCH_BUCKET_ENV) or None)


@dataclass(frozen=True)
class Outcome:
    status: str  # submitted | duplicate | rejected
    job_id: str | None = None
    reason: str | None = None
    batch_job_id: str | None = None


def job_item(obj: InputObject, size: int, etag: str) -> dict[str, Any]:
    """The job's record: `model_version` is the key's version, or "current" until the runner
    writes the version it resolved."""
    return {"job_id": obj.job_id, "model": obj.model, "job": obj.job, "format": obj.format,
            "model_version": obj.version or "current",
            "input": {"bucket": obj.bucket, "key": obj.key, "version_id": obj.version_id,
                      "size": size, "etag": etag},
            "output_prefix": f"s3://{obj.bucket}/{obj.output_prefix}",
            "submitted_at": round(time.time(), 3)}


def requested_shards(obj: InputObject, item: dict[str, Any]) -> int | None:
    """The number of children the job's creator asked for: `"parameters": {"shards": N}` of an
    API job (checked when it was created), or the key's `.shards-<N>` suffix; None: none."""
    parameters = item.get("parameters")
    if isinstance(parameters, str):  # the API keeps them as JSON text
        try:
            parameters = json.loads(parameters)
        except ValueError:
            parameters = None
    if isinstance(parameters, dict) and "shards" in parameters:
        return shards.check(parameters["shards"])
    return obj.shards_requested


def delete_version(s3: Any) -> Callable[[InputObject], None]:
    """`discard` for `handle`: delete the uploaded version of the object, through `s3`."""
    def discard(obj: InputObject) -> None:
        s3.delete_object(Bucket=obj.bucket, Key=obj.key, VersionId=obj.version_id)
    return discard


def refusal(obj: InputObject, size: int, settings: TriggerConfig) -> str | None:
    """Why this upload cannot run, or None: an unknown model, an empty or too large object,
    or a .npy input of a model version that only JSON Lines can serve (the catalog's
    `jsonl_only`, the jobs API's rule: refused here, before an instance starts for it)."""
    found = settings.models.find(obj.model)
    if found is None:
        return settings.models.unknown(obj.model)
    refused = found.job_refusal(obj.format, obj.version)
    if refused is not None:
        return f"a .npy input: {refused}"
    if size <= 0:
        return "the input object is empty"
    if size > settings.max_bytes:
        return f"the input object is {size} bytes; the limit is {settings.max_bytes} bytes"
    return None


def handle(event: S3EventBridgeNotificationEvent, store: JobStore, submitter: Submitter,
           settings: TriggerConfig, token: str, claim_expires_at: float,
           discard: Callable[[InputObject], None] | None = None) -> Outcome:
    """Submit the job for the object an EventBridge S3 "Object Created" event names, once.
    `discard` deletes an uploaded object version that belongs to no job (an issued key whose
    job is gone); None keeps it (a caller without S3 access)."""
    bucket = event.detail.bucket.name
    s3_object = event.detail.object
    if settings.bucket and bucket != settings.bucket:
        return Outcome("rejected", reason=f"bucket {bucket!r} is not the batch bucket")
    try:
        obj = parse_key(bucket, s3_object.key, s3_object.get("version-id") or "")
    except InvalidKey as error:
        return Outcome("rejected", reason=str(error))
    size = s3_object.size or 0
    item = job_item(obj, size, s3_object.etag)
    if obj.issued:
        created = store.get(obj.job_id)
        if created is None or created.get("status") != AWAITING_UPLOAD:
            said = str(created.get("status")) if created else \
                "not there (erased, or never created)"
            if discard is not None and (created is None or created.get("status") == ERASING):
                try:
                    discard(obj)
                    said += "; the upload was deleted"
                except Exception as error:  # the rejection stands; the bucket's rule expires it
                    LOG.warning("the upload %s (version %s) of a job that is gone could not be "
                                "deleted: %s", obj.key, obj.version_id, error)
                    said += "; the upload could not be deleted"
            return Outcome("rejected", job_id=obj.job_id,
                           reason=f"job {obj.job_id} is {said}, not awaiting an upload")
        item = {**created, **item, "input": {**created.get("input", {}), **item["input"]}}
    reason = refusal(obj, size, settings)
    try:
        count = shards.choose(size, requested_shards(obj, item))
    except shards.ShardsError as error:
        reason = reason or str(error)
        count = 1
    if count > 1:  # each child's state is the job's until the child starts
        item["shards"] = count
        item["shard_states"] = children_in(SUBMITTING, count)
    if reason:
        store.reject(item, reason, issued=obj.issued)
        return Outcome("rejected", job_id=obj.job_id, reason=reason)
    if not store.claim(item, token, claim_expires_at, issued=obj.issued):
        existing = store.get(obj.job_id) or {}
        return Outcome("duplicate", job_id=obj.job_id, reason=f"job is {existing.get('status')}")
    try:
        batch_job_id = submitter.submit(obj, count)
    except Exception as error:
        # Recorded, then raised: the event is retried and, once retries run out, dead-lettered.
        store.release(item, token, SUBMIT_FAILED, reason=f"submission failed: {error}")
        raise
    submitted = {"shard_states": children_in(SUBMITTED, count)} if count > 1 else {}
    if not store.release(item, token, SUBMITTED, batch_job_id=batch_job_id,
                         compute=submitter.compute, **submitted):
        LOG.info("job %s moved on before it was marked submitted", obj.job_id)
    return Outcome("submitted", job_id=obj.job_id, batch_job_id=batch_job_id)


def children_in(state: str, count: int) -> dict[str, dict[str, str]]:
    """An array job's `shard_states` before any of its `count` children started: each in
    `state`, the job's own (`submitting`, then `submitted`), so that no answer shows children
    further on than their job."""
    return {str(index): {"state": state} for index in range(count)}
