"""The job's checkpoint: how far the completed chunks reach, written after every chunk.

A retried job (spot reclaim, crash, kill -9) reads it and continues at the next chunk; a chunk
that was being written when the job died is not in it, so it is redone and its part file
overwritten. The chunk limits (rows and input bytes) are pinned in the checkpoint, so a retry
cuts the same chunks and names the same parts even if it was started with other settings. A
checkpoint written before byte limits existed has none (`chunk_bytes` 0): rows alone, as then.
The model version the job serves is pinned the same way: a retry answers with the version the
first attempt chose, even if the registry's `current` changed in between.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from botocore.exceptions import ClientError

from batch.keys import InputObject
from batch.writer import put_json


@dataclass
class Checkpoint:
    job_id: str
    input_version: str
    chunk_rows: int  # 0: no row limit
    chunk_bytes: int = 0  # of input; 0: no byte limit
    model_version: str = ""  # the version the first attempt served ("": not pinned yet)
    next_chunk: int = 0
    next_row: int = 0  # input lines (or .npy rows) done, counted from the input's first
    next_byte: int = 0  # JSON Lines: byte offset of the next line
    outputs_written: int = 0
    errors: int = 0
    parts: list[str] = field(default_factory=list)
    # .npy parts: part -> its header ({"descr", "shape"}), so that the final file is assembled
    # without reading each part's header back
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A child of an array job (batch.shards) works on part of the input: from `start` (JSON
    # Lines: the byte its first line begins at; .npy: its first row), whose line or row number
    # is `first_row`, to `stop` (JSON Lines: the lines that begin before that byte; .npy: the
    # row before it). All 0 for a job of one child: the whole input.
    start: int = 0
    first_row: int = 0
    stop: int = 0
    # .npy: each model output's multipart upload (batch.writer.NpyUpload.state): its upload id
    # and the parts uploaded, which hold the outputs of the rows before next_row
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)
    # JSON Lines: the first chunk's bytes of input, each next one twice as many up to
    # chunk_bytes (batch.jsonl.chunks_of_lines); 0 (a checkpoint from before): chunk_bytes each
    first_chunk_bytes: int = 0

    def advance(self, rows: int, next_byte: int, outputs: int, errors: int, parts: list[str],
                headers: dict[str, dict[str, Any]] | None = None) -> None:
        self.next_chunk += 1
        self.next_row += rows
        self.next_byte = next_byte
        self.outputs_written += outputs
        self.errors += errors
        self.parts.extend(parts)
        self.headers.update(headers or {})

    def restart(self) -> None:
        """Back to the first row (or line) of the input (of a child's share), as a fresh
        job: the work done is forgotten; the chunk limits, model version and range stay."""
        self.next_chunk, self.next_row, self.next_byte = 0, self.first_row, self.start
        self.outputs_written = self.errors = 0
        self.parts, self.headers, self.uploads = [], {}, {}

    @property
    def counts(self) -> dict[str, int]:
        return {"rows_read": self.next_row - self.first_row,
                "outputs_written": self.outputs_written,
                "errors": self.errors}


def fresh(obj: InputObject, chunk_rows: int, chunk_bytes: int = 0) -> Checkpoint:
    """The checkpoint of a job that has done nothing yet: at its first row, these chunk
    limits, no model version pinned."""
    return Checkpoint(obj.job_id, obj.version_id, chunk_rows, chunk_bytes)


def load(s3: Any, obj: InputObject, chunk_rows: int, chunk_bytes: int = 0,
         key: str | None = None) -> Checkpoint:
    """The job's checkpoint (at `key`: a child's of an array job; None: the job's), or a fresh
    one (with these chunk limits) when there is none for this job and input."""
    try:
        document: dict[str, Any] = json.loads(
            s3.get_object(Bucket=obj.bucket, Key=key or obj.checkpoint_key)["Body"].read())
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("NoSuchKey", "404"):
            raise
        return fresh(obj, chunk_rows, chunk_bytes)
    # Fields a later runner added are left out (a retry on an older image still resumes)
    known = {each.name for each in fields(Checkpoint)}
    checkpoint = Checkpoint(**{name: value for name, value in document.items() if name in known})
    if (checkpoint.job_id, checkpoint.input_version) != (obj.job_id, obj.version_id):
        return fresh(obj, chunk_rows, chunk_bytes)
    return checkpoint


def save(s3: Any, obj: InputObject, checkpoint: Checkpoint, key: str | None = None) -> None:
    put_json(s3, obj.bucket, key or obj.checkpoint_key, asdict(checkpoint))
