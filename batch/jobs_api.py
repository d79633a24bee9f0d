"""Asynchronous jobs over HTTPS: what the batch jobs function does for `POST .../jobs`,
`GET .../jobs/{job_id}` and `DELETE .../jobs/{job_id}` (routes in model_api.routes).

A client with the API key and no AWS credentials creates a job, uploads its input to the job's
presigned URL, polls, downloads the outputs from presigned URLs and erases everything:

- create: a job id is issued (keys.issue_job_id), its item written `awaiting_upload`, and a
  presigned S3 PUT returned for its input key `batch/input/<model>[/versions/<v>]/jobs/<id>.<ext>`.
  The URL is signed for exactly the Content-Length the client stated (`size`), since S3 does
  not cap a presigned PUT any other way: a longer or shorter body is refused by S3 (403
  SignatureDoesNotMatch), like a tampered URL or one past its expiry (403 AccessDenied).
  A presigned POST with a `content-length-range` policy would cap the size without stating it,
  but needs a multipart form instead of `curl -T file URL`; both top out at S3's 5 GiB per
  request. The upload then starts the job through the usual S3 -> EventBridge -> trigger path.
- describe: the item (state, counts, `progress`) and, once `succeeded`, `output_urls`:
  presigned GETs of the `_SUCCESS.json` manifest and of every output it lists, with their expiry.
- erase: the item is marked `erasing` (from then on the runner's writes are refused and it
  stops, see batch.job), a running Batch job is terminated, every object version of the
  input and under the output prefix is deleted, then the item.

Errors are model_api's typed errors (the adapter turns them into `{"error": ...}` answers). A
store that is unreachable, slow or without its table or bucket is a 503 with Retry-After that
names it and says why (`store_faults`), within a few seconds (batch.aws.api_config), never a
500 or API Gateway's 504.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from model_api.aws.dependencies import BATCH_BUCKET_ENV
from model_api.aws.invoke import Invoke, lambda_invoke
from model_api.aws.invoked_repository import ready_answer, ready_event
from model_api.catalog import Catalog
from model_api.errors import BadRequest, NotFound, NotReady, TooLarge, Unavailable, no_version
from model_api.limits import (
    JOB_MAX_OUTPUT_URLS,
    JOB_MAX_PARAMETERS_BYTES,
    JOB_MAX_REQUEST_BYTES,
    JOB_MAX_UPLOAD_BYTES,
    JOB_OUTPUT_URL_SECONDS,
    JOB_UPLOAD_URL_SECONDS,
)
from model_api.repository import UNAVAILABLE
from model_api.routes import route

from batch import erase, shards
from batch.aws import retry_config
from batch.jobs import (
    AWAITING_UPLOAD,
    ERASING,
    FAILED,
    FINAL,
    RUNNING,
    STOPPING,
    SUBMIT_FAILED,
    SUBMITTED,
    SUBMITTING,
    SUCCEEDED,
    JobStore,
    aws_batch_job,
)
from batch.keys import FORMATS, JOB_ID, InputObject, InvalidKey, input_key, issue_job_id, parse_key
from batch.state import reconcile

LOG = logging.getLogger(__name__)
# The trigger's bookkeeping of its claim: not part of the job's public record.
PRIVATE = ("claim_token", "claim_expires_at")
JOB_FIELDS = ("format", "size", "parameters")


@dataclass(frozen=True)
class JobsApiConfig:
    """The jobs function's environment, read once at cold start."""

    bucket: str
    models: Catalog
    max_bytes: int  # largest input a job may declare: BatchMaxInputBytes, at most 5 GiB
    retention_days: int  # the bucket's lifecycle; job items expire (TTL) after as many days

    @classmethod
    def from_environment(cls) -> JobsApiConfig:
        env = os.environ.get
        return cls(bucket=env(BATCH_BUCKET_ENV, ""),
                   models=Catalog.required(os.environ),
                   max_bytes=min(int(env("BATCH_MAX_INPUT_BYTES", JOB_MAX_UPLOAD_BYTES)),
                                 JOB_MAX_UPLOAD_BYTES),
                   retention_days=int(env("DATA_RETENTION_DAYS", "30")))


# The stores' answers that say the table or bucket itself is missing (a stack half deleted;
# locally, the local S3 restarted empty) and the codes of a store that is overloaded or down.
MISSING = ("ResourceNotFoundException", "NoSuchBucket")
OVERLOADED = ("ThrottlingException", "ProvisionedThroughputExceededException",
              "RequestLimitExceeded", "SlowDown", "ServiceUnavailable", "InternalError",
              "InternalServerError")
RETRY_AFTER_S = 5


@contextmanager
def store_faults(settings: JobsApiConfig, table: str) -> Iterator[None]:
    """Turn a fault of the jobs' stores (S3 bucket `settings.bucket`, DynamoDB table `table`)
    into Unavailable (503, Retry-After) naming the store and the reason: unreachable or too
    slow (botocore's connection and read errors), missing (MISSING), overloaded or failing
    (OVERLOADED, any 5xx). Any other ClientError is left as it is."""
    stores = f"the jobs' stores (DynamoDB table {table!r}, S3 bucket {settings.bucket!r})"
    try:
        yield
    except BotoCoreError as error:
        raise Unavailable(f"{stores} did not answer ({type(error).__name__}: {error}); retry "
                          "in a few seconds", RETRY_AFTER_S) from error
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in MISSING:
            missing = "table" if code.startswith("Resource") else "bucket"
            raise Unavailable(f"{stores}: the {missing} is missing ({code}); the stack's stores "
                              "must be restored (the local API sets them up again by itself)",
                              RETRY_AFTER_S) from error
        if code in OVERLOADED or status >= 500:
            raise Unavailable(f"{stores} failed ({code or status}); retry in a few seconds",
                              RETRY_AFTER_S) from error
        raise


def presigner(config: Config | None = None) -> Any:
    """An S3 client (with `config`'s timeouts and retries, default batch.aws.retry_config) that
    signs URLs with SigV4 (botocore's default presign is still SigV2 for S3), at the region's
    own endpoint (the global one redirects, which breaks the signature),
    or at AWS_ENDPOINT_URL (the local S3) when that is set. In AWS the URL is https."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    config = (config or retry_config()).merge(Config(signature_version="s3v4",
                                                     s3={"addressing_style": "virtual"}))
    if os.environ.get("AWS_ENDPOINT_URL"):
        config = config.merge(Config(s3={"addressing_style": "path"}))
        return boto3.client("s3", region_name=region, config=config)
    return boto3.client("s3", region_name=region, config=config,
                        endpoint_url=f"https://s3.{region}.amazonaws.com")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00",
                                                                                      "Z")


def read_job_request(body: bytes, max_bytes: int) -> dict[str, Any]:
    """The job request `{"size": bytes, "format": "jsonl"|"npy", "parameters": {...}}`, checked:
    BadRequest or TooLarge saying what is allowed."""
    if len(body) > JOB_MAX_REQUEST_BYTES:
        raise TooLarge(f"the job request is {len(body)} bytes; the limit is "
                       f"{JOB_MAX_REQUEST_BYTES} (the input goes to upload_url, not here)")
    usage = ('send {"size": <bytes of the input>, "format": "jsonl" | "npy", "parameters": '
             '{...}} (format and parameters optional)')
    def refuse_constant(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    try:
        document = json.loads(body or b"null", parse_constant=refuse_constant)
    except (ValueError, RecursionError):
        raise BadRequest(f"the job request is not JSON: {usage}") from None
    if not isinstance(document, dict):
        raise BadRequest(f"the job request must be a JSON object: {usage}")
    unknown = sorted(set(document) - set(JOB_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s) {unknown} in the job request: {usage}")
    size = document.get("size")
    if isinstance(size, bool) or not isinstance(size, int):
        raise BadRequest("`size` (the input's bytes, an integer) is required: the upload URL is "
                         f"signed for exactly that Content-Length; {usage}")
    if size < 1:
        raise BadRequest(f"`size` is {size}; an input has at least one byte")
    if size > max_bytes:
        raise TooLarge(f"`size` is {size} bytes; a job's input may have at most {max_bytes} "
                       "bytes (one presigned PUT); split it over several jobs")
    format_ = document.get("format", "jsonl")
    if format_ not in FORMATS:
        raise BadRequest(f"`format` is {format_!r}; expected one of {list(FORMATS)}")
    parameters = document.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest("`parameters` must be a JSON object (your own attributes of the job, "
                         "returned as sent)")
    if len(json.dumps(parameters)) > JOB_MAX_PARAMETERS_BYTES:
        raise TooLarge(f"`parameters` is over {JOB_MAX_PARAMETERS_BYTES} bytes of JSON")
    if "shards" in parameters:  # the job as an array job of that many children
        try:
            shards.check(parameters["shards"])
        except shards.ShardsError as error:
            raise BadRequest(str(error)) from None
    return {"size": size, "format": format_, "parameters": parameters}


def array_job(states: dict[str, dict[str, Any]], record: dict[str, Any]) -> dict[str, Any]:
    """An array job's children as the job's answer shows them: `shards`, one {state, rows,
    outputs_written, errors, progress} per child in index order, and the job's counts and
    `progress` summed over them (a JSON Lines child's rows_total is estimated until its end,
    so the sum is exact only once every child's is; rows_per_second: the running children's
    paces, or once none runs, the sum of each child's pace over its last attempt)."""
    children = [states[key] for key in sorted(states, key=int)]
    shown = [{"shard": index, "state": child_state(child, record),
              "rows": child.get("rows_read", 0),
              "outputs_written": child.get("outputs_written", 0),
              "errors": child.get("errors", 0),
              **({"reason": child["reason"]} if "reason" in child else {}),
              **({"progress": child["progress"]} if "progress" in child else {})}
             for index, child in enumerate(children)]
    answer: dict[str, Any] = {"shards": shown}
    if record.get("status") != SUCCEEDED:  # the runner writes the final counts at the end
        for count in ("rows_read", "outputs_written", "errors"):
            answer[count] = sum(int(child.get(count, 0)) for child in children)
    progress = [{"rows_total": child.get("rows_read", 0), "rows_total_exact": True}
                if child.get("state") == SUCCEEDED else child.get("progress") or {}
                for child in children]
    totals = [p.get("rows_total") for p in progress]
    done = sum(int(child.get("rows_read", 0)) for child in children)
    total = sum(int(t) for t in totals if t is not None) if None not in totals else None
    running = [p for child, p in zip(children, progress, strict=True)
               if child.get("state") != SUCCEEDED]
    etas = [float(p["eta_seconds"]) for p in running if p.get("eta_seconds") is not None]
    answer["progress"] = {
        "rows_done": done, "rows_total": total,
        "rows_total_exact": all(p.get("rows_total_exact", False) for p in progress),
        "fraction_done": round(min(done / total, 1.0), 4) if total else None,
        # the children run side by side: their paces add up, and the job ends with the last;
        # once every child is done, their own paces as they finished (0 was no job's pace)
        "rows_per_second": round(sum(float(p.get("rows_per_second") or 0) for p in (
            running or children)), 1),
        "eta_seconds": (max(etas) if running and len(etas) == len(running)
                        else 0.0 if not running else None),
        "shards_done": sum(child.get("state") == SUCCEEDED for child in children)}
    return answer


def child_state(child: dict[str, Any], record: dict[str, Any]) -> Any:
    """A child's state as the job's answer shows it, never behind or ahead of the job's:
    `submitting` (the trigger's, while it submits the job) is `submitted` once the job is
    past it (the trigger moves every child there with the job, unless a child started first,
    as a local child process can, and so moved the job on: the others were submitted all the
    same); once the job has `failed`, a child not yet ended is `stopping` (it stops, `stopped`,
    at its next chunk or as it starts: batch.job.StoppedByAnotherChild)."""
    state = child.get("state")
    if record.get("status") == FAILED and state in (SUBMITTING, SUBMITTED, RUNNING):
        return STOPPING
    if state == SUBMITTING and record.get("status") not in (SUBMITTING, SUBMIT_FAILED):
        return SUBMITTED
    return state


# Why version `version` of `model` is not ready to run jobs, or None when it is (or when this
# cannot be told: the job then says so itself).
Readiness = Callable[[str, str], "str | None"]


def invoked_readiness(catalog: Catalog, invoke: Invoke | None = None) -> Readiness:
    """Readiness as the model's own function answers its version's ready route (what the
    server's readiness asks too, model_api.aws.invoked_repository): the reason of its 503 (a
    version that failed its sha256 check, say). A function that cannot be asked refuses
    nothing: the runner loads the model from its own image and reports itself. Nor does a
    version whose function is still loading it (a large model's cold start, 503 with
    Retry-After): the runner loads its own copy from the model store, so the job can run."""
    def reason(model: str, version: str) -> str | None:
        nonlocal invoke
        if invoke is None:
            invoke = lambda_invoke()
        try:
            _, state, why = ready_answer(
                invoke(catalog.function_name(model), ready_event(model, version)))
        except Exception as error:  # botocore's, the function's: not the model's state
            LOG.warning("readiness of %s version %s not known: %s", model, version, error)
            return None
        return why if state == UNAVAILABLE else None
    return reason


class JobsApi:
    """The asynchronous jobs of one stack: its bucket, jobs table and Batch queue; `ready`
    tells a model version that is not ready (a job of it is refused at once, 503)."""

    def __init__(self, settings: JobsApiConfig, store: JobStore, s3: Any, batch: Any,
                 ready: Readiness | None = None) -> None:
        self.settings, self.store, self.s3, self.batch = settings, store, s3, batch
        self.ready = ready

    # ------------------------------------------------------------------------------ create
    def create(self, model: str, version: str | None, body: bytes) -> dict[str, Any]:
        """A new job `awaiting_upload` and its upload URL (the 201 answer's body).
        NotFound for a model batch jobs do not run or a version it does not have;
        BadRequest/TooLarge for the request (a .npy job of a version the catalog says takes
        JSON Lines only: BadRequest too); NotReady (503) for a version that is not ready
        (`ready`)."""
        found = self.settings.models.find(model)
        if found is None:
            raise NotFound(self.settings.models.unknown(model))
        if version is not None and version not in found.versions:
            raise no_version(model, version, found.versions)  # as its infer and ready answer
        request = read_job_request(body, self.settings.max_bytes)
        wanted = version or found.current
        refused = found.job_refusal(request["format"], wanted)
        if refused is not None:
            raise BadRequest(f"`format` npy: {refused}")
        why = self.ready(model, wanted) if self.ready and wanted in found.versions else None
        if why is not None:
            raise NotReady(f"model {model!r} version {wanted!r} is not ready, so a job of it "
                           f"could only fail: {why}")
        job_id = issue_job_id()
        try:
            obj = parse_key(self.settings.bucket,
                            input_key(model, job_id, request["format"], version, issued=True),
                            "null")
        except InvalidKey as error:  # only the version can be wrong here
            raise BadRequest(str(error)) from None
        now = time.time()
        item = {
            "job_id": job_id, "model": model, "job": job_id, "format": obj.format,
            "model_version": version or "current", "status": AWAITING_UPLOAD,
            "input": {"bucket": obj.bucket, "key": obj.key, "size": request["size"]},
            "output_prefix": f"s3://{obj.bucket}/{obj.output_prefix}",
            # as JSON text: DynamoDB takes no floats, and would change nothing else we return
            "parameters": json.dumps(request["parameters"]), "created_at": round(now, 3),
            "upload_expires_at": round(now + JOB_UPLOAD_URL_SECONDS, 3),
            # DynamoDB's TTL removes the item when the bucket's lifecycle removes the data
            "expires_at": int(now + self.settings.retention_days * 86400)}
        if not self.store.create(item):  # 112 random bits: never seen, but never overwritten
            raise RuntimeError(f"job id {job_id} was already taken")
        url = self.s3.generate_presigned_url(
            "put_object", HttpMethod="PUT", ExpiresIn=JOB_UPLOAD_URL_SECONDS,
            Params={"Bucket": obj.bucket, "Key": obj.key, "ContentLength": request["size"]})
        LOG.info("job created", extra={"job_id": job_id, "model": model, "version": version,
                                       "format": obj.format, "size": request["size"]})
        return {"job_id": job_id, "model": model, "model_version": item["model_version"],
                "format": obj.format, "status": AWAITING_UPLOAD, "upload_url": url,
                "upload": {"method": "PUT", "size": request["size"],
                           "headers": {"Content-Length": str(request["size"])},
                           "expires_in": JOB_UPLOAD_URL_SECONDS,
                           "expires_at": _iso(now + JOB_UPLOAD_URL_SECONDS)},
                "status_url": route("GetModelJob").url(model=model, job_id=job_id),
                "parameters": request["parameters"]}

    # ------------------------------------------------------------------------------ describe
    def _record(self, job_id: str, model: str | None) -> dict[str, Any]:
        """The job's item; NotFound for an id that is not one, an unknown job, a job of
        another model (when the route names one) or a job being erased."""
        if not JOB_ID.fullmatch(job_id):
            raise NotFound(f"no batch job {job_id!r}: ids look like <job>-<12 hex>")
        record = self.store.get(job_id)
        if record is None or record.get("status") == ERASING:
            raise NotFound(f"no batch job {job_id!r}")
        if model is not None and record.get("model") != model:
            raise NotFound(f"no batch job {job_id!r} of model {model!r}")
        return record

    def describe(self, job_id: str, model: str | None = None, start: int = 0
                 ) -> dict[str, Any]:
        """The job's public record; `output_urls` once it succeeded, from output `start` on."""
        record = reconcile(self.store, self._record(job_id, model), self.batch)
        answer = {k: v for k, v in record.items() if k not in PRIVATE}
        if isinstance(answer.get("parameters"), str):
            answer["parameters"] = json.loads(answer["parameters"])
        if "shard_states" in answer:
            answer.update(array_job(answer.pop("shard_states"), answer))
        if record.get("status") == SUCCEEDED:
            answer["output_urls"] = self.output_urls(record, start)
        return answer

    def _input(self, record: dict[str, Any]) -> InputObject:
        source = record["input"]
        return parse_key(source["bucket"], source["key"], source.get("version_id") or "null")

    def output_urls(self, record: dict[str, Any], start: int = 0) -> dict[str, Any]:
        """Presigned GETs of the `_SUCCESS.json` manifest and of the outputs it lists (a JSON
        Lines job's parts in input order; a .npy job's assembled `<output>.npy` files), at most
        JOB_MAX_OUTPUT_URLS of them from `start`, valid JOB_OUTPUT_URL_SECONDS."""
        obj = self._input(record)
        marker = json.loads(self.s3.get_object(Bucket=obj.bucket,
                                               Key=obj.success_key)["Body"].read())
        names = (list(marker["parts"]) if obj.format == "jsonl"
                 else [obj.npy_output(name) for name in marker.get("outputs", {})])
        if start < 0 or (names and start >= len(names)):
            raise BadRequest(f"start={start}: the job has {len(names)} outputs (0 to "
                             f"{len(names) - 1})")
        page = names[start:start + JOB_MAX_OUTPUT_URLS]
        now = time.time()

        def get(key: str) -> str:
            return str(self.s3.generate_presigned_url(
                "get_object", Params={"Bucket": obj.bucket, "Key": key},
                ExpiresIn=JOB_OUTPUT_URL_SECONDS))

        following = start + len(page)
        return {"manifest": get(obj.success_key),
                "parts": [{"name": name, "url": get(obj.output_key(name))} for name in page],
                "total": len(names), "start": start,
                "next_start": following if following < len(names) else None,
                "expires_in": JOB_OUTPUT_URL_SECONDS,
                "expires_at": _iso(now + JOB_OUTPUT_URL_SECONDS)}

    # ------------------------------------------------------------------------------ erase
    def erase(self, job_id: str, model: str | None = None) -> dict[str, Any]:
        """Stop the job if it runs, delete its input (every version of an API job's key; only
        its own version of an uploaded key, whose other versions are other jobs), every object
        version under its output prefix, its data capture records (erase.erase_captured:
        `captured.objects` null where the function names no capture store), then its item.
        What was erased."""
        self._record(job_id, model)
        record = self.store.mark_erasing(job_id)
        if record is None:
            raise NotFound(f"no batch job {job_id!r}")
        stopped = self._terminate(record)
        obj = self._input(record)
        if obj.issued:
            inputs = erase.erase(self.s3, obj.bucket, obj.key, exact=True)
        else:
            inputs = self._erase_version(obj)
        outputs = erase.erase(self.s3, obj.bucket, obj.output_prefix)
        # the sampled rows data capture kept of it, before the record that dates them goes
        started = [float(record[name]) for name in ("created_at", "started_at")
                   if record.get(name) is not None]
        captured = erase.erase_captured(obj.model, job_id, min(started, default=None))
        self.store.delete(job_id)
        LOG.info("job erased", extra={"job_id": job_id, "input_versions": inputs,
                                      "output_versions": outputs, "capture_objects": captured,
                                      "stopped": stopped})
        return {"job_id": job_id, "status": "erased", "stopped": stopped,
                "erased": {"input": {"key": obj.key, "versions": inputs},
                           "outputs": {"prefix": obj.output_prefix, "versions": outputs},
                           "captured": {"objects": captured}, "record": True}}

    def _erase_version(self, obj: InputObject) -> int:
        if obj.version_id == "null":
            return erase.erase(self.s3, obj.bucket, obj.key, exact=True)
        self.s3.delete_object(Bucket=obj.bucket, Key=obj.key, VersionId=obj.version_id)
        return 1

    def _terminate(self, record: dict[str, Any]) -> str | None:
        """TerminateJob on the job's AWS Batch job while it may still run; its id, or None.
        A local job (`compute` "local") has no Batch job: its runner stops on its own when it
        finds the job erased before its next write (batch.job)."""
        batch_job_id = aws_batch_job(record)
        if batch_job_id is None or record.get("status") in (*FINAL, AWAITING_UPLOAD):
            return None
        try:
            self.batch.terminate_job(jobId=batch_job_id,
                                     reason=f"job {record['job_id']} erased (DELETE)")
        except ClientError as error:  # a job Batch already forgot: nothing left to stop
            LOG.warning("TerminateJob %s: %s", batch_job_id, error)
        return batch_job_id
