"""The batch job: run one model over one uploaded input object, in resumable chunks.

`python -m batch.runner` takes its job from arguments or from the environment AWS Batch gives
the container (BATCH_INPUT_BUCKET, BATCH_INPUT_KEY, BATCH_INPUT_VERSION, BATCH_JOB_ID,
JOBS_TABLE, MODELS_DIR, REQUIRE_GPU, ...). Every input line (or .npy row) yields exactly one
output record, checkpointed per chunk; the job's state and counts go to the jobs table.
A chunk is BATCH_CHUNK_BYTES of input (8 MiB; whole lines) or BATCH_CHUNK_ROWS rows, whichever
ends first: each chunk costs a few S3 and DynamoDB requests (read, part, checkpoint, job
record), so chunks are sized by bytes to amortise them whatever a row weighs.
Exit codes: 0 done, 2 an input no retry can fix, anything else worth a retry.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from botocore.exceptions import ClientError
from model_api.codec import InferRequest, decode_request, response_document
from model_api.datatypes import numpy_dtype
from model_api.errors import BadRequest, ModelAPIError, NotFound
from model_api.explain import with_outputs
from model_api.manifest import Manifest
from model_api.model import LoadedModel, ModelLoadError

from batch import checkpoint
from batch.aws import client
from batch.jobs import FAILED, RUNNING, SUCCEEDED, JobStore
from batch.keys import InputObject, InvalidKey, parse_key
from batch.microbatch import CPU_SIZES, GPU_SIZES, BatchSizeTuner, MicroBatcher, is_memory_error
from batch.models import versions
from batch.progress import Progress
from batch.reader import InputError, NpyLayout, S3Object, iter_lines, npy_layout, read_rows
from batch.submit import PERMANENT_EXIT
from batch.writer import concatenate_npy, npy_bytes, npy_header, put_bytes, put_json

LOG = logging.getLogger("batch.runner")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
SUCCESS = "_SUCCESS.json"
PERMANENT_S3_ERRORS = ("NoSuchKey", "NoSuchVersion", "NoSuchBucket", "AccessDenied", "404", "403")
CHUNK_BYTES = 8 << 20  # of input per chunk, by default


class PermanentError(RuntimeError):
    """A failure that a retry of the job cannot fix (bad input, model not in the image)."""


@dataclass(frozen=True)
class Settings:
    bucket: str
    key: str
    version_id: str
    job_id: str
    models_dir: Path
    model_version: str | None = None
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


def version_dir(models_dir: Path, model: str, version: str | None) -> Path:
    """The model's version folder: the one asked for, else the highest version exported."""
    folder = models_dir / model
    exported = versions(folder)
    if version is None and exported:
        version = exported[-1]
    if version is None or version not in exported:
        raise PermanentError(f"unknown model {model!r} (version {version}) under {models_dir}")
    return folder / version


def load_model(settings: Settings, model: str) -> LoadedModel:
    """Load with the best provider and check what is ACTIVE: onnxruntime-gpu falls back to the
    CPU silently when its CUDA libraries do not match, and that must never go unnoticed."""
    providers = choose_providers(settings.use_gpu)
    loaded = LoadedModel.load(version_dir(settings.models_dir, model, settings.model_version),
                              providers=providers)
    active = list(loaded.providers)
    if CUDA in active:
        LOG.info("model %s runs on the GPU (active providers %s)", model, active)
    elif settings.require_gpu:
        raise RuntimeError(f"a GPU was required but CUDA is not active (active {active}, "
                           f"available {ort.get_available_providers()})")
    else:
        LOG.warning("!!! model %s runs on the CPU: CUDA is not active (active %s, available "
                    "%s) !!!", model, active, ort.get_available_providers())
    return loaded


# ---------------------------------------------------------------------------- JSON Lines

def line_id(line: bytes) -> Any:
    """The request's `id` for an error record, if the line is JSON enough to have one."""
    try:
        document = json.loads(line)
    except ValueError:
        return None
    return document.get("id") if isinstance(document, dict) else None


def compact(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def error_record(line: bytes, number: int, message: str) -> bytes:
    return compact({"id": line_id(line), "line": number, "error": message})


def process_lines(lines: Sequence[bytes], first_number: int, model: LoadedModel | None,
                  model_error: str | None, batcher: MicroBatcher | None
                  ) -> tuple[list[bytes], int]:
    """One output record per line, in input order; and how many of them are errors. Each
    record is serialised as it is made: a chunk's documents never all live at the same time."""
    records: list[bytes] = [b""] * len(lines)
    errors = 0

    def fail(index: int, message: str) -> None:
        nonlocal errors
        records[index] = error_record(lines[index], first_number + index, message)
        errors += 1

    decoded: list[tuple[int, InferRequest]] = []
    for index, line in enumerate(lines):
        if model is None:
            fail(index, model_error or "no model")
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
    return records, errors


def decode_record(line: bytes, manifest: Manifest) -> tuple[InferRequest, Manifest]:
    """A record's request and the manifest it is answered against: the model's own, or, for a
    record asking for explanations (`"parameters": {"explain": true}`), the model's with the
    explanation's outputs (explain.with_outputs), which such a record may name in `outputs`."""
    try:
        request = decode_request(line, {}, manifest)
    except NotFound as error:  # perhaps an explanation output, named by an explain record
        explained = with_outputs(manifest)
        try:
            request = decode_request(line, {}, explained)
        except ModelAPIError:
            raise error from None
        if not _explain_flag(request):
            raise error from None
        return request, explained
    if _explain_flag(request):
        explained = with_outputs(manifest)
        return decode_request(line, {}, explained), explained
    return request, manifest


def _explain_flag(request: InferRequest) -> bool:
    explain = request.parameters.get("explain", False)
    if not isinstance(explain, bool):
        raise BadRequest(f"parameter 'explain' must be true or false, got {explain!r:.40}")
    return explain


def chunks_of_lines(source: S3Object, start: int, size: int, rows: int, max_bytes: int
                    ) -> Iterator[tuple[list[bytes], int]]:
    """Lists of whole lines, each with the byte offset just past its last line: a list ends
    at `rows` lines or once its lines reach `max_bytes` bytes (0: no such limit). The cut
    depends only on the input from `start`, so a resumed job cuts the same chunks."""
    lines: list[bytes] = []
    end = chunk_start = start
    for line, end in iter_lines(source, start, size):
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
        self.prefix = self.obj.output_prefix

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        head = self.source.head()
        size = int(head["ContentLength"])
        state = checkpoint.load(self.s3, self.settings.bucket, self.prefix, self.obj.job_id,
                                self.settings.version_id, self.settings.chunk_rows,
                                self.settings.byte_limit)
        if state.next_chunk:
            LOG.info("resuming job %s at chunk %d (line/row %d)", self.obj.job_id,
                     state.next_chunk, state.next_row)
        LOG.info("chunks of at most %s rows, %s bytes of input (pinned in the checkpoint)",
                 state.chunk_rows or "any", state.chunk_bytes or "any")
        model, model_error = self._model()
        sizes = GPU_SIZES if model is not None and CUDA in model.providers else CPU_SIZES
        tuner = BatchSizeTuner(sizes, self.settings.batch_rows)
        batcher = MicroBatcher(model, tuner) if model is not None else None
        if self.obj.format == "jsonl":
            self._jsonl(state, size, model, model_error, batcher)
        else:
            if batcher is None:
                raise PermanentError(model_error or "no model")
            self._npy(state, size, batcher)
        summary = {"job_id": self.obj.job_id, "model": self.obj.model,
                   "input": f"s3://{self.settings.bucket}/{self.settings.key}",
                   "input_version": self.settings.version_id, "format": self.obj.format,
                   **state.counts, "parts": state.parts,
                   "providers": list(model.providers) if model is not None else [],
                   "seconds_this_attempt": round(time.monotonic() - started, 3)}
        if self.obj.format == "npy" and model is not None:
            summary["outputs"] = self._assemble_npy(state, model)
        put_json(self.s3, self.settings.bucket, self.prefix + SUCCESS, summary)
        if model_error:
            raise PermanentError(model_error)
        return summary

    def _model(self) -> tuple[LoadedModel | None, str | None]:
        """The model, or (JSON Lines only) the reason every line gets an error record."""
        try:
            return load_model(self.settings, self.obj.model), None
        except (PermanentError, ModelLoadError) as error:
            if self.obj.format != "jsonl":
                raise
            LOG.error("%s: every line gets an error record", error)
            return None, str(error)

    def _checkpoint(self, state: checkpoint.Checkpoint, rows: int, end: int, outputs: int,
                    errors: int, parts: list[str], progress: Progress, position: int,
                    headers: dict[str, dict[str, Any]] | None = None) -> None:
        state.advance(rows, end, outputs, errors, parts, headers)
        checkpoint.save(self.s3, self.settings.bucket, self.prefix, state)
        if self.store is not None:
            self.store.update(self.obj.job_id, fields=state.counts)
        progress.update(position, state.next_row)

    def _jsonl(self, state: checkpoint.Checkpoint, size: int, model: LoadedModel | None,
               model_error: str | None, batcher: MicroBatcher | None) -> None:
        progress = Progress(size, state.next_byte, state.next_row, self.settings.progress_seconds)
        for lines, end in chunks_of_lines(self.source, state.next_byte, size, state.chunk_rows,
                                          state.chunk_bytes):
            records, errors = process_lines(lines, state.next_row + 1, model, model_error,
                                            batcher)
            part = f"{self.prefix}part-{state.next_chunk:05d}.jsonl"
            put_bytes(self.s3, self.settings.bucket, part, b"\n".join(records) + b"\n",
                      "application/x-ndjson")
            self._checkpoint(state, len(lines), end, len(records) - errors, errors,
                             [part.removeprefix(self.prefix)], progress, end)
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
            for name in outputs:
                part = f"{name}/part-{state.next_chunk:05d}.npy"
                array = np.concatenate(results[name])
                put_bytes(self.s3, self.settings.bucket, self.prefix + part, npy_bytes(array),
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
            parts = [self.prefix + p for p in state.parts if p.startswith(output.name + "/")]
            key = f"{self.prefix}{output.name}.npy"
            shapes[output.name] = list(concatenate_npy(
                self.s3, self.settings.bucket, parts, key,
                [state.headers.get(p.removeprefix(self.prefix)) for p in parts]))
        return shapes


# ---------------------------------------------------------------------------- entry point

def run_job(settings: Settings, s3: Any = None, store: JobStore | None = None) -> dict[str, Any]:
    """Run the job, recording its state in the jobs table (when there is one)."""
    s3 = s3 if s3 is not None else client("s3")
    if store is None and settings.table:
        store = JobStore(settings.table)
    if store is not None:
        store.update(settings.job_id, RUNNING, increment_attempts=True, fields={
            "batch_job_id": os.environ.get("AWS_BATCH_JOB_ID", f"local-{os.getpid()}"),
            "started_at": time.time()})
    try:
        summary = Job(settings, s3, store).run()
    except Exception as error:
        if store is not None:
            store.update(settings.job_id, FAILED, fields={
                "reason": f"{type(error).__name__}: {error}", "finished_at": time.time()})
        raise
    if store is not None:
        store.update(settings.job_id, SUCCEEDED, remove=("reason",), fields={
            "finished_at": time.time(),
            **{count: summary[count] for count in ("rows_read", "outputs_written", "errors")}})
    return summary


def is_permanent(error: BaseException) -> bool:
    if isinstance(error, PermanentError | InputError | InvalidKey | ModelLoadError):
        return True
    return isinstance(error, ClientError) and (
        error.response["Error"]["Code"] in PERMANENT_S3_ERRORS)


def parse_args(argv: Sequence[str] | None) -> Settings:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m batch.runner", description=__doc__)
    parser.add_argument("--bucket", default=env("BATCH_INPUT_BUCKET"))
    parser.add_argument("--key", default=env("BATCH_INPUT_KEY"))
    parser.add_argument("--version-id", default=env("BATCH_INPUT_VERSION", "null"))
    parser.add_argument("--job-id", default=env("BATCH_JOB_ID"))
    parser.add_argument("--models-dir", type=Path, default=Path(env("MODELS_DIR", "/opt/models")))
    parser.add_argument("--model-version", default=env("MODEL_VERSION"))
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
                    model_version=args.model_version, table=args.table,
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
    try:
        summary = run_job(settings)
    except Exception as error:
        permanent = is_permanent(error)
        LOG.exception("job %s failed (%s)", settings.job_id,
                      "permanent" if permanent else "a retry may succeed")
        return PERMANENT_EXIT if permanent else 1
    LOG.info("job %s done: %s", settings.job_id,
             {k: summary[k] for k in ("rows_read", "outputs_written", "errors")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
