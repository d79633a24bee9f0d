"""Starting a job: on AWS Batch in the cloud, as a local process in `make batch-local`.

Both submitters take the same `InputObject` and hand the runner the same environment, so the
trigger cannot tell them apart; `BATCH_SUBMITTER` (batch | local) picks one. The local one also
plays the part of the job definition's retry strategy: a runner that dies (kill -9, crash) is
started again, up to `BATCH_LOCAL_ATTEMPTS` attempts, and resumes from its checkpoint; and of a
spot reclaim, when `BATCH_LOCAL_KILL_AFTER_ROWS` is set: the first attempt is killed with
SIGKILL as soon as its checkpoint shows that many rows done.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Protocol

from batch.aws import client
from batch.keys import InputObject

LOG = logging.getLogger(__name__)
PERMANENT_EXIT = 2  # the runner's exit code for inputs that no retry can fix
RECLAIM_POLL_SECONDS = 0.1


def runner_environment(obj: InputObject) -> dict[str, str]:
    """What the runner reads to know its job (the container's environment on Batch)."""
    return {"BATCH_INPUT_BUCKET": obj.bucket, "BATCH_INPUT_KEY": obj.key,
            "BATCH_INPUT_VERSION": obj.version_id, "BATCH_JOB_ID": obj.job_id}


class Submitter(Protocol):
    def submit(self, obj: InputObject) -> str:
        """Start the job for `obj`; returns the id the compute side gave it."""
        ...


class BatchSubmitter:
    """SubmitJob on the stack's job queue and GPU job definition."""

    def __init__(self, queue: str, definition: str) -> None:
        self.queue, self.definition = queue, definition
        self.batch = client("batch")

    def submit(self, obj: InputObject) -> str:
        environment = [{"name": k, "value": v} for k, v in runner_environment(obj).items()]
        response = self.batch.submit_job(
            jobName=re.sub(r"[^A-Za-z0-9_-]", "_", obj.job_id)[:128],
            jobQueue=self.queue, jobDefinition=self.definition,
            containerOverrides={"environment": environment})
        return str(response["jobId"])


class LocalSubmitter:
    """Runs `python -m batch.runner` as a child process, retrying as Batch would."""

    def __init__(self, attempts: int = 3, kill_after_rows: int = 0) -> None:
        self.attempts, self.kill_after_rows = attempts, kill_after_rows
        self._threads: dict[str, threading.Thread] = {}
        self.exit_codes: dict[str, list[int]] = {}

    def submit(self, obj: InputObject) -> str:
        env = {**os.environ, **runner_environment(obj)}
        if os.environ.get("BATCH_LOCAL_PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["BATCH_LOCAL_PYTHONPATH"]
        self.exit_codes[obj.job_id] = []
        thread = threading.Thread(target=self._attempts, args=(obj, env),
                                  name=f"job-{obj.job_id}", daemon=True)
        self._threads[obj.job_id] = thread
        thread.start()
        return f"local-{obj.job_id}"

    def wait(self, job_id: str, timeout: float | None = None) -> list[int]:
        """Block until the job's last attempt ended; the exit code of each attempt."""
        self._threads[job_id].join(timeout)
        return self.exit_codes[job_id]

    def _attempts(self, obj: InputObject, env: dict[str, str]) -> None:
        job_id = obj.job_id
        for attempt in range(1, self.attempts + 1):
            process = subprocess.Popen([sys.executable, "-m", "batch.runner"], env=env)
            LOG.info("job %s attempt %d: runner pid %d", job_id, attempt, process.pid)
            if attempt == 1 and self.kill_after_rows > 0:
                threading.Thread(target=self._reclaim, args=(obj, process), daemon=True,
                                 name=f"reclaim-{job_id}").start()
            code = process.wait()
            self.exit_codes[job_id].append(code)
            if code in (0, PERMANENT_EXIT):
                return
            LOG.warning("job %s attempt %d ended with %d; retrying", job_id, attempt, code)

    def _reclaim(self, obj: InputObject, process: subprocess.Popen[bytes]) -> None:
        """Play a spot reclaim: SIGKILL the runner once its checkpoint has `kill_after_rows`
        rows done (the checkpoint, not a timer: the retry must have progress to resume from)."""
        from batch import checkpoint  # local only: the runner's module, not in BatchLayer

        s3 = client("s3")
        while process.poll() is None:
            state = checkpoint.load(s3, obj.bucket, obj.output_prefix, obj.job_id,
                                    obj.version_id, chunk_rows=0)
            if state.next_row >= self.kill_after_rows:
                process.send_signal(signal.SIGKILL)  # a no-op if it has just exited
                LOG.warning("job %s: spot reclaim played: SIGKILL to runner pid %d, its "
                            "checkpoint at chunk %d (%d rows done)", obj.job_id, process.pid,
                            state.next_chunk, state.next_row)
                return
            time.sleep(RECLAIM_POLL_SECONDS)
        LOG.warning("job %s: the runner ended before its checkpoint reached %d rows; nothing "
                    "was killed", obj.job_id, self.kill_after_rows)


_local: LocalSubmitter | None = None


def from_environment() -> Submitter:
    """The submitter `BATCH_SUBMITTER` names; the local one is shared by the whole process."""
    global _local
    kind = os.environ.get("BATCH_SUBMITTER", "batch")
    if kind == "local":
        if _local is None:
            _local = LocalSubmitter(int(os.environ.get("BATCH_LOCAL_ATTEMPTS", "3")),
                                    int(os.environ.get("BATCH_LOCAL_KILL_AFTER_ROWS", "0")))
        return _local
    if kind != "batch":
        raise ValueError(f"BATCH_SUBMITTER must be 'batch' or 'local', not {kind!r}")
    return BatchSubmitter(os.environ["BATCH_JOB_QUEUE"], os.environ["BATCH_JOB_DEFINITION"])
