"""Starting a job: on AWS Batch in the cloud, as a local process in `make batch-local`.

Both submitters take the same `InputObject` and hand the runner the same environment, so the
trigger cannot tell them apart; `BATCH_SUBMITTER` (batch | local) picks one. The local one
(local_api.batch.submitter, which never ships) also plays Batch's retry strategy and spot
reclaims; nothing here imports it: the local emulation hands its factory to `provide_local`
before it loads the trigger.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from typing import Protocol

from batch.aws import client
from batch.jobs import AWS_BATCH
from batch.keys import InputObject
from batch.shards import COUNT_VARIABLE

LOG = logging.getLogger(__name__)
PERMANENT_EXIT = 2  # the runner's exit code for inputs that no retry can fix
JOB_ID_VARIABLE = "BATCH_JOB_ID"  # names our job to the runner (and in Batch's events)


def runner_environment(obj: InputObject, shards: int = 1) -> dict[str, str]:
    """What the runner reads to know its job (the container's environment on Batch); an
    array job's children also read AWS_BATCH_JOB_ARRAY_INDEX, which Batch sets in each."""
    return {"BATCH_INPUT_BUCKET": obj.bucket, "BATCH_INPUT_KEY": obj.key,
            "BATCH_INPUT_VERSION": obj.version_id, JOB_ID_VARIABLE: obj.job_id,
            COUNT_VARIABLE: str(shards)}


class Submitter(Protocol):
    """Starts jobs on one kind of compute: `compute` is what the trigger records as the job's
    `compute` field (batch.jobs: AWS_BATCH, LOCAL)."""

    compute: str

    def submit(self, obj: InputObject, shards: int = 1) -> str:
        """Start the job for `obj` as `shards` children (batch.shards; 1: a plain job);
        returns the id the compute side gave it."""
        ...


class BatchSubmitter:
    """SubmitJob on the stack's job queue and GPU job definition."""

    compute = AWS_BATCH

    def __init__(self, queue: str, definition: str) -> None:
        self.queue, self.definition = queue, definition
        self.batch = client("batch")

    def submit(self, obj: InputObject, shards: int = 1) -> str:
        """SubmitJob; with `shards` > 1 an array job of that size (`arrayProperties`): AWS
        Batch runs that many children of the job definition, each with its index in
        AWS_BATCH_JOB_ARRAY_INDEX, and retries each child on its own."""
        environment = [{"name": k, "value": v}
                       for k, v in runner_environment(obj, shards).items()]
        array = {"arrayProperties": {"size": shards}} if shards > 1 else {}
        response = self.batch.submit_job(
            jobName=re.sub(r"[^A-Za-z0-9_-]", "_", obj.job_id)[:128],
            jobQueue=self.queue, jobDefinition=self.definition,
            containerOverrides={"environment": environment}, **array)
        return str(response["jobId"])


_local: Callable[[], Submitter] | None = None


def provide_local(factory: Callable[[], Submitter]) -> None:
    """Make `BATCH_SUBMITTER=local` mean `factory()`: the local emulation's submitter
    (local_api.batch), which exists only in the repository (neither BatchLayer nor the
    runner's image carries it), so this package never imports it."""
    global _local
    _local = factory


def from_environment() -> Submitter:
    """The submitter `BATCH_SUBMITTER` names: "batch" (AWS Batch, from `BATCH_JOB_QUEUE` and
    `BATCH_JOB_DEFINITION`) or "local" (the one `provide_local` was given). ValueError for
    any other name, or "local" when none was provided."""
    kind = os.environ.get("BATCH_SUBMITTER", "batch")
    if kind == "local":
        if _local is None:
            raise ValueError("BATCH_SUBMITTER=local, but no local submitter was provided: "
                             "only the local emulation (local_api.batch) has one")
        return _local()
    if kind != "batch":
        raise ValueError(f"BATCH_SUBMITTER must be 'batch' or 'local', not {kind!r}")
    return BatchSubmitter(os.environ["BATCH_JOB_QUEUE"], os.environ["BATCH_JOB_DEFINITION"])
