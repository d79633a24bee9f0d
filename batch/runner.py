"""The batch job's command line: `python -m batch.runner` runs one attempt at one job.

It takes its job from arguments or from the environment AWS Batch gives the container
(BATCH_INPUT_BUCKET, BATCH_INPUT_KEY, BATCH_INPUT_VERSION, BATCH_JOB_ID, JOBS_TABLE,
MODELS_DIR, REQUIRE_GPU, ...) and runs it (batch.job); a child of an array job (BATCH_SHARDS
children, this one AWS_BATCH_JOB_ARRAY_INDEX) runs its part of the input (batch.shards).
Exit codes: 0 done, 1 a transient fault
(S3 or the network still failing after their retries, no GPU on this host: worth a retry), 2
anything else (a retry would fail the same way), the job erased under it included
(batch.failures).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from model_api.aws.dependencies import JOBS_TABLE_ENV

from batch import shards
from batch.failures import Terminated, is_transient, store_gone, terminated
from batch.job import CHUNK_BYTES, MAX_CHUNK_BYTES, JobConfig, StoppedByAnotherChild, run_job
from batch.jobs import JobErased
from batch.submit import PERMANENT_EXIT

LOG = logging.getLogger("batch.runner")


def parse_args(argv: Sequence[str] | None) -> JobConfig:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m batch.runner", description=__doc__)
    parser.add_argument("--bucket", default=env("BATCH_INPUT_BUCKET"))
    parser.add_argument("--key", default=env("BATCH_INPUT_KEY"))
    parser.add_argument("--version-id", default=env("BATCH_INPUT_VERSION", "null"))
    parser.add_argument("--job-id", default=env("BATCH_JOB_ID"))
    parser.add_argument("--models-dir", type=Path, default=Path(env("MODELS_DIR", "/opt/models")))
    parser.add_argument("--registry", type=Path, default=env("MODELS_REGISTRY"),
                        help="models.yaml, where the models' current versions are declared")
    parser.add_argument("--table", default=env(JOBS_TABLE_ENV))
    parser.add_argument("--chunk-rows", type=int, default=int(env("BATCH_CHUNK_ROWS", "0")),
                        help="rows (JSON Lines: lines) per chunk; given alone, chunks are cut "
                             "by rows only (default: by bytes)")
    parser.add_argument("--chunk-bytes", type=int, default=env("BATCH_CHUNK_BYTES"),
                        help="bytes of input per chunk (default: a quarter of the input, "
                             f"{CHUNK_BYTES} to {MAX_CHUNK_BYTES}; none when --chunk-rows is "
                             "given alone; 0: no limit)")
    parser.add_argument("--batch-rows", type=int, default=int(env("BATCH_ROWS", "0")),
                        help="rows per model run (default 0: timed on the first rows)")
    parser.add_argument("--workers", type=int, default=int(env("BATCH_WORKERS", "0")),
                        help="on the CPU: JSON Lines' worker processes that work the chunks "
                             "(batch.workers), .npy's model runs at once, each on one thread "
                             "(batch.microbatch); default 0: one per CPU; 1: in this process, "
                             "one run at a time")
    parser.add_argument("--require-gpu", action="store_true",
                        default=env("REQUIRE_GPU", "false").lower() == "true")
    parser.add_argument("--cpu", action="store_true", help="do not try CUDA")
    parser.add_argument("--progress-seconds", type=float,
                        default=float(env("BATCH_PROGRESS_SECONDS", "5")))
    parser.add_argument("--shard", type=int, default=None,
                        help="this child's index of an array job (default: "
                             "AWS_BATCH_JOB_ARRAY_INDEX, which AWS Batch sets)")
    parser.add_argument("--shards", type=int, default=None,
                        help="the array job's children (default: BATCH_SHARDS, else 1)")
    args = parser.parse_args(argv)
    shard, count = shards.from_environment()
    shard = shard if args.shard is None else args.shard
    count = count if args.shards is None else args.shards
    if count < 1 or not 0 <= shard < count:
        parser.error(f"child {shard} of {count}: --shard must be in [0, --shards)")
    missing = [name for name in ("bucket", "key", "job_id") if not getattr(args, name)]
    if missing:
        parser.error(f"missing {', '.join(missing)} (arguments or BATCH_INPUT_* / BATCH_JOB_ID)")
    if min(args.chunk_rows, args.chunk_bytes or 0, args.batch_rows, args.workers) < 0 or (
            args.chunk_rows == 0 and args.chunk_bytes == 0):
        parser.error("--chunk-rows, --chunk-bytes, --batch-rows and --workers must be >= 0, and "
                     "one of --chunk-rows and --chunk-bytes > 0")
    return JobConfig(bucket=args.bucket, key=args.key, version_id=args.version_id,
                    job_id=args.job_id, models_dir=args.models_dir,
                    registry=args.registry, table=args.table,
                    chunk_rows=args.chunk_rows, chunk_bytes=args.chunk_bytes,
                    batch_rows=args.batch_rows,
                    require_gpu=args.require_gpu, use_gpu=not args.cpu,
                    progress_seconds=args.progress_seconds, shard=shard, shards=count,
                    workers=args.workers)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # botocore says at INFO where it found credentials and each endpoint: not the job's news.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    config = parse_args(argv)
    LOG.info("job %s: s3://%s/%s (version %s)", config.job_id, config.bucket, config.key,
             config.version_id)
    signal.signal(signal.SIGTERM, terminated)
    try:
        summary = run_job(config)
    except JobErased:
        return PERMANENT_EXIT  # nothing to retry: the job is gone
    except StoppedByAnotherChild:
        return PERMANENT_EXIT  # not this child's fault: run_job said why, and the job's reason
    except (Exception, Terminated) as error:
        if store_gone(error):  # the jobs table or bucket is gone, the job's record with it
            LOG.error("job %s: %s; nothing left to run for (not retried)", config.job_id, error)
            return PERMANENT_EXIT
        transient = is_transient(error)
        LOG.exception("job %s failed (%s)", config.job_id,
                      "a retry may succeed" if transient else "permanent")
        return 1 if transient else PERMANENT_EXIT
    # an array job's child counts its own rows; the child that finishes the job, every child's
    whose = ("" if config.shards < 2 else " (every child)" if summary.get("finished_job")
             else f" (child {config.shard})")
    LOG.info("job %s done%s: %s", config.job_id, whose,
             {k: summary[k] for k in ("rows_read", "outputs_written", "errors")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
