"""One attempt at a batch job: resume from the checkpoint, run the chunks, write the marker.

A chunk is BATCH_CHUNK_BYTES of input (by default a quarter of the input, 8 to 64 MiB; whole
lines) or BATCH_CHUNK_ROWS rows, whichever ends first: each chunk costs a few S3 and DynamoDB
requests (part, checkpoint, job record), so chunks are sized by bytes to amortise them whatever
a row weighs. Every input line (or .npy row) yields exactly one output record, checkpointed
per chunk (batch.checkpoint); a .npy job's outputs go straight into one multipart upload per
model output (batch.writer.NpyUpload), checkpointed per uploaded part, so nothing big is left
to write after the last rows. The job's state and counts go to the jobs table. The two formats
answer through the serving library's pipeline (batch.jsonl, batch.npy); only a fault of the
job itself (its input unreadable, S3 failing, the model not loading) fails it
(batch.failures says which faults a retry may fix). Before each write the job checks that it
is not being erased (DELETE), and its record updates are refused once it is; it then stops
and deletes what it wrote meanwhile, so nothing is left in the erased prefixes. Reading, the
model and writing overlap (batch.overlap). A child of an array job (batch.shards) runs its
part of the input, keeps its checkpoint and parts under `shard-<i>/`, and the child that
finds every child done writes the job's `_SUCCESS.json`.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from model_api.datatypes import numpy_dtype
from model_api.model import LoadedModel

from batch import checkpoint, erase, notify, npy, shards, workers
from batch.aws import client
from batch.failures import PermanentError, Terminated, is_transient
from batch.jobs import FAILED, RUNNING, STOPPED, SUCCEEDED, JobErased, JobStore
from batch.jsonl import chunk_part, chunks_of_lines
from batch.keys import CHECKPOINT, DONE, FINISHING, SUCCESS, InputObject, parse_key
from batch.loading import CUDA, cpu_only, job_pipeline, load_model, version_dir
from batch.microbatch import CPU_SIZES, GPU_SIZES, BatchSizeTuner, MicroBatcher
from batch.overlap import overlapped
from batch.progress import Progress
from batch.progress import finished as progress_finished
from batch.reader import BLOCK, LongLine, NpyLayout, S3Object, iter_rows, npy_layout, open_npy
from batch.writer import (
    PART_BYTES,
    NpyUpload,
    concatenate_npy,
    get_json,
    put_bytes,
    put_json,
    put_json_once,
)

LOG = logging.getLogger("batch.runner")
# Bytes of input per chunk, by default: a quarter of the input (of a child's share of it),
# at least CHUNK_BYTES and at most MAX_CHUNK_BYTES (default_chunk_bytes)
CHUNK_BYTES = 8 << 20
MAX_CHUNK_BYTES = 64 << 20
CHUNKS_PER_INPUT = 4
# The first chunk's bytes of input (the next ones twice as many each, up to the chunk limit),
# so that the model (JSON Lines: each worker process) starts after a small read instead of a
# whole chunk's
FIRST_CHUNK_BYTES = 1 << 20
# .npy: while rows are worked without a part to upload (batch.writer.NpyUpload: parts of at
# least PART_BYTES of output), the jobs-table record is still updated this often (a live job)
RECORD_SECONDS = 60.0
# .npy: a job whose outputs' files total at most this many bytes holds them and writes each
# with one PUT after its last rows, unless it has held them for HOLD_SECONDS by then: a
# multipart upload's own requests (create, complete) and its checkpoints cost more than a
# small job's redo after a kill (boto3 itself uploads files under 8 MiB in one PUT)
ONE_PUT_BYTES = 16 << 20
HOLD_SECONDS = 60.0
# .npy: while no write is due, whether the job still lives (an erasure, or another child of an
# array job that failed it) is asked this often, so that such a job stops within seconds
LIVE_SECONDS = 5.0
# The most bytes one .npy output may hold while another has not yet made a part: every
# output's parts end at the same row, so a wide output (an embedding) waits for a narrow one
# (a label) to reach PART_BYTES. Past it the job fails with the reason, not out of memory.
MAX_HELD_BYTES = 2 << 30
SHARD_FOLDER = re.compile(r"^shard-[0-9]{5}/")  # an array job's part names begin with it


@dataclass(frozen=True)
class JobConfig:
    """What one job attempt runs: its input object and job id, where the models and the
    registry are, the jobs table, and how it cuts and runs its rows (python -m batch.runner
    --help gives each one's environment variable)."""

    bucket: str
    key: str
    version_id: str
    job_id: str
    models_dir: Path
    registry: Path | None = None  # models.yaml; None: batch.models.registry_path()
    table: str | None = None
    chunk_rows: int = 0  # 0: no row limit
    # of input; 0: no byte limit (then chunk_rows must be set); None: see byte_limit
    chunk_bytes: int | None = None
    batch_rows: int = 0  # 0: chosen on the first rows (microbatch.BatchSizeTuner)
    require_gpu: bool = False
    use_gpu: bool = True
    progress_seconds: float = 5.0
    shard: int = 0  # this child's index (AWS_BATCH_JOB_ARRAY_INDEX) of an array job
    shards: int = 1  # the array job's children (BATCH_SHARDS); 1: the whole input
    # On the CPU, JSON Lines: worker processes (BATCH_WORKERS; batch.workers); .npy: model runs
    # at once (batch.microbatch); 0: one per CPU
    workers: int = 0

    @property
    def byte_limit(self) -> int:
        """Bytes of input per chunk of a fresh job of a small input: chunk_bytes when set,
        else none when chunk_rows is set (rows given alone mean rows only), else CHUNK_BYTES
        (see byte_limit_for: more for a larger input)."""
        return self.byte_limit_for(0)

    def byte_limit_for(self, size: int) -> int:
        """Bytes of input per chunk of a fresh job whose input is `size` bytes: chunk_bytes
        when set, else none when chunk_rows is set, else default_chunk_bytes of this child's
        share of the input."""
        if self.chunk_bytes is not None:
            return self.chunk_bytes
        return 0 if self.chunk_rows else default_chunk_bytes(size // max(1, self.shards))


def default_chunk_bytes(size: int) -> int:
    """A quarter of `size` bytes of input, within [CHUNK_BYTES, MAX_CHUNK_BYTES]: each chunk
    costs a few requests (its part per output, the checkpoint, the job record: on S3 and
    DynamoDB, or the local fake, 10-40 ms each), so a large input gets fewer chunks per second
    of work; a kill loses at most one chunk's work (MAX_CHUNK_BYTES of input) plus the chunks
    read ahead of it (batch.overlap), all redone by the retry."""
    return min(MAX_CHUNK_BYTES, max(CHUNK_BYTES, -(-size // CHUNKS_PER_INPUT)))


class Job:
    """One attempt at a job: resumes from the checkpoint, writes parts, then the marker."""

    def __init__(self, config: JobConfig, s3: Any, store: JobStore | None,
                 background: ThreadPoolExecutor, started: Future[dict[str, Any]] | None
                 ) -> None:
        """`background`: threads for requests made while others run (run_job's, shut down by
        it). `started`: the start's record update of a job of one child, in flight (None: an
        array job's child, whose start run_job recorded before, or no jobs table); its answer
        is the record as the update left it; it lands before the job's first write (_settle),
        and run_job waits for it when the job fails."""
        self.config, self.s3, self.store = config, s3, store
        self.background = background
        self.started = started
        # fields for the job's record that go with its next record update or live check
        # (the model version served), not a request of their own
        self.unrecorded: dict[str, Any] = {}
        self.obj: InputObject = parse_key(config.bucket, config.key, config.version_id)
        if self.obj.job_id != config.job_id:
            raise PermanentError(f"job id {config.job_id} does not belong to "
                                 f"{config.key} version {config.version_id}")
        self.source = S3Object(s3, config.bucket, config.key, config.version_id)
        # This child's folder (batch.shards): "" for a job of one child
        self.folder = self.obj.shard_folder(config.shard, config.shards)
        self.checkpoint_key = self.obj.output_key(self.folder + CHECKPOINT)
        self.pipeline = job_pipeline(config.registry, config.job_id)
        # .npy: each model output's shape, once its file is written
        self.outputs: dict[str, list[int]] = {}
        self.events: Future[Any] | None = None  # the EventBridge client, once the rows are done
        self.rows_before = 0  # rows done by earlier attempts (the checkpoint's)
        # A .npy job's micro-batches that run at once on the CPU (BATCH_WORKERS; 0: one per
        # CPU), each on one onnxruntime thread (batch.microbatch.MicroBatcher). A job that may
        # run on the GPU runs one at a time, its session's threads as many as the CPUs (also
        # when CUDA does not load and it runs on the CPU: the loud fallback)
        self.runs = (config.workers or workers.available_cpus()) \
            if self.obj.format == "npy" and cpu_only(config.use_gpu) else 1

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        # The input's size and the checkpoint (a retry's: _saved_state) at once. A .npy job
        # that may start at its first row opens its input's one GET (its answer says the
        # size) instead of a HEAD; a checkpoint further on closes it (_open_npy)
        whole = self.obj.format == "npy" and self.config.shard == 0
        with ThreadPoolExecutor(1, thread_name_prefix="head") as pool:
            head: Future[tuple[Any, int]] = pool.submit(self._size_and_body, whole)
            # The model the key names (else the current version) loads meanwhile: a fresh
            # job's (a retry that pinned another version loads that one once its checkpoint
            # says so)
            loading = self.background.submit(lambda: [self._load(self.obj.version)])
            try:
                state = self._saved_state()
            except BaseException:
                if whole and head.exception() is None:
                    head.result()[0].close()
                raise
            body, size = head.result()
        self.rows_before = state.counts["rows_read"]  # by earlier attempts
        if state.next_chunk == 0:  # a fresh job (a saved checkpoint has done a chunk)
            state.chunk_bytes = self.config.byte_limit_for(size)
        if self.obj.format == "jsonl":  # its workers' fork server starts while the model loads
            workers.prepare(self.config.workers, size // max(1, self.config.shards))
        if state.next_chunk:
            LOG.info("resuming job %s%s at chunk %d (line/row %d)", self.obj.job_id, self._child,
                     state.next_chunk, state.next_row)
        if self.obj.format == "npy":
            log_chunks(state)
        opened = self._open_npy(state, size, body) if self.obj.format == "npy" else None
        try:
            model, model_error = self._model(state, loading)
        except BaseException:
            if opened is not None and opened[1] is not None:
                opened[1].close()
            raise
        on_gpu = model is not None and CUDA in model.providers
        tuner = BatchSizeTuner(GPU_SIZES if on_gpu else CPU_SIZES, self.config.batch_rows)
        batcher = MicroBatcher(model, tuner, self.runs) if model is not None else None
        if self.obj.format == "jsonl":
            if self.config.shards > 1 and not state.stop:
                self._jsonl_range(state, size)
            self._jsonl(state, size, model, model_error, batcher)
        else:
            assert opened is not None  # a .npy job opened its input above
            if batcher is None:
                raise PermanentError(model_error or "no model")
            self._npy(state, opened, batcher)
        # The job-end event's client, made while the marker and the final update are sent (its
        # service model's parse holds the GIL: at the start it slowed the first requests, and
        # with the rows the batch-size trial's runs)
        self.events = self.background.submit(events_client) if self.store is not None else None
        summary: dict[str, Any] = {
            "job_id": self.obj.job_id, "model": self.obj.model,
            "input": f"s3://{self.config.bucket}/{self.config.key}",
            "input_version": self.config.version_id, "format": self.obj.format,
            "model_version": state.model_version or None, **state.counts, "parts": state.parts,
            "providers": list(model.providers) if model is not None else [],
            "seconds_this_attempt": round(time.monotonic() - started, 3)}
        if self.config.shards > 1:
            self._live()
            summary = self._child_done(state, summary, model)
        else:
            if self.obj.format == "npy":
                summary["outputs"] = self.outputs
            self._last_write(lambda: put_json(self.s3, self.config.bucket,
                                              self.obj.success_key, summary))
        if model_error:
            raise PermanentError(model_error)
        return summary

    def _saved_state(self) -> checkpoint.Checkpoint:
        """The checkpoint an earlier attempt saved, else a fresh one. A job of one child whose
        start update counted this attempt as its first (`attempts` 1) reads none: no earlier
        attempt wrote anything, since an attempt's first write waits for its start update
        (_settle), which counts it; and the trigger's claim, which writes a record anew
        (without `attempts`), is refused once a runner set the job `running`
        (jobs._CLAIMABLE). JobErased when that update found the job erased."""
        if self.started is not None and int(self.started.result().get("attempts", 0)) == 1:
            return checkpoint.fresh(self.obj, self.config.chunk_rows)
        return checkpoint.load(self.s3, self.obj, self.config.chunk_rows, 0,
                               key=self.checkpoint_key)

    def _size_and_body(self, whole: bool) -> tuple[Any, int]:
        """The input's stream (`whole`: its one GET opened, S3Object.open) or None (a HEAD),
        and its size in bytes."""
        if whole:
            return self.source.open()
        return None, int(self.source.head()["ContentLength"])

    @property
    def _child(self) -> str:
        """" (child i of N)" in an array job's log lines, else nothing."""
        return f" (child {self.config.shard} of {self.config.shards})" \
            if self.config.shards > 1 else ""

    def _jsonl_range(self, state: checkpoint.Checkpoint, size: int) -> None:
        """A fresh child of an array job: where its lines begin and end, and the number of its
        first line (the lines before it, counted), pinned in its checkpoint from the first
        chunk on (a retry does not count them again)."""
        begin, end = shards.nominal_range(size, self.config.shard, self.config.shards)
        start = first_line_at(self.source, begin, size)
        state.start = state.next_byte = start
        state.stop = end
        state.first_row = state.next_row = count_lines(self.source, start)
        LOG.info("child %d of %d: the lines that begin in bytes [%d, %d): from byte %d, line "
                 "%d", self.config.shard, self.config.shards, begin, end, start,
                 state.first_row + 1)

    def _load(self, version: str | None) -> LoadedModel:
        """The job's model at `version` (None: the current one); PermanentError when it
        cannot load (batch.loading.load_model)."""
        return load_model(self.config.models_dir, self.obj.model, version,
                          self.config.registry, self.config.use_gpu, self.config.require_gpu,
                          1 if self.runs > 1 else None)

    def _model(self, state: checkpoint.Checkpoint, loading: Future[list[LoadedModel]]
               ) -> tuple[LoadedModel | None, str | None]:
        """The model, or (JSON Lines only) the reason every line gets an error record. The
        version is the one pinned in the checkpoint by an earlier attempt, else the key's,
        else the current one (`loading`: that one's load, begun with the checkpoint's read, in
        a list that this empties: a version not kept is not held while another loads);
        it is pinned (and recorded in the job) once chosen."""
        model: LoadedModel | None = None
        try:
            try:
                model = loading.result().pop()
            except Exception:
                if not state.model_version:
                    raise
                # a retry's pinned version may still load where the current one did not
            if model is None or (state.model_version
                                 and model.manifest.version != state.model_version):
                model = None  # (the other version is not held while this one loads)
                model = self._load(state.model_version)
        except PermanentError as error:
            if self.obj.format != "jsonl":
                raise
            LOG.error("%s: every line gets an error record", error)
            return None, str(error)
        if state.model_version and state.model_version != self.obj.version:
            LOG.info("serving version %s, pinned by the first attempt", state.model_version)
        state.model_version = model.manifest.version
        # Recorded with the job's next record update or live check, unless the record says so
        # already (a key that names the version, a retry)
        recorded = self.started.result().get("model_version") if self.started else None
        if self.store is not None and recorded != state.model_version:
            self.unrecorded["model_version"] = state.model_version
        return model, None

    def _checkpoint(self, state: checkpoint.Checkpoint, rows: int, end: int, outputs: int,
                    errors: int, parts: list[str], progress: Progress, position: int,
                    headers: dict[str, dict[str, Any]] | None = None) -> None:
        state.advance(rows, end, outputs, errors, parts, headers)
        # The checkpoint and the record at once: a checkpoint that lands after an erasure
        # began is caught by the next live check or record update, as any write is
        with ThreadPoolExecutor(1, thread_name_prefix="checkpoint") as pool:
            saved = pool.submit(checkpoint.save, self.s3, self.obj, state,
                                key=self.checkpoint_key)
            self._record(state, progress, position)
            saved.result()

    def _record(self, state: checkpoint.Checkpoint, progress: Progress, position: int) -> None:
        """The job's (or this child's) counts and progress in the jobs table, as the
        checkpoint has them; refused (JobErased) once the job is being erased."""
        done = state.next_row - state.first_row
        if self.store is not None:
            unit = "bytes" if self.obj.format == "jsonl" else "rows"
            snapshot = progress.snapshot(position - state.start, done, unit)
            if self.config.shards > 1:
                self.store.update_shard(self.obj.job_id, self.config.shard, {
                    "state": RUNNING, **state.counts, "progress": snapshot})
            else:
                self._update_record({**state.counts, "progress": snapshot})
        progress.update(position - state.start, done)

    def _update_record(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Update the job's record with `fields` and what is not recorded yet (unrecorded);
        the record as the update left it. JobErased once the job is being erased."""
        assert self.store is not None
        record = self.store.update(self.obj.job_id, fields={**fields, **self.unrecorded})
        self.unrecorded = {}
        return record

    def _settle(self) -> None:
        """Wait for the start's record update (at once once it has landed); raise its error."""
        if self.started is not None:
            self.started.result()

    def _while_live(self, write: Callable[[], None]) -> None:
        """`write` while the live check (_live) runs, both at once: JobErased after the write
        when the job is being erased, and run_job deletes what the write put there, as it does
        for a write that slips in after a check."""
        self._settle()
        if self.store is None:
            write()
            return
        live = self.background.submit(self._live)
        try:
            write()
        except BaseException:
            found = live.exception()
            if isinstance(found, (JobErased, StoppedByAnotherChild)):
                raise found from None  # why the job stops, not what its last write met
            raise
        error = live.exception()
        if error is not None:
            raise error

    def _last_write(self, write: Callable[[], None]) -> None:
        """`write`, a job's last before the final record update (the marker; a job written in
        one PUT an output, those too), without a live check of its own: that conditional
        update follows at once and is one (JobErased), and run_job then deletes what the
        write put there, as it does for a write that slips in after a check."""
        self._settle()
        write()

    def _live(self) -> None:
        """Before each write: JobErased when the job is being erased (DELETE) or gone, so that
        nothing is written into its erased prefixes. A write that slips in between this check
        and the erasure is caught by the conditional update after it (run_job cleans up).
        Fields not yet recorded (Job.unrecorded) make it that update, a live check too."""
        self._settle()
        if self.store is not None:
            if self.unrecorded:
                record = self._update_record({})
            else:
                record = self.store.live(self.obj.job_id)
            if self.config.shards > 1 and record.get("status") == FAILED:
                raise StoppedByAnotherChild(f"job {self.obj.job_id} failed: "
                                            f"{record.get('reason')}")

    def _workers(self, model: LoadedModel | None, left: int) -> workers.ChunkWorkers | None:
        """The worker processes that work this JSON Lines job's chunks (batch.workers), or
        None to work them in this process: on a GPU, without a model, for `left` bytes too
        few to pay for a pool, or where one worker is all there is."""
        if model is None or CUDA in model.providers:
            return None
        folder = version_dir(self.config.models_dir, self.obj.model, model.manifest.version,
                             self.config.registry)
        count = workers.worker_count(self.config.workers, left,
                                     workers.model_bytes(model, folder))
        if count < 2:
            return None
        return workers.ChunkWorkers(count, folder, self.config.registry,
                                    self.config.batch_rows, self.config.job_id)

    def _jsonl(self, state: checkpoint.Checkpoint, size: int, model: LoadedModel | None,
               model_error: str | None, batcher: MicroBatcher | None) -> None:
        # lines that begin before it are this child's (a child's range may be empty: stop 0)
        stop = state.stop if self.config.shards > 1 else size
        progress = Progress(stop - state.start, state.next_byte - state.start,
                            state.next_row - state.first_row, self.config.progress_seconds)
        numbered, chunk = state.next_row, state.next_chunk  # of the chunks worked so far
        pool = self._workers(model, stop - state.next_byte)
        if state.next_chunk == 0:  # a fresh job: its chunks' sizes (pinned from now on)
            state.first_chunk_bytes = FIRST_CHUNK_BYTES if state.chunk_bytes else 0
            if pool is not None and self.config.chunk_bytes is None and state.chunk_bytes:
                state.chunk_bytes = workers.chunk_bytes(state.chunk_bytes, stop - state.start,
                                                        pool.count)
        log_chunks(state)  # as the workers made them
        Worked = tuple[Future[tuple[bytes, int]], int, int, str]
        run_many = batcher.run if batcher else None
        # While the workers start, the runner works chunks itself, one at a time on a thread
        # of its own, so that the next chunk goes to the workers as soon as they are ready
        # rather than after the runner's chunk (measured: ready 0.1-0.2 s into a job whose
        # first chunk took the runner 0.4-0.7 s; 24,306 against 22,225 text-topics lines a
        # second, medians of 8 jobs; docs/performance.md, "Batch: the runner's own chunks")
        inline = ThreadPoolExecutor(1, thread_name_prefix="chunk") if pool is not None else None
        working: Future[tuple[bytes, int]] | None = None  # the chunk the runner works

        def work(lines_end: tuple[list[bytes | LongLine], int]) -> Worked:
            # The chunk's part and errors: from a worker process, else worked by the runner
            nonlocal numbered, chunk, working
            lines, end = lines_end
            if pool is None or inline is None:  # in-process, here and now
                part: Future[tuple[bytes, int]] = Future()
                part.set_result(chunk_part(self.pipeline, lines, numbered + 1, model,
                                           model_error, run_many))
            else:
                if working is not None:  # the next chunk to the first of the two free
                    either: list[Future[Any]] = [working, pool.ready]
                    wait(either, return_when=FIRST_COMPLETED)
                if pool.ready.done():
                    part = pool.submit(lines, numbered + 1)
                else:  # the workers still start, and the runner's thread is free
                    working = part = inline.submit(chunk_part, self.pipeline, lines,
                                                   numbered + 1, model, model_error, run_many)
            numbered, chunk = numbered + len(lines), chunk + 1
            return part, len(lines), end, self.obj.jsonl_part(chunk - 1)

        def write(done: Worked) -> None:
            part, lines, end, name = done
            body, errors = part.result()  # in input order, whichever worker finishes first
            self._live()
            put_bytes(self.s3, self.config.bucket, self.obj.output_key(self.folder + name),
                      body, "application/x-ndjson")
            self._checkpoint(state, lines, end, lines - errors, errors, [self.folder + name],
                             progress, end)

        try:
            overlapped(chunks_of_lines(self.source, state.next_byte, size, state.chunk_rows,
                                       state.chunk_bytes, stop, state.first_chunk_bytes,
                                       state.next_chunk),
                       work, write, depth=pool.count if pool is not None else 1,
                       name=self.obj.job_id)
        except BaseException:
            if pool is not None:
                pool.close(wait=False)
            raise
        finally:
            if inline is not None:  # (a chunk it still works ends first: its hooks flush)
                inline.shutdown(wait=True, cancel_futures=True)
        if pool is not None:
            pool.close()
        progress.update(max(state.next_byte, stop) - state.start,
                        state.next_row - state.first_row, force=True)

    def _open_npy(self, state: checkpoint.Checkpoint, size: int, body: Any
                  ) -> tuple[NpyLayout, Any]:
        """The .npy input's layout, and a stream of its rows for a job at its first row (the
        header and the rows in one GET: `body`, the whole object's stream when it was opened,
        open_npy), else None (a ranged GET of the header; `body` is closed)."""
        if state.next_row == 0 and self.config.shard == 0:
            return open_npy(self.source, size, body)
        if body is not None:
            body.close()
        return npy_layout(self.source, size), None

    def _npy(self, state: checkpoint.Checkpoint, opened: tuple[NpyLayout, Any],
             batcher: MicroBatcher) -> None:
        """The .npy rows: read, run, and their outputs streamed into one multipart upload per
        model output (batch.writer.NpyUpload), completed after the last rows."""
        layout, body = opened
        try:
            uploads, total = self._npy_rows(state, layout, batcher, body)
        except BaseException:
            if body is not None:
                body.close()
            raise
        try:
            self._settle()  # a job of no rows writes here first: after its start is recorded
            each_upload(uploads, NpyUpload.complete)
        except BaseException as error:
            if not is_transient(error):
                self._abort(uploads)
            raise
        if uploads:
            self.outputs = {name: upload.shape for name, upload in uploads.items()}
        state.parts = [self.folder + self.obj.npy_output(name) for name in uploads]
        state.headers = {self.folder + self.obj.npy_output(name): {
            "descr": upload.descr, "shape": upload.shape} for name, upload in uploads.items()}
        LOG.info("job %s%s: %d rows, outputs written: %s", self.obj.job_id, self._child,
                 total - state.start, ", ".join(state.parts) or "none (no rows)")

    def _npy_rows(self, state: checkpoint.Checkpoint, layout: NpyLayout, batcher: MicroBatcher,
                  body: Any) -> tuple[dict[str, NpyUpload], int]:
        """Run the rows this attempt has left, adding their outputs to the uploads (each part
        uploaded, then the checkpoint naming it). The uploads (none for a child without
        rows) and the row after the last."""
        spec = npy.input_spec(layout, batcher.model)
        if self.config.shards > 1 and not state.stop:  # a fresh child: its rows
            state.start, state.stop = shards.nominal_range(layout.shape[0], self.config.shard,
                                                           self.config.shards)
            state.first_row = state.next_row = state.start
            LOG.info("child %d of %d: rows [%d, %d)", self.config.shard, self.config.shards,
                     state.start, state.stop)
        total = state.stop if self.config.shards > 1 else layout.shape[0]
        if total == state.start and self.config.shards > 1:
            return {}, total  # a child without rows writes nothing
        uploads = self._uploads(state, total - state.start, batcher.model)
        if state.next_row != 0 and body is not None:
            body.close()  # a retry: the rows are read from where it resumes
            body = None
        per_chunk = npy.chunk_rows(state.chunk_rows, state.chunk_bytes, layout.row_bytes) \
            or max(1, total - state.start)
        progress = Progress(total - state.start, state.next_row - state.start,
                            state.next_row - state.first_row, self.config.progress_seconds)
        if self.config.shards > 1:
            # its exact rows now, from the header: the job's rows_total (its children's sum,
            # jobs_api.array_job) need not wait for this child's first checkpoint
            self._record(state, progress, state.next_row)
        pending = 0  # rows whose outputs are added to the uploads but not uploaded yet
        recorded = flushed = checked = time.monotonic()

        def work(chunk: tuple[int, int, np.ndarray]) -> tuple[int, Mapping[str, np.ndarray]]:
            first, stop, rows = chunk
            results = npy.predict_rows(self.pipeline, batcher, spec, rows)
            self.pipeline.flush()
            return stop - first, results

        def write(done: tuple[int, Mapping[str, np.ndarray]]) -> None:
            nonlocal pending, recorded, flushed, checked
            rows, results = done
            for name, upload in uploads.items():
                upload.add(results[name])
            pending += rows
            position = state.next_row + pending
            if position < total and not parts_due(uploads, flushed):
                held_too_much(uploads, pending)
                if time.monotonic() - checked > LIVE_SECONDS:
                    self._live()
                    checked = time.monotonic()
                if time.monotonic() - recorded > RECORD_SECONDS:
                    self._record(state, progress, position)
                    recorded = time.monotonic()
                return
            last = position == total
            # The whole job in this one write, a PUT an output: no checkpoint (the marker
            # follows; a kill before it redoes the job, as it would without one)
            whole = last and not any(upload.parts for upload in uploads.values())
            (self._last_write if whole and self.config.shards == 1 else self._while_live)(
                lambda: each_upload(uploads, lambda upload: upload.flush(last)))
            state.uploads = {name: upload.state() for name, upload in uploads.items()}
            if whole:
                state.advance(pending, 0, pending, 0, [])
            else:
                self._checkpoint(state, pending, 0, pending, 0, [], progress, position)
            pending, recorded = 0, time.monotonic()
            flushed = recorded

        try:
            overlapped(iter_rows(self.source, layout, state.next_row, total, per_chunk,
                                 max(1, FIRST_CHUNK_BYTES // max(1, layout.row_bytes)), body),
                       work, write, name=self.obj.job_id)
        except BaseException as error:
            if not is_transient(error) and not isinstance(error, JobErased):
                self._abort(uploads)  # a job that failed for good leaves no upload behind
            raise
        progress.update(total - state.start, state.next_row - state.first_row, force=True)
        if total == state.start:  # no rows at all: an empty file per output
            for output in batcher.model.manifest.outputs:
                uploads[output.name].add(np.empty(
                    (0, *(max(0, dim) for dim in output.shape[1:])),
                    dtype=numpy_dtype(output.datatype)))
        return uploads, total

    def _uploads(self, state: checkpoint.Checkpoint, rows: int, model: LoadedModel
                 ) -> dict[str, NpyUpload]:
        """Each model output's upload of `rows` rows: the checkpoint's, continued, when S3
        still has every one of them; else fresh, the rows done so far redone (state restarted)
        and what was uploaded dropped. A checkpoint of an earlier runner (per-chunk parts, no
        uploads) is redone too."""
        def fresh() -> dict[str, NpyUpload]:
            return {output.name: NpyUpload(self.s3, self.config.bucket, self.obj.output_key(
                self.folder + self.obj.npy_output(output.name)), rows)
                for output in model.manifest.outputs}

        if state.next_row == state.first_row and not state.uploads:
            return fresh()
        uploads = {name: NpyUpload(self.s3, self.config.bucket, saved["key"], rows, saved)
                   for name, saved in state.uploads.items()}
        if set(uploads) == {output.name for output in model.manifest.outputs} \
                and all(upload.resumable() for upload in uploads.values()):
            LOG.info("job %s%s: continuing its .npy outputs' uploads at row %d",
                     self.obj.job_id, self._child, state.next_row)
            return uploads
        LOG.warning("job %s%s: the outputs of its first %d rows cannot be continued (an "
                    "upload gone, or a checkpoint of an earlier runner): they are redone",
                    self.obj.job_id, self._child, state.next_row - state.first_row)
        self._abort(uploads)
        state.restart()
        return fresh()

    @staticmethod
    def _abort(uploads: Mapping[str, NpyUpload]) -> None:
        for upload in uploads.values():
            try:
                upload.abort()
            except Exception:  # the job's own error is the one to raise
                LOG.exception("aborting the upload of %s failed", upload.key)

    def _assemble_npy(self, parts: list[str], headers: dict[str, dict[str, Any]],
                      model: LoadedModel) -> dict[str, list[int]]:
        """An array job's `<output>.npy` files: each output's children's files (in input
        order) concatenated (each read back once)."""
        shapes = {}
        for output in model.manifest.outputs:
            name = self.obj.npy_output(output.name)
            mine = [p for p in parts if SHARD_FOLDER.sub("", p, count=1) == name]
            shapes[output.name] = list(concatenate_npy(
                self.s3, self.config.bucket, [self.obj.output_key(p) for p in mine],
                self.obj.output_key(name), [headers.get(p) for p in mine]))
        return shapes

    # ---- an array job's children (batch.shards)

    def _child_done(self, state: checkpoint.Checkpoint, summary: dict[str, Any],
                    model: LoadedModel | None) -> dict[str, Any]:
        """This child's rows are done: write its `_DONE.json`, then, if every child is done,
        finish the job (`_finish`). The job's summary when this child finished it, else the
        child's."""
        child = {**summary, "shard": self.config.shard, "shards": self.config.shards,
                 "start": state.start, "stop": state.stop, "first_row": state.first_row,
                 "headers": state.headers}
        put_json(self.s3, self.config.bucket, self.obj.output_key(self.folder + DONE), child)
        if self.store is not None:
            # its pace this attempt: the job's, once every child is done (jobs_api.array_job)
            self.store.update_shard(self.obj.job_id, self.config.shard, {
                "state": SUCCEEDED, **state.counts, "rows_per_second": self.finished_progress(
                    summary)["rows_per_second"]})
        children = self._children_done()
        if len(children) < self.config.shards:
            # (children that end at once can log the same count: each sees the other's done)
            waiting = sorted(set(range(self.config.shards)) - {c["shard"] for c in children})
            LOG.info("job %s%s: done; %d of %d children done, waiting for child%s %s",
                     self.obj.job_id, self._child, len(children), self.config.shards,
                     "ren" if len(waiting) > 1 else "", ", ".join(map(str, waiting)))
            return {**summary, "finished_job": False}
        return self._finish(children, summary, model)

    def finished_progress(self, summary: dict[str, Any]) -> dict[str, Any]:
        """This attempt's rows are all done: the progress its record ends with
        (batch.progress.finished), its pace over this attempt's rows."""
        rows = int(summary["rows_read"])
        return progress_finished(rows, rows - self.rows_before,
                                 float(summary["seconds_this_attempt"]))

    def _children_done(self) -> list[dict[str, Any]]:
        """The `_DONE.json` of every child that has one, in index order."""
        found = []
        for index in range(self.config.shards):
            key = self.obj.output_key(self.obj.shard_folder(index, self.config.shards) + DONE)
            document = get_json(self.s3, self.config.bucket, key)
            if document is not None:
                found.append(document)
        return found

    def _finish(self, children: list[dict[str, Any]], summary: dict[str, Any],
                model: LoadedModel | None) -> dict[str, Any]:
        """Every child is done: one of them (the first to claim `_FINISHING.json`, or its
        retry) assembles the .npy outputs and writes `_SUCCESS.json`, once."""
        claim = {"shard": self.config.shard}
        if not put_json_once(self.s3, self.config.bucket, self.obj.output_key(FINISHING), claim):
            holder = get_json(self.s3, self.config.bucket, self.obj.output_key(FINISHING))
            if holder != claim:
                LOG.info("job %s%s: done; child %s finishes the job", self.obj.job_id,
                         self._child, (holder or {}).get("shard"))
                return {**summary, "finished_job": False}
        parts = [part for child in children for part in child["parts"]]
        counts = {count: sum(int(child[count]) for child in children)
                  for count in ("rows_read", "outputs_written", "errors")}
        job_summary: dict[str, Any] = {
            **{k: summary[k] for k in ("job_id", "model", "input", "input_version", "format",
                                       "model_version", "providers")},
            **counts, "parts": parts, "shards": [
                {k: child[k] for k in ("shard", "start", "stop", "first_row", "rows_read",
                                       "outputs_written", "errors", "parts")}
                for child in children]}
        if self.obj.format == "npy" and model is not None:
            headers = {k: v for child in children for k, v in child["headers"].items()}
            job_summary["outputs"] = self._assemble_npy(parts, headers, model)
        if not put_json_once(self.s3, self.config.bucket, self.obj.success_key, job_summary):
            LOG.info("job %s: %s was written already", self.obj.job_id, SUCCESS)
        LOG.info("job %s: every child done; %s written by child %d", self.obj.job_id, SUCCESS,
                 self.config.shard)
        return {**job_summary, "finished_job": True}


def each_upload(uploads: Mapping[str, NpyUpload], action: Callable[[NpyUpload], None]) -> None:
    """`action` (a request or two) on every upload, concurrently when there are several (the
    outputs of one model); raises the first error, once all are done."""
    if len(uploads) < 2:
        for upload in uploads.values():
            action(upload)
        return
    with ThreadPoolExecutor(len(uploads), thread_name_prefix="upload") as pool:
        for future in [pool.submit(action, upload) for upload in uploads.values()]:
            future.result()


class StoppedByAnotherChild(PermanentError):
    """Another child of the array job failed it for good: this one stops (exit 2) and leaves
    the job's reason as that child recorded it."""


def first_line_at(source: S3Object, offset: int, size: int) -> int:
    """The byte at which the first line that begins at or after `offset` begins (`size` when
    none does): `offset` itself when the byte before it ends a line."""
    if offset <= 0:
        return 0
    position = offset - 1
    while position < size:
        block = source.get(f"bytes={position}-{min(size, position + BLOCK) - 1}").read()
        if not block:
            break
        found = block.find(b"\n")
        if found >= 0:
            return position + found + 1
        position += len(block)
    return size


def log_chunks(state: checkpoint.Checkpoint) -> None:
    """Log the chunks' limits the job works with (pinned in its checkpoint)."""
    limits = [f"{state.chunk_rows} rows" if state.chunk_rows else "",
              f"{state.chunk_bytes} bytes of input" if state.chunk_bytes else ""]
    LOG.info("chunks of at most %s (pinned in the checkpoint)",
             " or ".join(limit for limit in limits if limit) or "the whole input")


def count_lines(source: S3Object, stop: int) -> int:
    """The lines that end before byte `stop` (the newlines in [0, stop)): the number of the
    line that begins at `stop`, less one. One streamed read of those bytes."""
    if stop <= 0:
        return 0
    body = source.get(f"bytes=0-{stop - 1}")
    lines = 0
    while block := body.read(BLOCK):
        lines += block.count(b"\n")
    return lines


def run_job(config: JobConfig, s3: Any = None, store: JobStore | None = None) -> dict[str, Any]:
    """Run the job, recording its state in the jobs table (when there is one) and sending the
    job-end event (batch.notify) when it ends. JobErased when the job was erased under it:
    it stops and deletes whatever it wrote after the erasure began."""
    s3 = s3 if s3 is not None else client("s3")
    if store is None and config.table:
        store = JobStore(config.table)
    sharded = config.shards > 1
    child = f"child {config.shard} of {config.shards}: " if sharded else ""
    attempt_started = time.time()
    # the start's update, the model's load, then the live checks beside writes and the
    # EventBridge client, beside the job's own requests
    background = ThreadPoolExecutor(2, thread_name_prefix="record")
    started: Future[Any] | None = None
    job: Job | None = None
    try:
        if store is not None:
            # An array job's record keeps the parent's AWS Batch id (children are <id>:<i>).
            # A job of one child records its start while it opens its input and loads its
            # model; the answer says whether there can be a checkpoint to read
            # (Job._saved_state), and it lands before the job's first write (Job._settle)
            # `started_at` is the first attempt's (of any child): a retry keeps it
            if not sharded:
                batch_job_id = os.environ.get("AWS_BATCH_JOB_ID", f"pid-{os.getpid()}")
                started = background.submit(
                    store.update, config.job_id, RUNNING, increment_attempts=True,
                    fields={"batch_job_id": batch_job_id}, first={"started_at": time.time()})
            else:
                store.update(config.job_id, increment_attempts=True,
                             first={"started_at": time.time()})
        try:
            if sharded and store is not None:
                if not store.start_unless_failed(config.job_id):
                    raise StoppedByAnotherChild(f"job {config.job_id} failed before child "
                                                f"{config.shard} started")
                store.update_shard(config.job_id, config.shard, {"state": RUNNING},
                                   merge=True)
            job = Job(config, s3, store, background, started)
            summary = job.run()
        except JobErased:
            raise
        except StoppedByAnotherChild as error:
            LOG.warning("%s", error)
            if store is not None:
                store.update_shard(config.job_id, config.shard, {"state": STOPPED},
                                   merge=True)
            raise
        except (Exception, Terminated) as error:
            # A permanent fault ends the job here (exit 2: Batch does not retry it); after a
            # transient one the job stays `running` with the reason until the next attempt
            # starts, or until Batch gives up and batch.state records it `failed`. A child of
            # an array job that fails for good fails the job: the others stop at their next
            # chunk (Job._live).
            # The start's update lands first: this one follows it
            erased_at_start(started)
            reason = f"{child}{type(error).__name__}: {error}"
            unrecorded = job.unrecorded if job is not None else {}
            if store is not None and is_transient(error):
                store.update(config.job_id, fields={
                    "reason": f"attempt failed, to be retried: {reason}", **unrecorded})
            elif store is not None:
                if sharded:
                    store.update_shard(config.job_id, config.shard, {"state": FAILED,
                                                                     "reason": reason},
                                       merge=True)
                # The first child to fail a job gives its reason; a later one keeps it
                if not sharded or (store.get(config.job_id) or {}).get("status") != FAILED:
                    notify.job_finished(store.update(config.job_id, FAILED, fields={
                        "reason": reason, "finished_at": time.time(), **unrecorded}), made(job))
            raise
        if store is not None and summary.get("finished_job", True):
            # An array job's progress is its children's (jobs_api.array_job)
            done = {} if sharded or job is None else {"progress": job.finished_progress(summary)}
            notify.job_finished(store.update(config.job_id, SUCCEEDED, remove=("reason",), fields={
                "finished_at": time.time(), **done, **(job.unrecorded if job is not None else {}),
                **{count: summary[count] for count in ("rows_read", "outputs_written", "errors")}}),
                made(job))
    except JobErased:
        obj = parse_key(config.bucket, config.key, config.version_id)
        removed = erase.erase(s3, config.bucket, obj.output_prefix)
        captured: int | None = None
        try:
            captured = erase.erase_captured(obj.model, config.job_id, attempt_started)
        except Exception as error:  # the job stays erased: say what is left, exit as erased
            LOG.error("job %s: its data capture records of this attempt could not be erased "
                      "(%s: %s); they expire at the capture bucket's retention",
                      config.job_id, type(error).__name__, error)
        LOG.warning("job %s was erased while it ran: stopped; %d object version(s) and %d "
                    "data capture object(s) it wrote after the erasure began were deleted",
                    config.job_id, removed, captured or 0)
        raise
    finally:
        background.shutdown(wait=True)
    return summary


def erased_at_start(update: Future[Any] | None) -> None:
    """Wait for the job's start update (None: none in flight); JobErased when it found the job
    being erased (the job's own error is then not the one to record). Any other error of it is
    the job's to report, as the attempt's error."""
    error = update.exception() if update is not None else None
    if isinstance(error, JobErased):
        raise error


def made(job: Job | None) -> Any:
    """The EventBridge client `job` made (events_client never raises), or None (the job
    ended before its rows were done: batch.notify makes one)."""
    return job.events.result() if job is not None and job.events is not None else None


def events_client() -> Any:
    """An EventBridge client for the job-end event, made once the job's rows are done; None
    when it cannot be made (batch.notify then makes its own and logs why it could not send)."""
    try:
        return client("events")
    except Exception as error:  # botocore's (NoRegionError, a bad profile): never the job's
        LOG.warning("no EventBridge client for the job-end event: %s", error)
        return None


def parts_due(uploads: Mapping[str, NpyUpload], since: float) -> bool:
    """Whether the .npy outputs held go up as the next parts now (then a checkpoint): each
    holds a part's worth (NpyUpload.ready), and the job's files total more than ONE_PUT_BYTES
    or their outputs have been held since `since` (time.monotonic()) for HOLD_SECONDS."""
    if not all(upload.ready for upload in uploads.values()):
        return False
    return (sum(upload.size for upload in uploads.values()) > ONE_PUT_BYTES
            or time.monotonic() - since > HOLD_SECONDS)


def held_too_much(uploads: Mapping[str, NpyUpload], rows: int) -> None:
    """PermanentError when an output holds more than MAX_HELD_BYTES while waiting for another
    to make a part (`rows`: the rows held so far), saying how to run the input instead."""
    wide = max(uploads.values(), key=lambda upload: upload.pending_bytes)
    if wide.pending_bytes <= MAX_HELD_BYTES:
        return
    narrow = min(uploads.values(), key=lambda upload: upload.pending_bytes)
    row_bytes = max(1, wide.pending_bytes // max(1, rows))
    raise PermanentError(
        f"the model's outputs differ too much in size for .npy outputs: {wide.key} holds "
        f"{wide.pending_bytes / 2**30:.1f} GiB while {narrow.key} has not made a "
        f"{PART_BYTES >> 20} MiB part (the outputs' parts end at the same row); run this "
        f"input as JSON Lines, or as .npy inputs of at most {MAX_HELD_BYTES // row_bytes:,} rows")
