"""The batch job: run one model over one uploaded input object, in resumable chunks.

`python -m batch.runner` takes its job from arguments or from the environment AWS Batch gives
the container (BATCH_INPUT_BUCKET, BATCH_INPUT_KEY, BATCH_INPUT_VERSION, BATCH_JOB_ID,
JOBS_TABLE, MODELS_DIR, REQUIRE_GPU, ...). Every input line (or .npy row) yields exactly one
output record, checkpointed per chunk; the job's state and counts go to the jobs table.
A chunk is BATCH_CHUNK_BYTES of input (8 MiB; whole lines) or BATCH_CHUNK_ROWS rows, whichever
ends first: each chunk costs a few S3 and DynamoDB requests (read, part, checkpoint, job
record), so chunks are sized by bytes to amortise them whatever a row weighs.
The model version is the one the input key names, else the registry's current one
(batch.models), chosen by the serving library's rule, as the API chooses it.
Every line, whatever it holds (any bytes, nesting or size), gets exactly one record; only a
fault of the job itself (its input unreadable, S3 failing, the model not loading) fails it.
Exit codes: 0 done, 1 a transient fault (S3 or the network still failing after their retries,
no GPU on this host: worth a retry), 2 anything else (a retry would fail the same way), the job
erased under it included: before each write the runner checks that its job is not being erased
(DELETE), and its record updates are refused once it is; it then stops and deletes what it
wrote meanwhile, so nothing is left in the erased prefixes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from botocore.exceptions import BotoCoreError, ClientError
from model_api.codec import InferRequest, decode_request, parse_json, response_document
from model_api.datatypes import numpy_dtype
from model_api.errors import BadRequest, ModelAPIError, NotFound
from model_api.explain import with_outputs
from model_api.limits import BATCH_MAX_RECORD_BYTES, BATCH_RECORD
from model_api.manifest import Manifest
from model_api.model import LoadedModel
from model_api.service import resolve_version, version_folders

from batch import checkpoint, erase, notify
from batch.aws import client
from batch.jobs import FAILED, RUNNING, SUCCEEDED, JobErased, JobStore
from batch.keys import InputObject, parse_key
from batch.microbatch import CPU_SIZES, GPU_SIZES, BatchSizeTuner, MicroBatcher, is_memory_error
from batch.models import current_version
from batch.progress import Progress
from batch.reader import LongLine, NpyLayout, S3Object, iter_lines, npy_layout, read_rows
from batch.submit import PERMANENT_EXIT
from batch.writer import concatenate_npy, npy_bytes, npy_header, put_bytes, put_json

LOG = logging.getLogger("batch.runner")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PERMANENT_S3_ERRORS = ("NoSuchKey", "NoSuchVersion", "NoSuchBucket", "AccessDenied", "404", "403")
CHUNK_BYTES = 8 << 20  # of input per chunk, by default


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


def _terminated(signum: int, _: object) -> None:
    raise Terminated(f"stopped by signal {signum} (SIGTERM)")


@dataclass(frozen=True)
class Settings:
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


# ---------------------------------------------------------------------------- the model

def choose_providers(use_gpu: bool) -> list[str]:
    """CUDA first when this onnxruntime build has it, the CPU always as the fallback."""
    available = ort.get_available_providers()
    return [CUDA, CPU] if use_gpu and CUDA in available else [CPU]


def version_dir(models_dir: Path, model: str, version: str | None,
                registry: Path | None = None) -> Path:
    """The folder of the version a job serves: `version`, else the registry's current one,
    chosen among the exported versions by the serving library's rule (as the API chooses).
    PermanentError says why there is none."""
    try:
        installed = [folder.name for folder in version_folders(models_dir / model)]
    except OSError:
        installed = []
    if not installed:
        raise PermanentError(f"unknown model {model!r}: no versions of it under {models_dir}")
    try:
        current = current_version(model, registry) if version is None else None
    except (OSError, ValueError) as error:  # no registry, or model_registry.RegistryError
        raise PermanentError(f"cannot read the registry of current versions: {error}") from None
    if version is None and current is None:
        raise PermanentError(f"model {model!r} is not in the registry (models.yaml), so it has "
                             "no current version; name one in the key: "
                             f"batch/input/{model}/versions/<version>/<job>")
    try:
        return models_dir / model / resolve_version(model, version, current, installed)
    except ModelAPIError as error:
        raise PermanentError(error.message) from None


def load_model(settings: Settings, model: str, version: str | None) -> LoadedModel:
    """Load with the best provider and check what is ACTIVE: onnxruntime-gpu falls back to the
    CPU silently when its CUDA libraries do not match, and that must never go unnoticed."""
    providers = choose_providers(settings.use_gpu)
    folder = version_dir(settings.models_dir, model, version, settings.registry)
    try:
        loaded = LoadedModel.load(folder, providers=providers)
    except Exception as error:  # ModelLoadError, or onnxruntime's own: no retry loads it
        raise PermanentError(f"model {model!r} version {folder.name!r} failed to load: "
                             f"{error}") from error
    active = list(loaded.providers)
    if CUDA in active:
        LOG.info("model %s version %s runs on the GPU (active providers %s)", model,
                 folder.name, active)
    elif settings.require_gpu:
        raise HostError(f"a GPU was required but CUDA is not active (active {active}, "
                        f"available {ort.get_available_providers()})")
    else:
        LOG.warning("!!! model %s runs on the CPU: CUDA is not active (active %s, available "
                    "%s) !!!", model, active, ort.get_available_providers())
    return loaded


# ---------------------------------------------------------------------------- JSON Lines

def line_id(line: bytes) -> str | None:
    """The request's `id` for an error record: a string `id` of a line that is a JSON object,
    else None. Never raises, whatever the line holds (parse_json bounds the nesting that
    Python's recursive parser would otherwise die of)."""
    try:
        document = parse_json(line)
    except Exception:  # ModelAPIError for anything not JSON; the line's error is said already
        return None
    request_id = document.get("id") if isinstance(document, dict) else None
    return request_id if isinstance(request_id, str) else None


def compact(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def error_record(line: bytes | LongLine, number: int, message: str) -> bytes:
    request_id = line_id(line) if isinstance(line, bytes) else None
    return compact({"id": request_id, "line": number, "error": message})


def process_lines(lines: Sequence[bytes | LongLine], first_number: int,
                  model: LoadedModel | None, model_error: str | None,
                  batcher: MicroBatcher | None) -> tuple[list[bytes], int]:
    """One output record per line, in input order; and how many of them are errors. Each
    record is serialised as it is made: a chunk's documents never all live at the same time.
    Whatever a line holds, it costs only its own record: an unforeseen error while decoding or
    answering it (a defect, logged without the line) becomes that line's error record."""
    records: list[bytes] = [b""] * len(lines)
    errors = 0

    def fail(index: int, message: str) -> None:
        nonlocal errors
        records[index] = error_record(lines[index], first_number + index, message)
        errors += 1

    def unforeseen(index: int, stage: str, error: Exception) -> None:
        # Where it happened, not what it says: an exception's message may quote the line.
        LOG.error("line %d: %s while it was %s, at\n%s", first_number + index,
                  type(error).__name__, stage, "".join(traceback.format_tb(error.__traceback__)))
        fail(index, f"the line could not be {stage} ({type(error).__name__})")

    decoded: list[tuple[int, InferRequest]] = []
    for index, line in enumerate(lines):
        if model is None:
            fail(index, model_error or "no model")
        elif isinstance(line, LongLine):
            fail(index, f"the line is {line.length} bytes; the limit is "
                        f"{BATCH_MAX_RECORD_BYTES} bytes per JSON Lines record")
        elif not line.strip():
            fail(index, "empty line")  # its id is None: no JSON to take one from
        else:
            try:
                request, manifest = decode_record(line, model.manifest)
                if manifest is model.manifest:
                    decoded.append((index, request))
                    continue
                # Explained one record at a time: every row is already many model rows.
                results, parameters = model.explain(
                    request.inputs, [output.name for output in request.outputs],
                    request.parameters)
                records[index] = compact(
                    response_document(manifest, request, results, parameters))
            except ModelAPIError as error:
                fail(index, error.message)
            except Exception as error:
                unforeseen(index, "decoded", error)
    if batcher is not None and model is not None:
        requests = dict(decoded)
        for index, outcome in batcher.run(decoded):
            if isinstance(outcome, str):
                fail(index, outcome)
                continue
            try:
                records[index] = compact(
                    response_document(model.manifest, requests[index], outcome))
            except ModelAPIError as error:
                fail(index, error.message)
            except Exception as error:
                unforeseen(index, "answered", error)
    return records, errors


def decode_record(line: bytes, manifest: Manifest) -> tuple[InferRequest, Manifest]:
    """A record's request and the manifest it is answered against: the model's own, or, for a
    record asking for explanations (`"parameters": {"explain": true}`), the model's with the
    explanation's outputs (explain.with_outputs), which such a record may name in `outputs`."""
    try:
        request = decode_request(line, {}, manifest, BATCH_RECORD)
    except NotFound as error:  # perhaps an explanation output, named by an explain record
        explained = with_outputs(manifest)
        try:
            request = decode_request(line, {}, explained, BATCH_RECORD)
        except ModelAPIError:
            raise error from None
        if not _explain_flag(request):
            raise error from None
        return request, explained
    if _explain_flag(request):
        explained = with_outputs(manifest)
        return decode_request(line, {}, explained, BATCH_RECORD), explained
    return request, manifest


def _explain_flag(request: InferRequest) -> bool:
    explain = request.parameters.get("explain", False)
    if not isinstance(explain, bool):
        raise BadRequest(f"parameter 'explain' must be true or false, got {explain!r:.40}")
    return explain


def chunks_of_lines(source: S3Object, start: int, size: int, rows: int, max_bytes: int
                    ) -> Iterator[tuple[list[bytes | LongLine], int]]:
    """Lists of whole lines, each with the byte offset just past its last line: a list ends
    at `rows` lines or once its lines reach `max_bytes` bytes (0: no such limit). The cut
    depends only on the input from `start`, so a resumed job cuts the same chunks."""
    lines: list[bytes | LongLine] = []
    end = chunk_start = start
    for line, end in iter_lines(source, start, size, BATCH_MAX_RECORD_BYTES):
        lines.append(line)
        if len(lines) == rows or (max_bytes and end - chunk_start >= max_bytes):
            yield lines, end
            lines, chunk_start = [], end
    if lines:
        yield lines, end


def npy_chunk_rows(chunk_rows: int, chunk_bytes: int, row_bytes: int) -> int:
    """Rows per chunk of a .npy input: the row limit or as many rows as fit the byte limit
    (at least one), whichever is fewer; 0 (the whole file) when neither limit is set."""
    by_bytes = max(1, chunk_bytes // max(1, row_bytes)) if chunk_bytes else 0
    return min((limit for limit in (chunk_rows, by_bytes) if limit), default=0)


# ---------------------------------------------------------------------------- the job

class Job:
    """One attempt at a job: resumes from the checkpoint, writes parts, then the marker."""

    def __init__(self, settings: Settings, s3: Any, store: JobStore | None) -> None:
        self.settings, self.s3, self.store = settings, s3, store
        self.obj: InputObject = parse_key(settings.bucket, settings.key, settings.version_id)
        if self.obj.job_id != settings.job_id:
            raise PermanentError(f"job id {settings.job_id} does not belong to "
                                 f"{settings.key} version {settings.version_id}")
        self.source = S3Object(s3, settings.bucket, settings.key, settings.version_id)

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        head = self.source.head()
        size = int(head["ContentLength"])
        state = checkpoint.load(self.s3, self.obj, self.settings.chunk_rows,
                                self.settings.byte_limit)
        if state.next_chunk:
            LOG.info("resuming job %s at chunk %d (line/row %d)", self.obj.job_id,
                     state.next_chunk, state.next_row)
        LOG.info("chunks of at most %s rows, %s bytes of input (pinned in the checkpoint)",
                 state.chunk_rows or "any", state.chunk_bytes or "any")
        model, model_error = self._model(state)
        sizes = GPU_SIZES if model is not None and CUDA in model.providers else CPU_SIZES
        tuner = BatchSizeTuner(sizes, self.settings.batch_rows)
        batcher = MicroBatcher(model, tuner) if model is not None else None
        if self.obj.format == "jsonl":
            self._jsonl(state, size, model, model_error, batcher)
        else:
            if batcher is None:
                raise PermanentError(model_error or "no model")
            self._npy(state, size, batcher)
        summary: dict[str, Any] = {
            "job_id": self.obj.job_id, "model": self.obj.model,
            "input": f"s3://{self.settings.bucket}/{self.settings.key}",
            "input_version": self.settings.version_id, "format": self.obj.format,
            "model_version": state.model_version or None, **state.counts, "parts": state.parts,
            "providers": list(model.providers) if model is not None else [],
            "seconds_this_attempt": round(time.monotonic() - started, 3)}
        self._live()
        if self.obj.format == "npy" and model is not None:
            summary["outputs"] = self._assemble_npy(state, model)
        put_json(self.s3, self.settings.bucket, self.obj.success_key, summary)
        if model_error:
            raise PermanentError(model_error)
        return summary

    def _model(self, state: checkpoint.Checkpoint) -> tuple[LoadedModel | None, str | None]:
        """The model, or (JSON Lines only) the reason every line gets an error record. The
        version is the one pinned in the checkpoint by an earlier attempt, else the key's,
        else the current one; it is pinned (and recorded in the job) once chosen."""
        version = state.model_version or self.obj.version
        try:
            model = load_model(self.settings, self.obj.model, version)
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
        progress = Progress(size, state.next_byte, state.next_row, self.settings.progress_seconds)
        for lines, end in chunks_of_lines(self.source, state.next_byte, size, state.chunk_rows,
                                          state.chunk_bytes):
            records, errors = process_lines(lines, state.next_row + 1, model, model_error,
                                            batcher)
            self._live()
            part = self.obj.jsonl_part(state.next_chunk)
            put_bytes(self.s3, self.settings.bucket, self.obj.output_key(part),
                      b"\n".join(records) + b"\n", "application/x-ndjson")
            self._checkpoint(state, len(lines), end, len(records) - errors, errors, [part],
                             progress, end)
        progress.update(size, state.next_row, force=True)

    def _npy(self, state: checkpoint.Checkpoint, size: int, batcher: MicroBatcher) -> None:
        model, tuner = batcher.model, batcher.tuner
        layout = npy_layout(self.source, size)
        spec = self._check_npy(layout, model)
        outputs = [output.name for output in model.manifest.outputs]
        dtype = np.dtype(numpy_dtype(spec.datatype))
        total = layout.shape[0]
        per_chunk = npy_chunk_rows(state.chunk_rows, state.chunk_bytes, layout.row_bytes) \
            or max(1, total)
        progress = Progress(total, state.next_row, state.next_row, self.settings.progress_seconds)
        while state.next_row < total:
            stop = min(state.next_row + per_chunk, total)
            rows = read_rows(self.source, layout, state.next_row, stop).astype(dtype, copy=False)
            results: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
            first = 0
            while first < len(rows):
                batch = rows[first:first + tuner.size]
                try:
                    ran = batcher.run_timed({spec.name: batch}, outputs, len(batch),
                                            splittable=len(batch) > 1)
                except Exception as error:  # onnxruntime's own types; only memory is retried
                    if len(batch) == 1 or not is_memory_error(error):
                        raise
                    continue  # at the size run_timed halved the micro-batch to
                for name in outputs:
                    results[name].append(ran[name])
                first += len(batch)
            parts, headers = [], {}
            self._live()
            for name in outputs:
                part = self.obj.npy_part(name, state.next_chunk)
                array = np.concatenate(results[name])
                put_bytes(self.s3, self.settings.bucket, self.obj.output_key(part),
                          npy_bytes(array),
                          "application/octet-stream")
                parts.append(part)
                headers[part] = npy_header(array)
            self._checkpoint(state, stop - state.next_row, 0, stop - state.next_row, 0, parts,
                             progress, stop, headers)
        progress.update(total, state.next_row, force=True)

    def _check_npy(self, layout: NpyLayout, model: LoadedModel) -> Any:
        inputs = model.manifest.inputs
        if len(inputs) != 1:
            raise PermanentError(f"model {self.obj.model} has {len(inputs)} inputs; .npy input "
                                 "fits only single-input models (use JSON Lines)")
        spec = inputs[0]
        wanted = tuple(spec.shape[1:])
        got = layout.shape[1:]
        if len(got) != len(wanted) or any(w not in (-1, g) for w, g in zip(wanted, got,
                                                                            strict=True)):
            raise PermanentError(f".npy rows have shape {list(got)}; input {spec.name!r} of "
                                 f"{self.obj.model} takes rows of shape {list(wanted)}")
        target = np.dtype(numpy_dtype(spec.datatype))
        if not np.can_cast(layout.dtype, target, "same_kind"):
            raise PermanentError(f".npy dtype {layout.dtype} cannot be cast to {spec.datatype}")
        return spec

    def _assemble_npy(self, state: checkpoint.Checkpoint, model: LoadedModel
                      ) -> dict[str, list[int]]:
        shapes = {}
        for output in model.manifest.outputs:
            parts = [p for p in state.parts if p.startswith(output.name + "/")]
            shapes[output.name] = list(concatenate_npy(
                self.s3, self.settings.bucket, [self.obj.output_key(p) for p in parts],
                self.obj.output_key(self.obj.npy_output(output.name)),
                [state.headers.get(p) for p in parts]))
        return shapes


# ---------------------------------------------------------------------------- entry point

def run_job(settings: Settings, s3: Any = None, store: JobStore | None = None) -> dict[str, Any]:
    """Run the job, recording its state in the jobs table (when there is one) and sending the
    job-end event (batch.notify) when it ends. JobErased when the job was erased under it:
    it stops and deletes whatever it wrote after the erasure began."""
    s3 = s3 if s3 is not None else client("s3")
    if store is None and settings.table:
        store = JobStore(settings.table)
    try:
        if store is not None:
            store.update(settings.job_id, RUNNING, increment_attempts=True, fields={
                "batch_job_id": os.environ.get("AWS_BATCH_JOB_ID", f"pid-{os.getpid()}"),
                "started_at": time.time()})
        try:
            summary = Job(settings, s3, store).run()
        except JobErased:
            raise
        except (Exception, Terminated) as error:
            # A permanent fault ends the job here (exit 2: Batch does not retry it); after a
            # transient one the job stays `running` with the reason until the next attempt
            # starts, or until Batch gives up and batch.state records it `failed`.
            if store is not None and is_transient(error):
                store.update(settings.job_id, fields={
                    "reason": f"attempt failed, to be retried: {type(error).__name__}: {error}"})
            elif store is not None:
                store.update(settings.job_id, FAILED, fields={
                    "reason": f"{type(error).__name__}: {error}", "finished_at": time.time()})
                notify.job_finished(store.get(settings.job_id) or {})
            raise
        if store is not None:
            store.update(settings.job_id, SUCCEEDED, remove=("reason",), fields={
                "finished_at": time.time(),
                **{count: summary[count] for count in ("rows_read", "outputs_written", "errors")}})
            notify.job_finished(store.get(settings.job_id) or {})
    except JobErased:
        obj = parse_key(settings.bucket, settings.key, settings.version_id)
        removed = erase.erase(s3, settings.bucket, obj.output_prefix)
        LOG.warning("job %s was erased while it ran: stopped; %d object version(s) it wrote "
                    "after the erasure began were deleted", settings.job_id, removed)
        raise
    return summary


def is_transient(error: BaseException) -> bool:
    """Whether another attempt may succeed: S3 or DynamoDB still failing after botocore's own
    retries (throttling, 5xx, a dropped connection), the network, a host without its GPU, a
    SIGTERM (a spot reclaim). Anything else (bad input, a model that does not load, a defect)
    would fail the same way again, so it is not retried."""
    if isinstance(error, ClientError):
        return error.response["Error"]["Code"] not in PERMANENT_S3_ERRORS
    return isinstance(error, BotoCoreError | ConnectionError | TimeoutError | HostError
                      | Terminated)


def parse_args(argv: Sequence[str] | None) -> Settings:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m batch.runner", description=__doc__)
    parser.add_argument("--bucket", default=env("BATCH_INPUT_BUCKET"))
    parser.add_argument("--key", default=env("BATCH_INPUT_KEY"))
    parser.add_argument("--version-id", default=env("BATCH_INPUT_VERSION", "null"))
    parser.add_argument("--job-id", default=env("BATCH_JOB_ID"))
    parser.add_argument("--models-dir", type=Path, default=Path(env("MODELS_DIR", "/opt/models")))
    parser.add_argument("--registry", type=Path, default=env("MODELS_REGISTRY"),
                        help="models.yaml, where the models' current versions are declared")
    parser.add_argument("--table", default=env("JOBS_TABLE"))
    parser.add_argument("--chunk-rows", type=int, default=int(env("BATCH_CHUNK_ROWS", "0")),
                        help="rows (JSON Lines: lines) per chunk; given alone, chunks are cut "
                             "by rows only (default: by bytes)")
    parser.add_argument("--chunk-bytes", type=int, default=env("BATCH_CHUNK_BYTES"),
                        help=f"bytes of input per chunk (default {CHUNK_BYTES}, none when "
                             "--chunk-rows is given alone; 0: no limit)")
    parser.add_argument("--batch-rows", type=int, default=int(env("BATCH_ROWS", "0")),
                        help="rows per model run (default 0: timed on the first rows)")
    parser.add_argument("--require-gpu", action="store_true",
                        default=env("REQUIRE_GPU", "false").lower() == "true")
    parser.add_argument("--cpu", action="store_true", help="do not try CUDA")
    parser.add_argument("--progress-seconds", type=float,
                        default=float(env("BATCH_PROGRESS_SECONDS", "5")))
    args = parser.parse_args(argv)
    missing = [name for name in ("bucket", "key", "job_id") if not getattr(args, name)]
    if missing:
        parser.error(f"missing {', '.join(missing)} (arguments or BATCH_INPUT_* / BATCH_JOB_ID)")
    if min(args.chunk_rows, args.chunk_bytes or 0, args.batch_rows) < 0 or (
            args.chunk_rows == 0 and args.chunk_bytes == 0):
        parser.error("--chunk-rows, --chunk-bytes and --batch-rows must be >= 0, and one of "
                     "--chunk-rows and --chunk-bytes > 0")
    return Settings(bucket=args.bucket, key=args.key, version_id=args.version_id,
                    job_id=args.job_id, models_dir=args.models_dir,
                    registry=args.registry, table=args.table,
                    chunk_rows=args.chunk_rows, chunk_bytes=args.chunk_bytes,
                    batch_rows=args.batch_rows,
                    require_gpu=args.require_gpu, use_gpu=not args.cpu,
                    progress_seconds=args.progress_seconds)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = parse_args(argv)
    LOG.info("job %s: s3://%s/%s (version %s)", settings.job_id, settings.bucket, settings.key,
             settings.version_id)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        summary = run_job(settings)
    except JobErased:
        return PERMANENT_EXIT  # nothing to retry: the job is gone
    except (Exception, Terminated) as error:
        transient = is_transient(error)
        LOG.exception("job %s failed (%s)", settings.job_id,
                      "a retry may succeed" if transient else "permanent")
        return 1 if transient else PERMANENT_EXIT
    LOG.info("job %s done: %s", settings.job_id,
             {k: summary[k] for k in ("rows_read", "outputs_written", "errors")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
