"""Reading an input object from S3 a piece at a time, so memory stays bounded by the chunk.

JSON Lines are streamed from a byte offset (a ranged GET) and split on b"\\n" with the offset
after every line, which is what a checkpoint records; a dropped connection mid-stream reopens
the range where it stopped. A .npy file's rows are streamed the same way, a chunk of rows at
a time after its header.
"""

from __future__ import annotations

import http.client
import io
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from botocore.exceptions import BotoCoreError, ResponseStreamingError

LOG = logging.getLogger(__name__)
BLOCK = 1 << 20
STREAM_ATTEMPTS = 5
NPY_HEADER_PREFETCH = 1 << 16


class InputError(ValueError):
    """The input object cannot be read as the format its key names."""


@dataclass(frozen=True)
class S3Object:
    s3: Any
    bucket: str
    key: str
    version_id: str

    def _named(self) -> dict[str, Any]:
        """The request parameters that name this object version ("null": the unversioned)."""
        named: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key}
        if self.version_id != "null":
            named["VersionId"] = self.version_id
        return named

    def get(self, byte_range: str | None = None) -> Any:
        """The streaming body of this object version (optionally a `bytes=a-b` range)."""
        ranged = {"Range": byte_range} if byte_range else {}
        return self.s3.get_object(**self._named(), **ranged)["Body"]

    def open(self) -> tuple[Any, int]:
        """The streaming body of the whole object version and its size in bytes (one GET:
        no HEAD needed to learn the size)."""
        answer = self.s3.get_object(**self._named())
        return answer["Body"], int(answer["ContentLength"])

    def head(self) -> dict[str, Any]:
        return dict(self.s3.head_object(**self._named()))


@dataclass(frozen=True)
class LongLine:
    """A line longer than the reader's limit, in place of its bytes (never held in memory)."""

    length: int  # bytes, without the newline


class StreamBreaks:
    """When a streamed ranged GET of `source` breaks, whether to reopen it: only breaks without
    progress in between count towards giving up (STREAM_ATTEMPTS at the same byte); each
    reopen is logged and waits 2, 4, ... up to 30 s first."""

    def __init__(self, source: S3Object) -> None:
        self.source = source
        self.failures, self.last_break = 0, -1

    def broke(self, position: int, error: Exception) -> None:
        """The stream broke at byte `position`: re-raises `error` when it is time to give
        up, else logs it and waits before the caller reopens the stream at `position`."""
        self.failures = self.failures + 1 if position == self.last_break else 1
        self.last_break = position
        if self.failures >= STREAM_ATTEMPTS:
            raise error
        LOG.warning("reading s3://%s/%s broke at byte %d (%s); reopening", self.source.bucket,
                    self.source.key, position, error)
        time.sleep(min(2.0**self.failures, 30.0))


def iter_lines(source: S3Object, start: int, size: int, max_line: int = 0,
               stop: int | None = None) -> Iterator[tuple[bytes | LongLine, int]]:
    """(line without its newline, byte offset just past it) for every line from `start` that
    begins before `stop` (None: the end; a shard's lines are those that begin in its byte
    range, the last one read to its end); a line over `max_line` bytes (0: no limit) comes as
    a LongLine, its bytes skipped as they arrive, so that no line, however long, holds more
    than `max_line` + BLOCK bytes."""
    stop = size if stop is None else stop
    position = start  # bytes of the object consumed from the stream so far
    pending = b""
    skipped = 0  # leading bytes of the current line dropped because it is too long
    breaks = StreamBreaks(source)

    def finished(line: bytes) -> bytes | LongLine:
        length = skipped + len(line)
        return LongLine(length) if skipped or (max_line and length > max_line) \
            else line.rstrip(b"\r")

    if start >= stop:
        return
    while position < size:
        try:
            body = source.get(f"bytes={position}-")
            while block := body.read(BLOCK):
                position += len(block)
                pending += block
                end_of_last = pending.rfind(b"\n")
                if end_of_last >= 0:
                    offset = position - len(pending)
                    complete, pending = pending[:end_of_last + 1], pending[end_of_last + 1:]
                    for line in complete.split(b"\n")[:-1]:
                        if offset - skipped >= stop:
                            body.close()
                            return
                        offset += len(line) + 1
                        yield finished(line), offset
                        skipped = 0
                if max_line and skipped + len(pending) > max_line:
                    skipped += len(pending)
                    pending = b""
        except BotoCoreError as error:  # the stream broke; botocore retried the GET itself
            breaks.broke(position, error)
    if (pending or skipped) and position - len(pending) - skipped < stop:
        yield finished(pending), position


@dataclass(frozen=True)
class NpyLayout:
    """Where the rows of a C-ordered .npy file lie."""

    shape: tuple[int, ...]
    dtype: np.dtype
    data_offset: int

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.dtype.itemsize


def npy_layout(source: S3Object, size: int) -> NpyLayout:
    """Parse the header of a .npy object (one small ranged GET)."""
    head = source.get(f"bytes=0-{min(size, NPY_HEADER_PREFETCH) - 1}").read()
    return _npy_header(io.BytesIO(head), size)


def open_npy(source: S3Object, size: int, body: Any = None) -> tuple[NpyLayout, Any]:
    """The layout of a .npy object and a stream of its rows: ONE GET of the whole object
    (`body`: the stream of one made already, S3Object.open), its header read from the stream,
    which is left at the first row (for iter_rows). A job that starts at its first row needs
    no other request to read its input."""
    body = body if body is not None else source.get()
    try:
        return _npy_header(body, size), body
    except BaseException:
        body.close()
        raise


class _Counted:
    """A file-like reader (np.lib.format reads the header through `read`) that counts the
    bytes read through it."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.offset = stream, 0

    def read(self, count: int = -1, /) -> bytes:
        data: bytes = self.stream.read(count)
        self.offset += len(data)
        return data


def _npy_header(stream: Any, size: int) -> NpyLayout:
    """The layout from the header at the start of `stream` (file-like), left just after it.
    InputError when it is no .npy of rows or does not fit `size` bytes."""
    counted = _Counted(stream)
    try:
        version = np.lib.format.read_magic(counted)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(counted)
        else:
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(counted)
    except ValueError as error:
        raise InputError(f"not a .npy file: {error}") from None
    if fortran_order or dtype.hasobject or not shape:
        raise InputError(".npy input must be a C-ordered numeric array with a batch dimension, "
                         f"got shape {shape}, dtype {dtype}, fortran_order {fortran_order}")
    layout = NpyLayout(tuple(shape), dtype, counted.offset)
    if layout.data_offset + shape[0] * layout.row_bytes != size:
        raise InputError(f".npy header says {shape} of {dtype} but the object is {size} bytes")
    return layout


def ramped(first: int, limit: int, number: int) -> int:
    """The size of chunk `number` (0 is the first) of a ramp: `first`, twice as much each next
    chunk, at most `limit`; `limit` for every chunk when either is 0 (no ramp, or no limit).
    The .npy rows (iter_rows) and JSON Lines bytes (batch.jsonl.chunks_of_lines) of a job's
    chunks, so that the model starts after a small read."""
    if not (first and limit) or number >= limit.bit_length():
        return limit
    return min(limit, first << number)


# A stream that breaks: botocore's errors, and what the standard library's response raises
# when it is read directly (`received_into`)
BREAKS = (BotoCoreError, OSError, http.client.HTTPException)


def received_into(body: Any) -> Any:
    """What to receive `body`'s bytes from with `readinto`, straight into the caller's buffer:
    the standard library's http.client response under botocore's StreamingBody and urllib3's
    HTTPResponse, when nothing sits between them (no content decoding, nothing buffered),
    else `body` itself. Why: urllib3's `readinto` reads into a new bytes object and copies it,
    after http.client's own copy (measured on a 96 MB .npy from the local fake S3: 28-53 ms
    of CPU, against 18-23 ms straight from http.client; CPU a model on the same cores would
    otherwise have), and neither library offers a public way around it. Read that way, a
    dropped connection surfaces as OSError or http.client.HTTPException, or as the stream
    ending early (http.client returns 0): iter_rows reopens the range in every case, and
    raises botocore's ResponseStreamingError when it gives up, as on botocore's own stream."""
    raw = getattr(body, "_raw_stream", None)  # botocore's StreamingBody: urllib3's response
    stream = getattr(raw, "_fp", None)
    if (isinstance(stream, http.client.HTTPResponse) and getattr(raw, "decode_content", True)
            is False and len(getattr(raw, "_decoded_buffer", b"?")) == 0):
        return stream
    return body


def iter_rows(source: S3Object, layout: NpyLayout, first: int, stop: int, per_chunk: int,
              first_chunk: int = 0, body: Any = None) -> Iterator[tuple[int, int, np.ndarray]]:
    """Rows [first, stop) of a .npy object in chunks of `per_chunk` rows, each as (its first
    row, the row after its last, its rows): read as ONE streamed ranged GET of the whole range,
    not a GET per chunk (a request's latency each, and, on the local fake S3, a copy of the
    whole object each: moto slices a range out of the full value). `first_chunk` (0: as the
    others): rows of the first chunk, the next ones twice as many each up to `per_chunk`, so
    that the model starts on a small read. `body`: a stream of the object already at row
    `first` (open_npy's; closed here), else one is opened. A stream that breaks is reopened at
    the byte it stopped, as iter_lines does."""
    row_bytes = layout.row_bytes
    position = layout.data_offset + first * row_bytes  # the next byte to receive
    end = layout.data_offset + stop * row_bytes
    breaks = StreamBreaks(source)
    stream: Any = received_into(body) if body is not None else None
    try:
        row, number = first, 0
        while row < stop:
            chunk_stop = min(row + max(1, ramped(first_chunk, per_chunk, number)), stop)
            number += 1
            want = (chunk_stop - row) * row_bytes
            # the rows are received straight into their array (no bytes objects to join)
            rows = np.empty((chunk_stop - row, *layout.shape[1:]), dtype=layout.dtype)
            into = memoryview(rows.reshape(-1).view(np.uint8)) if want else memoryview(b"")
            got = 0
            while got < want:
                try:
                    if body is None:
                        body = source.get(f"bytes={position}-{end - 1}")
                        stream = received_into(body)
                    received = stream.readinto(into[got:])
                    if not received:  # the object's size holds its rows: the stream ended
                        raise InputError(f".npy object ended at byte {position}; its rows "
                                         f"end at byte {end}")
                except (*BREAKS, InputError) as error:  # botocore retried the GET itself
                    body = None
                    # as botocore's own stream says it (a break another attempt may get past:
                    # batch.failures.is_transient), however it surfaced here
                    breaks.broke(position, error if isinstance(error, BotoCoreError)
                                 else ResponseStreamingError(error=error))
                    continue
                got += received
                position += received
            yield row, chunk_stop, rows
            row = chunk_stop
    finally:
        if body is not None:
            body.close()
