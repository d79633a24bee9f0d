"""Data capture's AWS glue: the log sink, the S3 store, the hash key from Secrets Manager, the
counts as Powertools metrics, and the hook as the functions and the batch runner install it
(model_api.aws.hooks); also `make capture` / `make capture-erase` (python -m
model_api.aws.capture), locally over the folder store and deployed over the bucket.

Where records go (the first that is set):
    CAPTURE_BUCKET   the stack's capture bucket, one PutObject per flush: the batch runner
                     (a flush is a chunk of many rows, off any request path)
    CAPTURE_DIR      a local folder, one object per flush (tests; the local batch runner)
    neither          stdout, one line per record (LogSink): a Lambda function's way. CloudWatch
                     Logs keeps the line after the function returns; the model's subscription
                     filter sends it to Firehose, which writes it to the capture bucket
                     (docs/architecture.md, "Data capture", says why this transport). Locally
                     the local API reads the worker's lines and writes them to its folder.
The hash key (HMAC-SHA256, per deployment): CAPTURE_HASH_KEY_SECRET (a Secrets Manager secret's
ARN, fetched once, in a background thread started by the first record that hashes: boto3's
import and the call take 150-250 ms, which no request waits for; records that hash before it
arrives are dropped as hash_key_loading, SecretKey), else CAPTURE_HASH_KEY (its text), else
CAPTURE_HASH_KEY_FILE (a file holding it, created with a random key, mode 0600, when missing:
make serve's), else <CAPTURE_DIR>/.hash-key likewise.

Metrics (namespace POWERTOOLS_METRICS_NAMESPACE; dimension `model`): CaptureCaptured,
CaptureDelivered (records handed to the log on a function: Firehose's own DeliveryToS3.Records
counts what reached the bucket; to the bucket on the batch runner), and CaptureDropped with a
second dimension `reason` (model_api.capture.hook). A function sums them and writes them at
most once a minute (EMIT_EVERY_S; at once when a record was dropped), not once per request:
an EMF line per request cost more than the capture itself. The counts of an environment's last
minute are lost when Lambda reclaims it; the batch runner writes them at each chunk.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from model_api.capture import store as capture_store
from model_api.capture.config import CaptureConfig, from_environment, with_override
from model_api.capture.hook import (
    CAPTURED,
    DELIVERED,
    DROPPED,
    CaptureHook,
    Counts,
    HashKeyLoading,
    Sink,
    StoreSink,
)
from model_api.capture.store import CaptureStore, FolderStore, time_window

BUCKET_ENV, DIR_ENV = "CAPTURE_BUCKET", "CAPTURE_DIR"
KEY_SECRET_ENV, KEY_ENV, KEY_FILE_ENV = ("CAPTURE_HASH_KEY_SECRET", "CAPTURE_HASH_KEY",
                                         "CAPTURE_HASH_KEY_FILE")
KEY_FILE = ".hash-key"
DEFAULT_NAMESPACE = "ServerlessModelApi"
METRICS = {CAPTURED: "CaptureCaptured", DELIVERED: "CaptureDelivered", DROPPED: "CaptureDropped"}
# S3 calls from a function answering a request: short timeouts, few retries (a failure is
# counted as dropped, never waited out).
CONNECT_TIMEOUT_S, READ_TIMEOUT_S, MAX_ATTEMPTS = 1, 2, 2
DELETE_BATCH = 1000  # S3 DeleteObjects' limit
EMIT_EVERY_S = 60.0  # a function writes its counts at most this often (see above)
# A CloudWatch Logs event holds at most 256 KB, 26 bytes of it overhead (CloudWatch Logs quotas;
# PutLogEvents): a longer record line is dropped (too_large) rather than cut by the log.
MAX_LOG_RECORD_BYTES = 256 * 1024 - 26 - 1024


class LogSink:
    """Records as lines on a file descriptor (stdout, as Lambda's runtime hands it to CloudWatch
    Logs): one write per flush, after Python's own buffered stdout is flushed so that no record
    lands inside another log line."""

    max_record_bytes = MAX_LOG_RECORD_BYTES

    def __init__(self, fd: int = 1) -> None:
        self.fd = fd

    def deliver(self, model: str, lines: list[bytes]) -> None:
        sys.stdout.flush()
        data = memoryview(b"".join(lines))
        while data:
            data = data[os.write(self.fd, data):]


class S3Store:
    """A capture store in an S3 bucket (versioned: delete removes every version and marker)."""

    def __init__(self, bucket: str, client: Any = None) -> None:
        self.bucket, self._client = bucket, client

    @property
    def client(self) -> Any:
        """The S3 client, made on first use: making one costs ~200 ms (botocore reads its
        service model), which the server function's init must not pay for a route (its drift
        reports) that most cold starts never serve."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client("s3", config=Config(
                connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"}))
        return self._client

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body,
                               ContentType="application/x-ndjson")

    def keys(self, prefix: str) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"]

    def get(self, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def _versions(self, prefix: str) -> Iterator[dict[str, str]]:
        pages = self.client.get_paginator("list_object_versions").paginate(
            Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            for item in (*page.get("Versions", []), *page.get("DeleteMarkers", [])):
                yield {"Key": item["Key"], "VersionId": item["VersionId"],
                       "IsLatest": item.get("IsLatest", False)}

    def _delete(self, objects: list[dict[str, str]]) -> None:
        for start in range(0, len(objects), DELETE_BATCH):
            answer = self.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": objects[start:start + DELETE_BATCH], "Quiet": True})
            if answer.get("Errors"):
                raise RuntimeError(f"S3 refused to delete {len(answer['Errors'])} version(s): "
                                   f"{answer['Errors'][0].get('Message')}")

    def delete(self, key: str) -> None:
        self._delete([{"Key": v["Key"], "VersionId": v["VersionId"]}
                      for v in self._versions(key) if v["Key"] == key])

    def delete_prefix(self, prefix: str) -> int:
        """Every version and delete marker under `prefix`; returns how many were deleted."""
        found = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in self._versions(prefix)]
        self._delete(found)
        return len(found)

    def replace(self, key: str, body: bytes) -> None:
        version = self.client.put_object(Bucket=self.bucket, Key=key, Body=body,
                                         ContentType="application/x-ndjson").get("VersionId")
        self._delete([{"Key": v["Key"], "VersionId": v["VersionId"]}
                      for v in self._versions(key)
                      if v["Key"] == key and v["VersionId"] != version])


def emit_metrics(namespace: str) -> Callable[[Counts], None]:
    """Publishes counts as CloudWatch metrics (embedded metric format)."""
    def emit(counts: Counts) -> None:
        for (model, outcome, reason), records in sorted(counts.items()):
            dimensions = {"model": model, **({"reason": reason} if reason else {})}
            with single_metric(name=METRICS[outcome], unit=MetricUnit.Count, value=records,
                               namespace=namespace, default_dimensions=dimensions):
                pass
    return emit


class SecretKey:
    """The hash key held in a Secrets Manager secret, fetched in a background thread.

    Calling it returns the key once fetched; raises HashKeyLoading while the fetch runs (the
    first call starts it), and the fetch's own error once, when it failed (the hook then waits
    KEY_RETRY_S before a call starts a new fetch). A cold start's first sampled record would
    otherwise wait 150-250 ms for boto3's import and the call."""

    def __init__(self, secret_id: str) -> None:
        self.secret_id = secret_id
        self._value: bytes | None = None
        self._error: Exception | None = None
        self._thread: threading.Thread | None = None

    def _fetch(self) -> None:
        try:
            import boto3
            from botocore.config import Config

            # Short timeouts: Lambda freezes this thread between invocations, and a connection
            # frozen mid-call should fail and be retried, not wait out botocore's 60 s.
            config = Config(connect_timeout=2, read_timeout=5,
                            retries={"max_attempts": 3, "mode": "standard"})
            secret = boto3.client("secretsmanager", config=config).get_secret_value(
                SecretId=self.secret_id)["SecretString"]
            self._value = str(secret).encode()
        except Exception as error:  # handed to the next caller, who counts and logs its type
            self._error = error

    def __call__(self) -> bytes:
        if self._value is not None:
            return self._value
        if self._thread is None:
            self._thread = threading.Thread(target=self._fetch, name="capture-hash-key",
                                            daemon=True)
            self._thread.start()
        if self._thread.is_alive():
            raise HashKeyLoading("the capture hash key is being fetched")
        if self._value is not None:
            return self._value
        error, self._error, self._thread = self._error, None, None
        raise error or RuntimeError("the capture hash key could not be read")


def hash_key(environ: Mapping[str, str]) -> Callable[[], bytes]:
    """The deployment's hash key, read when first called (see the module's docstring);
    the callable raises RuntimeError when none is configured, HashKeyLoading while a
    secret's is being fetched (SecretKey)."""
    if environ.get(KEY_SECRET_ENV):
        return SecretKey(environ[KEY_SECRET_ENV])

    def read() -> bytes:
        if environ.get(KEY_ENV):
            return environ[KEY_ENV].encode()
        if environ.get(KEY_FILE_ENV) or environ.get(DIR_ENV):
            path = (Path(environ[KEY_FILE_ENV]) if environ.get(KEY_FILE_ENV) else
                    Path(environ[DIR_ENV]) / KEY_FILE)
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as file:
                    file.write(secrets.token_hex(32))
            return path.read_bytes().strip()
        raise RuntimeError(f"no capture hash key: set {KEY_SECRET_ENV} or {KEY_ENV}")
    return read


def store_from_environment(environ: Mapping[str, str]) -> CaptureStore | None:
    """The store CAPTURE_BUCKET or CAPTURE_DIR names (the first that is set), else None."""
    if environ.get(BUCKET_ENV):
        return S3Store(environ[BUCKET_ENV])
    if environ.get(DIR_ENV):
        return FolderStore(Path(environ[DIR_ENV]))
    return None


def sink_from_environment(environ: Mapping[str, str], job_id: str | None = None) -> Sink:
    """The store CAPTURE_BUCKET or CAPTURE_DIR names (a batch job's flushes in its folder:
    `job_id`), else stdout (see the module's docstring)."""
    store = store_from_environment(environ)
    return LogSink() if store is None else StoreSink(store, job_id)


def hook(environ: Mapping[str, str] = os.environ,
         configs: Mapping[str, CaptureConfig] | None = None,
         job_id: str | None = None) -> CaptureHook | None:
    """The capture hook of this process: `configs` per model (the batch runner's, from the
    registry: counts written at each flush) or the function's own CAPTURE settings for every
    model it serves (counts written at most every EMIT_EVERY_S); None when nothing is ever
    captured. `job_id`: the batch job the hook captures for (its records and folders say
    so)."""
    if configs is None:
        own = from_environment(environ)
        if not own.active:
            return None

        def lookup(model: str) -> CaptureConfig:
            return own
    else:
        table = {name: with_override(config, environ) for name, config in configs.items()}
        if not any(config.active for config in table.values()):
            return None
        off = CaptureConfig()

        def lookup(model: str) -> CaptureConfig:
            return table.get(model, off)
    namespace = environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE
    return CaptureHook(lookup, sink_from_environment(environ, job_id), hash_key(environ),
                       emit_metrics(namespace), emit_every=EMIT_EVERY_S if configs is None else 0,
                       job_id=job_id)


def main(argv: list[str] | None = None) -> int:
    """make capture / make capture-erase: print a model's records as JSON Lines, or erase
    them (all, or a time window), from the bucket (--bucket, with AWS credentials) or the
    local folder (--dir, default .local-api/capture)."""
    import argparse  # the command line's alone: a function's cold start never pays for it

    parser = argparse.ArgumentParser(prog="python -m model_api.aws.capture",
                                     description=main.__doc__)
    parser.add_argument("command", choices=("read", "erase"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--since", help="ISO 8601 time (UTC when no zone): records at or after")
    parser.add_argument("--until", help="ISO 8601 time: records before")
    parser.add_argument("--bucket", help="the deployed stack's CaptureBucketName output")
    parser.add_argument("--dir", type=Path, default=Path(".local-api/capture"))
    args = parser.parse_args(argv)
    try:
        since, until = time_window(args.since, args.until)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    where: CaptureStore = S3Store(args.bucket) if args.bucket else FolderStore(args.dir)
    if not capture_store.has_records(where, args.model):  # a name mistyped, most likely
        store_name = f"s3://{args.bucket}" if args.bucket else str(args.dir)
        print(f"error: no captured records of model {args.model!r} in {store_name}, in any "
              "window: check the name (as models.yaml spells it) and the store",
              file=sys.stderr)
        return 2
    if args.command == "read":
        count = 0
        try:
            for item in capture_store.read(where, args.model, since, until):
                sys.stdout.write(json.dumps(item, ensure_ascii=False) + "\n")
                count += 1
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader stopped (`| head`): done, not an error. Python's docs ("Note on
            # SIGPIPE"): stdout onto /dev/null, so that the flush at exit cannot fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        if not count:  # said, not only an empty output (the model has records elsewhen)
            print(f"no record of {args.model} in the window {args.since or 'its first'} to "
                  f"{args.until or 'now'}", file=sys.stderr)
        return 0
    erased = capture_store.erase(where, args.model, since, until)
    if since is None and until is None:  # the model's drift reports go with its records
        from model_api.monitoring import reports

        erased_reports = reports.erase(where, args.model)
        if erased_reports:
            print(f"erased {erased_reports} drift report(s) of {args.model}", file=sys.stderr)
    if isinstance(where, S3Store) and since is None and until is None:
        erased_versions = where.delete_prefix(capture_store.model_prefix(args.model))
        print(f"erased {erased} record(s) of {args.model} ({erased_versions} leftover "
              "version(s) and delete markers)", file=sys.stderr)
    else:
        print(f"erased {erased} record(s) of {args.model}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
