"""How a batch job's attempt can fail, and whether another attempt may succeed.

The runner's exit code follows this classification (batch.runner): 0 done, 1 transient (AWS
Batch retries the job), 2 permanent (batch.submit.PERMANENT_EXIT: a retry would fail alike).
"""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool

from botocore.exceptions import BotoCoreError, ClientError

# S3's answers that no retry changes: the input or bucket is gone, or access is refused; and
# DynamoDB's for a jobs table that is gone (its job's record with it: nothing left to run for).
PERMANENT_S3_ERRORS = ("NoSuchKey", "NoSuchVersion", "NoSuchBucket", "AccessDenied", "404", "403",
                       "ResourceNotFoundException")


class PermanentError(RuntimeError):
    """A failure that a retry of the job cannot fix (bad input, model not in the image)."""


class HostError(RuntimeError):
    """A fault of the host the job landed on (no active GPU): another attempt may land on a
    good one, so it is retried."""


class Terminated(BaseException):
    """SIGTERM: ECS stops the container (a spot reclaim, or TerminateJob after a DELETE) and
    kills it 30 s later. Raised where the runner is, so that its record is updated on the
    way out: a reclaimed job is retried; an erased one finds its update refused and deletes
    what it wrote since the erasure began, before it is killed. A BaseException, like
    KeyboardInterrupt, so that no per-line `except Exception` turns it into a line's record."""


def terminated(signum: int, _: object) -> None:
    """The SIGTERM handler: raises Terminated where the runner is."""
    raise Terminated(f"stopped by signal {signum} (SIGTERM)")


def is_transient(error: BaseException) -> bool:
    """Whether another attempt may succeed: S3 or DynamoDB still failing after botocore's own
    retries (throttling, 5xx, a dropped connection), the network, a host without its GPU, a
    SIGTERM (a spot reclaim), a JSON Lines worker process that died (killed for memory, a
    crash in native code: batch.workers; the retry resumes from the checkpoint). Anything
    else (bad input, a model that does not load, a defect) would fail the same way again, so
    it is not retried."""
    if isinstance(error, ClientError):
        return error.response["Error"]["Code"] not in PERMANENT_S3_ERRORS
    return isinstance(error, BotoCoreError | ConnectionError | TimeoutError | HostError
                      | Terminated | BrokenProcessPool)


def store_gone(error: BaseException) -> bool:
    """Whether `error` says the jobs table or the bucket itself no longer exists (a stack torn
    down; locally, the local S3 restarted empty): the job's record went with it."""
    return isinstance(error, ClientError) and \
        error.response["Error"]["Code"] in ("ResourceNotFoundException", "NoSuchBucket")
