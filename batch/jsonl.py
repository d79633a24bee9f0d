"""The JSON Lines format of a batch job: chunks of whole lines in, one record per line out.

Each line is an infer request of the Open Inference Protocol (`"parameters": {"explain": true}`
asks for explanations) answered through the serving library's pipeline (model_api.pipeline)
under limits.BATCH_RECORD, so a record's answer is byte for byte what the API would answer.
Every line, whatever it holds (any bytes, nesting or size), gets exactly one record: its
answer, or `{"id", "line", "error"}`.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator, Sequence

from model_api.codec import compact_json, parse_json
from model_api.errors import ModelAPIError
from model_api.limits import BATCH_MAX_RECORD_BYTES
from model_api.model import LoadedModel
from model_api.pipeline import Exchange, Pipeline, RunMany

from batch.reader import LongLine, S3Object, iter_lines, ramped

LOG = logging.getLogger("batch.runner")
# Ignored before the file's first line (Windows tools write one): RFC 8259 8.1 lets a JSON
# parser ignore it; anywhere else it is part of its line (that line's error record says so).
UTF8_BOM = b"\xef\xbb\xbf"


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


def error_record(line: bytes | LongLine, number: int, message: str) -> bytes:
    """The record of a line that gets no answer: its `id` (when it has one), number, why."""
    request_id = line_id(line) if isinstance(line, bytes) else None
    return compact_json({"id": request_id, "line": number, "error": message})


def line_records(pipeline: Pipeline, lines: Sequence[bytes | LongLine], first_number: int,
                 model: LoadedModel | None, model_error: str | None,
                 run_many: RunMany | None) -> tuple[list[bytes], int]:
    """One output record per line, in input order; and how many of them are errors.

    Plain requests are predicted together through `run_many` (batch.microbatch.MicroBatcher:
    several lines per model run); a record asking for explanations is explained alone (every
    row is already many model rows). With no `model`, every line gets `model_error`. Each
    record is encoded as it is made: a chunk's documents never all live at the same time.
    Whatever a line holds, it costs only its own record: an unforeseen error while decoding or
    answering it (a defect, logged without the line) becomes that line's error record.
    """
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

    plain: list[tuple[int, Exchange]] = []
    for index, line in enumerate(lines):
        if model is None:
            fail(index, model_error or "no model")
        elif isinstance(line, LongLine):
            fail(index, f"the line is {line.length} bytes; the limit is "
                        f"{BATCH_MAX_RECORD_BYTES} bytes per JSON Lines record")
        elif not line or line.isspace():
            fail(index, "empty line")  # its id is None: no JSON to take one from
        else:
            try:
                # A record without an `id` is answered with its line's: "line-<number>".
                exchange = pipeline.decode(model, line, {}, explain=None,
                                           request_id=f"line-{first_number + index}")
                if not exchange.explain:
                    plain.append((index, exchange))
                    continue
                records[index] = pipeline.encode(pipeline.predict(exchange)).body
                pipeline.answered([exchange])
            except ModelAPIError as error:
                fail(index, error.message)
            except Exception as error:
                unforeseen(index, "decoded", error)
    if run_many is not None:
        answered: list[Exchange] = []  # in the order they ran
        for index, outcome in pipeline.predict_batched(plain, run_many):
            if isinstance(outcome, str):
                fail(index, outcome)
                continue
            try:
                records[index] = pipeline.encode(outcome).body
            except ModelAPIError as error:
                fail(index, error.message)
                continue
            except Exception as error:
                unforeseen(index, "answered", error)
                continue
            answered.append(outcome)
        pipeline.answered(answered)  # (an error record's exchange is not: data capture)
    return records, errors


def chunk_part(pipeline: Pipeline, lines: Sequence[bytes | LongLine], first_number: int,
               model: LoadedModel | None, model_error: str | None,
               run_many: RunMany | None) -> tuple[bytes, int]:
    """A chunk's part: its lines' records (line_records), one a line, each ending in a line
    break; and how many of them are errors. The hooks are flushed after it (their unit of
    work is the chunk). What the runner does with a chunk in-process, and what each of its
    worker processes does with the chunks it is given (batch.workers)."""
    records, errors = line_records(pipeline, lines, first_number, model, model_error, run_many)
    pipeline.flush()
    return b"\n".join(records) + b"\n", errors


def chunks_of_lines(source: S3Object, start: int, size: int, rows: int, max_bytes: int,
                    stop: int | None = None, first_bytes: int = 0, index: int = 0
                    ) -> Iterator[tuple[list[bytes | LongLine], int]]:
    """Lists of whole lines (those that begin before `stop`; None: all), each with the byte
    offset just past its last line: a list ends at `rows` lines or once its lines reach its
    byte limit (0: no such limit): `max_bytes`, or with `first_bytes` a ramp up to it, the
    job's chunk number i (`index` is the first one's) ending at `first_bytes` x 2^i, so that
    the model (and each of the job's worker processes, batch.workers) starts after a small
    read. The cut depends only on the input from `start` and the chunk's number, so a resumed
    job cuts the same chunks. A UTF-8 byte order mark before the file's first line is not
    part of that line (UTF8_BOM)."""
    lines: list[bytes | LongLine] = []
    end = chunk_start = start
    chunk_bytes = ramped(first_bytes, max_bytes, index)
    first_of_file = start == 0
    for line, end in iter_lines(source, start, size, BATCH_MAX_RECORD_BYTES, stop):
        if first_of_file:
            first_of_file = False
            if isinstance(line, bytes) and line.startswith(UTF8_BOM):
                line = line[len(UTF8_BOM):]  # its byte order mark ignored
        lines.append(line)
        if len(lines) == rows or (chunk_bytes and end - chunk_start >= chunk_bytes):
            yield lines, end
            lines, chunk_start, index = [], end, index + 1
            chunk_bytes = ramped(first_bytes, max_bytes, index)
    if lines:
        yield lines, end
