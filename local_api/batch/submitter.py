"""The local submitter of `make batch-local`: AWS Batch's part played on this machine.

Local only: neither BatchLayer nor the runner's image carries this module;
`batch.submit.from_environment` returns its `shared()` when `BATCH_SUBMITTER=local`
(local_api.batch.loop hands it over: `submit.provide_local`). It runs `python -m batch.runner`
as a child process and plays:
- the job definition's retry strategy: a runner that dies (kill -9, crash, exit 1) is started
  again, up to `BATCH_LOCAL_ATTEMPTS` (3) attempts, and resumes from its checkpoint; exit 0 and
  exit 2 (a permanent fault) end the job;
- Batch giving up: after the last attempt, a job whose runner did not record its end is marked
  `failed` with the reason and the attempt count (batch.state.gave_up, the rule the AWS path
  uses);
- spot reclaims, when `BATCH_LOCAL_KILL_AFTER_ROWS` is set: an attempt is killed with SIGKILL
  as soon as the job's checkpoint shows that many rows done by it (a retry's count starts at
  the checkpoint it resumes from); the first
  `BATCH_LOCAL_KILL_ATTEMPTS` (1) attempts are (as many as the attempts: killed every time);
  of an array job, only child `BATCH_LOCAL_KILL_SHARD` (0) is;
- an array job (batch.shards): its N children run as N processes at once, each retried on its
  own, with AWS_BATCH_JOB_ARRAY_INDEX set as AWS Batch sets it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

from botocore.exceptions import BotoCoreError, ClientError
from model_api.aws.dependencies import JOBS_TABLE_ENV

from batch import checkpoint, state
from batch.aws import api_config, client
from batch.jobs import LOCAL, JobStore
from batch.keys import CHECKPOINT, InputObject
from batch.shards import INDEX_VARIABLE
from batch.submit import PERMANENT_EXIT, runner_environment
from batch.workers import WORKERS_ENV, available_cpus
from local_api.logs import LOG_DIR, FunctionLogs, forward_in_thread

LOG = logging.getLogger(__name__)
RECLAIM_POLL_SECONDS = 0.1


# The runners' lines: all in .local-api/logs/BatchRunner.log; on the output, all but the
# routine ones (their EMF metrics, JSON records at INFO), as for the functions' (local_api.logs).
RUNNER_LOGS = FunctionLogs(LOG_DIR, quiet=True)


class LocalSubmitter:
    """Runs `python -m batch.runner` as a child process, retrying as Batch would."""

    compute = LOCAL

    def __init__(self, attempts: int = 3, kill_after_rows: int = 0, kill_attempts: int = 1,
                 table: str | None = None, kill_shard: int = 0) -> None:
        self.attempts, self.kill_after_rows = attempts, kill_after_rows
        self.kill_attempts, self.table = kill_attempts, table
        self.kill_shard = kill_shard  # the child of an array job whose attempts are killed
        self._threads: dict[str, threading.Thread] = {}
        self.exit_codes: dict[str, list[int]] = {}
        self.shard_exit_codes: dict[str, list[list[int]]] = {}

    def submit(self, obj: InputObject, shards: int = 1) -> str:
        """Start the job's attempts in a thread (`job-<job id>` is the id); an array job of
        `shards` children as that many child processes at once, each retried on its own
        (with AWS_BATCH_JOB_ARRAY_INDEX set, as AWS Batch sets it)."""
        env = {**os.environ, **runner_environment(obj, shards)}
        if shards > 1 and WORKERS_ENV not in env:  # the children share this machine's CPUs
            env[WORKERS_ENV] = str(max(1, available_cpus() // shards))
        self.exit_codes[obj.job_id] = []
        self.shard_exit_codes[obj.job_id] = [[] for _ in range(shards)]
        children = [threading.Thread(target=self._attempts, args=(obj, index, shards, {
            **env, INDEX_VARIABLE: str(index)}), name=f"job-{obj.job_id}-{index}", daemon=True)
            for index in range(shards)]
        thread = threading.Thread(target=self._children, args=(children,),
                                  name=f"job-{obj.job_id}", daemon=True)
        self._threads[obj.job_id] = thread
        thread.start()
        return thread.name

    def wait(self, job_id: str, timeout: float | None = None) -> list[int]:
        """Block until the job's last attempt ended; the exit code of each attempt (of every
        child, in the order they ended)."""
        self._threads[job_id].join(timeout)
        return self.exit_codes[job_id]

    @staticmethod
    def _children(children: list[threading.Thread]) -> None:
        for child in children:
            child.start()
        for child in children:
            child.join()

    def _attempts(self, obj: InputObject, index: int, shards: int, env: dict[str, str]) -> None:
        job_id = obj.job_id
        codes = self.shard_exit_codes[job_id][index]
        name = f"job {job_id}" + (f" child {index} of {shards}" if shards > 1 else "")
        reclaimed = shards == 1 or index == self.kill_shard
        for attempt in range(1, self.attempts + 1):
            # Its log lines reach the output whole, never cut by another process's (logs)
            process = subprocess.Popen([sys.executable, "-m", "batch.runner"], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for stream, kind in ((process.stdout, "out"), (process.stderr, "log")):
                forward_in_thread(stream, f"runner-{kind}-{job_id}-{index}", RUNNER_LOGS,
                                  "BatchRunner")
            LOG.info("%s attempt %d: runner pid %d", name, attempt, process.pid)
            if reclaimed and attempt <= self.kill_attempts and self.kill_after_rows > 0:
                folder = obj.shard_folder(index, shards)
                threading.Thread(target=self._reclaim, daemon=True, name=f"reclaim-{job_id}",
                                 args=(obj, process, obj.output_key(folder + CHECKPOINT))
                                 ).start()
            codes.append(process.wait())
            self.exit_codes[job_id].append(codes[-1])
            if codes[-1] in (0, PERMANENT_EXIT):
                return
            LOG.warning("%s attempt %d ended with %d%s", name, attempt, codes[-1],
                        "; retrying" if attempt < self.attempts else "")
        child = f"child {index} of {shards}: " if shards > 1 else ""
        reason = (f"{child}the local submitter gave up after {len(codes)} attempt(s): the "
                  f"runner ended with {', '.join(map(str, codes))} (negative: killed by that "
                  "signal)")
        LOG.error("job %s: %s", job_id, reason)
        if self.table:
            try:
                state.gave_up(JobStore(self.table, api_config()), job_id, len(codes), reason)
            except (BotoCoreError, ClientError) as error:  # the store is down or was reset
                LOG.error("job %s: could not record `failed` in the jobs table (%s: %s); its "
                          "record is gone or the store is down, and a status request says so",
                          job_id, type(error).__name__, error)

    def _reclaim(self, obj: InputObject, process: subprocess.Popen[bytes],
                 checkpoint_key: str) -> None:
        """Play a spot reclaim: SIGKILL the runner once its checkpoint shows `kill_after_rows`
        rows done by this attempt (the checkpoint, not a timer: the retry must have progress to
        resume from; counted from the attempt's start, so that a retry is killed only after
        rows of its own, not at once on its predecessor's checkpoint)."""
        s3 = client("s3")
        before = checkpoint.load(s3, obj, chunk_rows=0, key=checkpoint_key)
        at_start = before.next_row - before.first_row  # read before this runner can write
        while process.poll() is None:
            done = checkpoint.load(s3, obj, chunk_rows=0, key=checkpoint_key)
            rows = done.next_row - done.first_row
            if rows - at_start >= self.kill_after_rows:
                process.send_signal(signal.SIGKILL)  # a no-op if it has just exited
                LOG.warning("job %s: spot reclaim played: SIGKILL to runner pid %d, its "
                            "checkpoint at chunk %d (%d rows done, %d by this attempt)",
                            obj.job_id, process.pid, done.next_chunk, rows, rows - at_start)
                return
            time.sleep(RECLAIM_POLL_SECONDS)
        LOG.warning("job %s: the runner ended before its checkpoint reached %d rows more than "
                    "at its start (%d); nothing was killed", obj.job_id, self.kill_after_rows,
                    at_start)


_shared: LocalSubmitter | None = None


def shared() -> LocalSubmitter:
    """The process's one local submitter, configured from the environment."""
    global _shared
    if _shared is None:
        env = os.environ.get
        _shared = LocalSubmitter(int(env("BATCH_LOCAL_ATTEMPTS", "3")),
                                 int(env("BATCH_LOCAL_KILL_AFTER_ROWS", "0")),
                                 int(env("BATCH_LOCAL_KILL_ATTEMPTS", "1")),
                                 env(JOBS_TABLE_ENV) or None,
                                 int(env("BATCH_LOCAL_KILL_SHARD", "0")))
    return _shared
