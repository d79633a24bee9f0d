"""A job always reaches a final state: what the compute side knows, written to the jobs table.

The runner records `succeeded`, or `failed` for a fault no retry can fix; but a runner that is
killed (spot reclaim, out of memory, timeout) records nothing, and after Batch's last attempt
nobody would. So:
- AWS Batch's "Batch Job State Change" events (EventBridge, functions/batch_state/) with status
  FAILED mark the job `failed` with Batch's reason and its attempt count (`on_batch_event`);
- the jobs API (GET /v2/batch/jobs/{job_id}) asks Batch (DescribeJobs) about a job the table has
  shown unfinished for RECONCILE_AFTER_SECONDS, in case that event was lost: a job Batch has
  failed, or no longer knows, is marked `failed`, never shown running (`reconcile`);
- locally, the local submitter marks it `failed` when its last attempt ends (`gave_up`).
The source says "AWS Batch", "local submitter"; one rule (`gave_up`) writes all three, and
sends the job-end event (batch.notify) as the runner does when it finishes a job itself.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from batch import notify
from batch.jobs import FAILED, RUNNING, SUBMITTED, SUCCEEDED, JobStore, aws_batch_job
from batch.submit import JOB_ID_VARIABLE

LOG = logging.getLogger(__name__)
UNFINISHED = (SUBMITTED, RUNNING)
# A live runner updates its record after every chunk (seconds apart); a record this much older
# is worth a DescribeJobs (the job may still be RUNNABLE, waiting for an instance).
RECONCILE_AFTER_SECONDS = 300


def gave_up(store: JobStore, job_id: str, attempts: int, reason: str) -> bool:
    """Record that the compute side gave up on the job after `attempts` attempts: `failed`
    with `reason`, unless the runner recorded success meanwhile. A reason the runner recorded
    (its last attempt's error) is kept after ours. False when the job had already succeeded
    or is not in the table."""
    record = store.get(job_id)
    if record is None or record.get("status") == SUCCEEDED:
        return False
    runner_reason = record.get("reason")
    if runner_reason and runner_reason != reason and not str(runner_reason).startswith(reason):
        reason = f"{reason}; the runner's last error: {runner_reason}"
    finished = store.finish(job_id, FAILED, not_if=SUCCEEDED, fields={
        "reason": reason, "attempts": attempts, "finished_at": time.time()})
    if finished:
        notify.job_finished(store.get(job_id) or {"job_id": job_id, "status": FAILED})
    return finished


def batch_reason(detail: dict[str, Any]) -> str:
    """What Batch says about a failed job: its status reason and its last attempt's exit."""
    attempts = detail.get("attempts") or []
    said = [f"AWS Batch gave up after {len(attempts)} attempt(s)"]
    if detail.get("statusReason"):
        said.append(str(detail["statusReason"]))
    if attempts:
        last = attempts[-1]
        container = last.get("container") or {}
        exit_code = container.get("exitCode")
        if exit_code is not None:
            said.append(f"last attempt exited with code {exit_code}")
        for text in (container.get("reason"), last.get("statusReason")):
            if text and text not in said:
                said.append(str(text))
    return ": ".join(said[:2]) + "".join(f"; {text}" for text in said[2:])


def our_job_id(detail: dict[str, Any]) -> str | None:
    """Our job id, from the runner's environment that the submitter set (JobDetail.container)."""
    for variable in (detail.get("container") or {}).get("environment") or []:
        if variable.get("name") == JOB_ID_VARIABLE:
            return str(variable.get("value"))
    return None


def on_batch_event(store: JobStore, detail: dict[str, Any]) -> str:
    """Apply one "Batch Job State Change" event's detail; says what it did (for the log)."""
    job_id = our_job_id(detail)
    if job_id is None:
        return f"ignored: Batch job {detail.get('jobId')} names no {JOB_ID_VARIABLE}"
    if detail.get("status") != "FAILED":
        return f"ignored: status {detail.get('status')}"
    record = store.get(job_id)
    if record is None:
        return f"ignored: no job {job_id}"
    # A child of an array job is <parent id>:<index>; the record names the parent
    batch_job = str(detail.get("jobId") or "")
    if record.get("batch_job_id") not in (None, batch_job, batch_job.split(":")[0]):
        return f"ignored: job {job_id} now runs as Batch job {record.get('batch_job_id')}"
    done = gave_up(store, job_id, len(detail.get("attempts") or []), batch_reason(detail))
    return f"job {job_id} failed" if done else f"job {job_id} already {record.get('status')}"


def reconcile(store: JobStore, record: dict[str, Any], batch: Any,
              now: float | None = None) -> dict[str, Any]:
    """The job's record after checking an unfinished, stale one against Batch (DescribeJobs):
    `failed` when Batch has failed the job or no longer knows it. A record of a job that does
    not run on AWS Batch (its `compute` field), a recent one, or one whose check fails (Batch
    unreachable: logged) comes back as it was."""
    batch_job_id = aws_batch_job(record)
    age = (now or time.time()) - float(record.get("updated_at") or 0)
    if (record.get("status") not in UNFINISHED or batch_job_id is None
            or age < RECONCILE_AFTER_SECONDS):
        return record
    try:
        found = batch.describe_jobs(jobs=[batch_job_id]).get("jobs") or []
    except (ClientError, BotoCoreError) as error:  # the record as it is beats a 5xx
        LOG.warning("DescribeJobs %s failed: %s", batch_job_id, error)
        return record
    job_id = str(record["job_id"])
    if not found:
        gave_up(store, job_id, int(record.get("attempts") or 0),
                f"AWS Batch no longer knows job {batch_job_id} (it forgets finished jobs "
                "after about 7 days); no runner recorded how it ended")
    elif found[0].get("status") == "FAILED":
        gave_up(store, job_id, len(found[0].get("attempts") or []), batch_reason(found[0]))
    else:
        return record
    return store.get(job_id) or record
