"""One attempt at a batch job: resume from the checkpoint, run the chunks, write the marker.

A chunk is BATCH_CHUNK_BYTES of input (8 MiB; whole lines) or BATCH_CHUNK_ROWS rows, whichever
ends first: each chunk costs a few S3 and DynamoDB requests (read, part, checkpoint, job
record), so chunks are sized by bytes to amortise them whatever a row weighs. Every input line
(or .npy row) yields exactly one output record, checkpointed per chunk (batch.checkpoint); the
job's state and counts go to the jobs table. The two formats answer through the serving
library's pipeline (batch.jsonl, batch.npy); only a fault of the job itself (its input
unreadable, S3 failing, the model not loading) fails it (batch.failures says which faults a
retry may fix). Before each write the job checks that it is not being erased (DELETE), and its
record updates are refused once it is; it then stops and deletes what it wrote meanwhile, so
nothing is left in the erased prefixes.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_api.aws import hooks
from model_api.limits import BATCH_RECORD
from model_api.model import LoadedModel
from model_api.pipeline import Pipeline

from batch import checkpoint, erase, notify, npy
from batch.aws import client
from batch.failures import PermanentError, Terminated, is_transient
from batch.jobs import FAILED, RUNNING, SUCCEEDED, JobErased, JobStore
from batch.jsonl import chunks_of_lines, line_records
from batch.keys import InputObject, parse_key
from batch.loading import CUDA, load_model
from batch.microbatch import CPU_SIZES, GPU_SIZES, BatchSizeTuner, MicroBatcher
from batch.models import capture_configs
from batch.progress import Progress
from batch.reader import S3Object, npy_layout, read_rows
from batch.writer import concatenate_npy, npy_bytes, npy_header, put_bytes, put_json

LOG = logging.getLogger("batch.runner")
CHUNK_BYTES = 8 << 20  # of input per chunk, by default


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

    @property
    def byte_limit(self) -> int:
        """Bytes of input per chunk of a fresh job: chunk_bytes when set, else none when
        chunk_rows is set (rows given alone mean rows only), else CHUNK_BYTES."""
        if self.chunk_bytes is not None:
            return self.chunk_bytes
        return 0 if self.chunk_rows else CHUNK_BYTES


class Job:
    """One attempt at a job: resumes from the checkpoint, writes parts, then the marker."""

    def __init__(self, config: JobConfig, s3: Any, store: JobStore | None) -> None:
        self.config, self.s3, self.store = config, s3, store
        self.obj: InputObject = parse_key(config.bucket, config.key, config.version_id)
        if self.obj.job_id != config.job_id:
            raise PermanentError(f"job id {config.job_id} does not belong to "
                                 f"{config.key} version {config.version_id}")
        self.source = S3Object(s3, config.bucket, config.key, config.version_id)
        self.pipeline = Pipeline(BATCH_RECORD, hooks.installed(capture_configs(config.registry)),
                                 path="batch")

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        head = self.source.head()
        size = int(head["ContentLength"])
        state = checkpoint.load(self.s3, self.obj, self.config.chunk_rows,
                                self.config.byte_limit)
        if state.next_chunk:
            LOG.info("resuming job %s at chunk %d (line/row %d)", self.obj.job_id,
                     state.next_chunk, state.next_row)
        LOG.info("chunks of at most %s rows, %s bytes of input (pinned in the checkpoint)",
                 state.chunk_rows or "any", state.chunk_bytes or "any")
        model, model_error = self._model(state)
        sizes = GPU_SIZES if model is not None and CUDA in model.providers else CPU_SIZES
        tuner = BatchSizeTuner(sizes, self.config.batch_rows)
        batcher = MicroBatcher(model, tuner) if model is not None else None
        if self.obj.format == "jsonl":
            self._jsonl(state, size, model, model_error, batcher)
        else:
            if batcher is None:
                raise PermanentError(model_error or "no model")
            self._npy(state, size, batcher)
        summary: dict[str, Any] = {
            "job_id": self.obj.job_id, "model": self.obj.model,
            "input": f"s3://{self.config.bucket}/{self.config.key}",
            "input_version": self.config.version_id, "format": self.obj.format,
            "model_version": state.model_version or None, **state.counts, "parts": state.parts,
            "providers": list(model.providers) if model is not None else [],
            "seconds_this_attempt": round(time.monotonic() - started, 3)}
        self._live()
        if self.obj.format == "npy" and model is not None:
            summary["outputs"] = self._assemble_npy(state, model)
        put_json(self.s3, self.config.bucket, self.obj.success_key, summary)
        if model_error:
            raise PermanentError(model_error)
        return summary

    def _model(self, state: checkpoint.Checkpoint) -> tuple[LoadedModel | None, str | None]:
        """The model, or (JSON Lines only) the reason every line gets an error record. The
        version is the one pinned in the checkpoint by an earlier attempt, else the key's,
        else the current one; it is pinned (and recorded in the job) once chosen."""
        version = state.model_version or self.obj.version
        try:
            model = load_model(self.config.models_dir, self.obj.model, version,
                               self.config.registry, self.config.use_gpu,
                               self.config.require_gpu)
        except PermanentError as error:
            if self.obj.format != "jsonl":
                raise
            LOG.error("%s: every line gets an error record", error)
            return None, str(error)
        if state.model_version and state.model_version != self.obj.version:
            LOG.info("serving version %s, pinned by the first attempt", state.model_version)
        state.model_version = model.manifest.version
        if self.store is not None:
            self.store.update(self.obj.job_id, fields={"model_version": state.model_version})
        return model, None

    def _checkpoint(self, state: checkpoint.Checkpoint, rows: int, end: int, outputs: int,
                    errors: int, parts: list[str], progress: Progress, position: int,
                    headers: dict[str, dict[str, Any]] | None = None) -> None:
        state.advance(rows, end, outputs, errors, parts, headers)
        checkpoint.save(self.s3, self.obj, state)
        if self.store is not None:  # refused (JobErased) once the job is being erased
            unit = "bytes" if self.obj.format == "jsonl" else "rows"
            self.store.update(self.obj.job_id, fields={
                **state.counts, "progress": progress.snapshot(position, state.next_row, unit)})
        progress.update(position, state.next_row)

    def _live(self) -> None:
        """Before each write: JobErased when the job is being erased (DELETE) or gone, so that
        nothing is written into its erased prefixes. A write that slips in between this check
        and the erasure is caught by the conditional update after it (run_job cleans up)."""
        if self.store is not None:
            self.store.live(self.obj.job_id)

    def _jsonl(self, state: checkpoint.Checkpoint, size: int, model: LoadedModel | None,
               model_error: str | None, batcher: MicroBatcher | None) -> None:
        progress = Progress(size, state.next_byte, state.next_row, self.config.progress_seconds)
        for lines, end in chunks_of_lines(self.source, state.next_byte, size, state.chunk_rows,
                                          state.chunk_bytes):
            records, errors = line_records(self.pipeline, lines, state.next_row + 1, model,
                                           model_error, batcher.run if batcher else None)
            self.pipeline.flush()
            self._live()
            part = self.obj.jsonl_part(state.next_chunk)
            put_bytes(self.s3, self.config.bucket, self.obj.output_key(part),
                      b"\n".join(records) + b"\n", "application/x-ndjson")
            self._checkpoint(state, len(lines), end, len(records) - errors, errors, [part],
                             progress, end)
        progress.update(size, state.next_row, force=True)

    def _npy(self, state: checkpoint.Checkpoint, size: int, batcher: MicroBatcher) -> None:
        layout = npy_layout(self.source, size)
        spec = npy.input_spec(layout, batcher.model)
        total = layout.shape[0]
        per_chunk = npy.chunk_rows(state.chunk_rows, state.chunk_bytes, layout.row_bytes) \
            or max(1, total)
        progress = Progress(total, state.next_row, state.next_row, self.config.progress_seconds)
        while state.next_row < total:
            stop = min(state.next_row + per_chunk, total)
            results = npy.predict_rows(self.pipeline, batcher, spec,
                                      read_rows(self.source, layout, state.next_row, stop))
            self.pipeline.flush()
            parts, headers = [], {}
            self._live()
            for name, array in results.items():
                part = self.obj.npy_part(name, state.next_chunk)
                put_bytes(self.s3, self.config.bucket, self.obj.output_key(part),
                          npy_bytes(array), "application/octet-stream")
                parts.append(part)
                headers[part] = npy_header(array)
            self._checkpoint(state, stop - state.next_row, 0, stop - state.next_row, 0, parts,
                             progress, stop, headers)
        progress.update(total, state.next_row, force=True)

    def _assemble_npy(self, state: checkpoint.Checkpoint, model: LoadedModel
                      ) -> dict[str, list[int]]:
        shapes = {}
        for output in model.manifest.outputs:
            parts = [p for p in state.parts if p.startswith(output.name + "/")]
            shapes[output.name] = list(concatenate_npy(
                self.s3, self.config.bucket, [self.obj.output_key(p) for p in parts],
                self.obj.output_key(self.obj.npy_output(output.name)),
                [state.headers.get(p) for p in parts]))
        return shapes


def run_job(config: JobConfig, s3: Any = None, store: JobStore | None = None) -> dict[str, Any]:
    """Run the job, recording its state in the jobs table (when there is one) and sending the
    job-end event (batch.notify) when it ends. JobErased when the job was erased under it:
    it stops and deletes whatever it wrote after the erasure began."""
    s3 = s3 if s3 is not None else client("s3")
    if store is None and config.table:
        store = JobStore(config.table)
    try:
        if store is not None:
            store.update(config.job_id, RUNNING, increment_attempts=True, fields={
                "batch_job_id": os.environ.get("AWS_BATCH_JOB_ID", f"pid-{os.getpid()}"),
                "started_at": time.time()})
        try:
            summary = Job(config, s3, store).run()
        except JobErased:
            raise
        except (Exception, Terminated) as error:
            # A permanent fault ends the job here (exit 2: Batch does not retry it); after a
            # transient one the job stays `running` with the reason until the next attempt
            # starts, or until Batch gives up and batch.state records it `failed`.
            if store is not None and is_transient(error):
                store.update(config.job_id, fields={
                    "reason": f"attempt failed, to be retried: {type(error).__name__}: {error}"})
            elif store is not None:
                store.update(config.job_id, FAILED, fields={
                    "reason": f"{type(error).__name__}: {error}", "finished_at": time.time()})
                notify.job_finished(store.get(config.job_id) or {})
            raise
        if store is not None:
            store.update(config.job_id, SUCCEEDED, remove=("reason",), fields={
                "finished_at": time.time(),
                **{count: summary[count] for count in ("rows_read", "outputs_written", "errors")}})
            notify.job_finished(store.get(config.job_id) or {})
    except JobErased:
        obj = parse_key(config.bucket, config.key, config.version_id)
        removed = erase.erase(s3, config.bucket, obj.output_prefix)
        LOG.warning("job %s was erased while it ran: stopped; %d object version(s) it wrote "
                    "after the erasure began were deleted", config.job_id, removed)
        raise
    return summary
