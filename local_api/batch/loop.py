"""`make batch-local`: the whole event-driven loop on this machine, no AWS and no Docker.

A moto server on 127.0.0.1 plays S3 and DynamoDB. The input is uploaded to
`batch/input/<model>/<job>.<ext>`, the REAL trigger handler (functions/batch_trigger/app.py)
gets the EventBridge "Object Created" event for that object version (the shape of
events/batch/object-created.json), its local submitter starts the runner as a child process
(retrying it as Batch's retry strategy would), the REAL jobs handler answers
`GET /v2/batch/jobs/{job_id}` at the end, and the output is downloaded: the parts of a JSON
Lines job concatenated in input order, or one `<OUTPUT stem>.<output>.npy` per model output,
and the job's completion marker as `<OUTPUT stem>._SUCCESS.json` (its counts, parts in input
order and, for an array job, each child's).
`--kill-after-rows N` plays a spot reclaim: the first runner is killed with SIGKILL once its
checkpoint has N rows done, and the submitter's retry resumes from that checkpoint
(`--kill-attempts K`: the first K attempts are killed; as many as the attempts, and the job
ends `failed` with the submitter's reason). The local submitter is local_api.batch.submitter.
Large models: the same moto server holds the model store (local_api.model_store.fill, as `make
serve` fills its own), and the runner reads store-backed versions from it, sha256-checked.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from model_api.aws.capture import DIR_ENV
from model_api.aws.dependencies import BATCH_BUCKET_ENV, JOBS_TABLE_ENV
from model_api.server import CATALOG_ENV
from moto.server import ThreadedMotoServer

from batch import submit
from batch.aws import client
from batch.keys import SUCCESS, InputObject, input_key, parse_key
from batch.models import registry_path
from batch.shards import ShardsError, max_shards
from batch.shards import check as check_shards
from local_api import model_store
from local_api.batch import submitter as local_submitter
from local_api.capture import CAPTURE_DIR
from local_api.context import LambdaContext
from model_registry import catalog as model_catalog
from model_registry.registry import PROJECT, STORE, exported
from model_registry.registry import load as load_registry
from model_registry.store import stored_versions

LOG = logging.getLogger("local_api.batch.loop")
ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events" / "batch"
BUCKET = "local-model-api-batch"
TABLE = "local-model-api-batch-jobs"
REGION = "us-east-1"


def context(function_name: str) -> LambdaContext:
    """The context of one in-process call of a batch function (256 MB, as the template sizes
    them)."""
    return LambdaContext(function_name, str(uuid.uuid4()), memory_limit_in_mb=256,
                         remaining_ms=30_000)


class LocalCloud:
    """A moto server for S3 and DynamoDB, and the environment that points boto3 at it."""

    def __init__(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)

    def __enter__(self) -> LocalCloud:
        self.server.start()
        host, port = self.server.get_host_and_port()
        os.environ.update({"AWS_ENDPOINT_URL": f"http://{host}:{port}",
                           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": REGION})
        os.environ.pop("AWS_PROFILE", None)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.stop()


def create_resources(bucket: str = BUCKET, table: str = TABLE) -> None:
    """The bucket (versioned, as in the template) and the jobs table."""
    create_bucket(bucket)
    create_table(table)


def create_bucket(bucket: str = BUCKET) -> None:
    """The batch bucket, versioned as in the template."""
    s3 = client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def create_table(table: str = TABLE) -> None:
    """The jobs table (job_id its key), billed per request as in the template."""
    client("dynamodb").create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}])


def upload(path: Path, bucket: str, key: str) -> dict[str, Any]:
    """Upload `path` and return the S3 "Object Created" event EventBridge would deliver."""
    s3 = client("s3")
    s3.upload_file(str(path), bucket, key)
    head = s3.head_object(Bucket=bucket, Key=key)
    return object_created_event(bucket, key, int(head["ContentLength"]),
                                head["ETag"].strip('"'), head.get("VersionId") or "null")


def object_created_event(bucket: str, key: str, size: int, etag: str, version_id: str
                         ) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "object-created.json").read_text())
    event.update(id=str(uuid.uuid4()), region=REGION,
                 time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 resources=[f"arn:aws:s3:::{bucket}"])
    event["detail"]["bucket"]["name"] = bucket
    event["detail"]["object"].update({"key": key, "size": size, "etag": etag,
                                      "version-id": version_id,
                                      "sequencer": f"{time.time_ns():020X}"})
    return event


def load_handler(function: str) -> ModuleType:
    """Import functions/<function>/app.py as Lambda would (its module-scope init runs now),
    (the serving library and the batch package are installed in the venv)."""
    path = ROOT / "functions" / function / "app.py"
    spec = importlib.util.spec_from_file_location(f"{function}_app", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trigger_environment(models_dir: Path, bucket: str = BUCKET, table: str = TABLE,
                        registry: Path | None = None) -> dict[str, str]:
    """What the template gives the trigger, with the local submitter instead of Batch's (the
    runner child inherits it: its models, their registry, the jobs table). The model catalog
    is written from the registry beside `models_dir` (`catalog.json`), as `sam build` writes the
    catalog layer's. `BATCH_SUBMITTER=local` then means this package's submitter: handed to
    batch.submit here (`provide_local`), since the shipped package never imports it."""
    submit.provide_local(local_submitter.shared)
    registry = (registry or registry_path()).resolve()
    catalog = model_catalog.write(load_registry(registry), models_dir.parent / "catalog.json",
                                  exported(models_dir))
    return {JOBS_TABLE_ENV: table, BATCH_BUCKET_ENV: bucket, CATALOG_ENV: str(catalog),
            "BATCH_SUBMITTER": "local", "MODELS_DIR": str(models_dir),
            "MODELS_REGISTRY": str(registry),
            "POWERTOOLS_SERVICE_NAME": "batch-trigger", "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "ServerlessModelApiLocal"}


def fill_model_store(models_dir: Path, registry: Path) -> list[str]:
    """The model store in the local S3, filled as `make serve` fills its own
    (local_api.model_store.fill) with every version under `models_dir` whose manifest names a
    stored object (its files beside the manifest, else in model_store/ beside `registry`, where
    add-model keeps them), and $MODEL_STORE_BUCKET set, so the runner (a child: os.environ)
    reads them from there as on AWS; the keys."""
    stored = model_store.fill(stored_versions(models_dir, registry.resolve().parent / STORE))
    os.environ[model_store.BUCKET_VARIABLE] = model_store.BUCKET
    if stored:
        LOG.info("model store: %d object(s) in local bucket %s: %s", len(stored),
                 model_store.BUCKET, ", ".join(stored))
    return stored


def get_job(job_id: str) -> tuple[int, dict[str, Any]]:
    """GET /v2/batch/jobs/{job_id} through the real jobs handler."""
    event = json.loads((EVENTS / "get-job.json").read_text())
    event["path"] = f"/v2/batch/jobs/{job_id}"
    event["pathParameters"] = {"job_id": job_id}
    jobs = load_handler("batch_jobs")
    answer = jobs.lambda_handler(event, context("batch-jobs"))
    return int(answer["statusCode"]), json.loads(answer["body"])


def marker_path(output: Path) -> Path:
    """Where `make batch-local` keeps the job's completion marker: `<OUTPUT stem>._SUCCESS.json`
    beside the outputs (the fake S3 that held it is gone when the loop ends)."""
    return output.with_name(f"{output.stem}.{SUCCESS}")


def download(obj: InputObject, output: Path) -> list[Path]:
    """The job's outputs, as listed by its completion marker, then the marker itself
    (marker_path: last, so that it stands beside whole outputs only)."""
    s3 = client("s3")
    body = s3.get_object(Bucket=obj.bucket, Key=obj.success_key)["Body"].read()
    marker = json.loads(body)
    output.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if obj.format == "jsonl":
        with output.open("wb") as sink:
            for part in marker["parts"]:
                shutil.copyfileobj(s3.get_object(Bucket=obj.bucket, Key=obj.output_key(part))[
                    "Body"], sink)
        written.append(output)
    else:
        for name in marker["outputs"]:
            target = output.with_name(f"{output.stem}.{name}.npy")
            s3.download_file(obj.bucket, obj.output_key(obj.npy_output(name)), str(target))
            written.append(target)
    marker_path(output).write_bytes(body)
    return written


def run_loop(model: str, input_path: Path, output: Path, models_dir: Path,
             job: str | None = None, version: str | None = None,
             shards: int | None = None) -> dict[str, Any]:
    """Upload, trigger, run, download; the job record as the jobs API returns it. `version`
    None runs the model's current version; `shards` asks for an array job of that many
    children (the key's `.shards-<N>` suffix; None: chosen from the input's size)."""
    extension = input_path.suffix.lstrip(".")
    name = job or re.sub(r"[^A-Za-z0-9_.-]", "-", input_path.stem).lstrip("._-") or "job"
    if shards is not None:
        name += f".shards-{shards}"
    key = input_key(model, name, extension, version)
    # An earlier run's marker must not pass for this run's, whatever becomes of it
    marker_path(output).unlink(missing_ok=True)
    started = time.monotonic()
    event = upload(input_path, BUCKET, key)
    obj = parse_key(BUCKET, key, event["detail"]["object"]["version-id"])
    LOG.info("uploaded s3://%s/%s (version %s); job %s", BUCKET, key, obj.version_id, obj.job_id)
    trigger = load_handler("batch_trigger")
    outcome = trigger.lambda_handler(event, context("batch-trigger"))
    LOG.info("trigger: %s", outcome)
    submitter = submit.from_environment()
    exit_codes: list[int] = []
    if outcome["status"] == "submitted" and isinstance(submitter, local_submitter.LocalSubmitter):
        exit_codes = submitter.wait(obj.job_id)
        LOG.info("runner attempts ended with %s", exit_codes)
    status, record = get_job(obj.job_id)
    files: list[Path] = []
    if status == 200 and record.get("status") == "succeeded":
        files = download(obj, output)
        LOG.info("wrote %s", ", ".join(map(str, files)))
    # The presigned output URLs point at this run's fake S3, gone when it ends: the files
    # downloaded from them are what the summary names instead
    record.pop("output_urls", None)
    seconds = time.monotonic() - started
    rows = int(record.get("rows_read", 0))
    summary = {"job": record, "outputs": [str(path) for path in files],
               **({"marker": str(marker_path(output))} if files else {}),
               "runner_exit_codes": exit_codes, "seconds": round(seconds, 3),
               "rows_per_second": round(rows / seconds) if seconds else None}
    children = getattr(submitter, "shard_exit_codes", {}).get(obj.job_id, [])
    if len(children) > 1:  # an array job: each child's attempts
        summary["child_exit_codes"] = children
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_api.batch.loop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", type=Path, required=True, help=".jsonl or .npy file")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--models-dir", type=Path, default=PROJECT.models_dir)
    parser.add_argument("--job", help="job name in the key (default: the input file's stem)")
    parser.add_argument("--version", help="the model version to run (default: its current "
                        "one): the key becomes batch/input/<model>/versions/<version>/<job>")
    parser.add_argument("--registry", type=Path, default=registry_path(),
                        help="models.yaml, where each model's current version is declared")
    parser.add_argument("--kill-after-rows", type=int, default=0, metavar="N",
                        help="SIGKILL the first runner once its checkpoint has N rows done "
                             "(a spot reclaim); the retry resumes from the checkpoint")
    parser.add_argument("--kill-attempts", type=int, default=1, metavar="K",
                        help="with --kill-after-rows: kill the first K attempts the same way "
                             "(K >= BATCH_LOCAL_ATTEMPTS, 3: every attempt; the job fails)")
    parser.add_argument("--shards", type=int, metavar="N",
                        help="run as an array job of N children (the key's .shards-<N> "
                             "suffix; default: chosen from the input's size, batch.shards)")
    parser.add_argument("--kill-shard", type=int, default=0, metavar="I",
                        help="of an array job, the child whose attempts --kill-after-rows "
                             "kills (default 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per moto request
    logging.getLogger("botocore").setLevel(logging.WARNING)  # credentials, endpoints
    if args.input.suffix not in (".jsonl", ".npy"):
        parser.error("--input must be a .jsonl or .npy file")
    if args.kill_after_rows < 0 or args.kill_attempts < 0:
        parser.error("--kill-after-rows and --kill-attempts must be >= 0")
    if args.shards is not None:
        try:  # the jobs API's and the trigger's rule: never a quiet plain job instead
            check_shards(args.shards)
        except ShardsError as error:
            parser.error(f"--shards: {error}")
    children = args.shards or max_shards()
    if not 0 <= args.kill_shard < children:
        parser.error(f"--kill-shard must name one of the job's children: 0 to {children - 1}, "
                     f"not {args.kill_shard}")
    with LocalCloud():
        create_resources()
        fill_model_store(args.models_dir.resolve(), args.registry)
        os.environ.update(trigger_environment(args.models_dir.resolve(), registry=args.registry),
                          # captured rows (the registry's sampling) go to make capture's
                          # folder, not to stdout as a deployed function's do
                          **{DIR_ENV: str(CAPTURE_DIR.resolve())},
                          BATCH_LOCAL_KILL_AFTER_ROWS=str(args.kill_after_rows),
                          BATCH_LOCAL_KILL_ATTEMPTS=str(args.kill_attempts),
                          BATCH_LOCAL_KILL_SHARD=str(args.kill_shard))
        result = run_loop(args.model, args.input, args.output, args.models_dir, args.job,
                          args.version, args.shards)
    print(json.dumps(result))  # the last line of stdout (the handlers log JSON there too)
    return 0 if result["job"].get("status") == "succeeded" else 1


if __name__ == "__main__":
    raise SystemExit(main())
