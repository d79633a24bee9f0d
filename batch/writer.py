"""Writing outputs to S3: whole part files per chunk, and large files by multipart upload.

A JSON Lines part is written with one PUT, so a retried chunk overwrites its part instead of
appending to it. A `.npy` output is written once, as the job goes (NpyUpload): one S3
multipart upload per model output, its header first (the row count is the input's), then the
rows' outputs in parts of at least PART_BYTES; the checkpoint keeps the upload id and the parts
uploaded, so a retry continues the same upload. The outputs of an array job's children are
concatenated into the job's by concatenate_npy (each child's file read back once).
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from botocore.exceptions import ClientError

MULTIPART_BYTES = 16 * 1024 * 1024  # S3 wants parts of at least 5 MiB, except the last
# Bytes of a streamed .npy output per uploaded part (NpyUpload): S3's least (but for the last
# part). Each part is a request and a checkpoint of the job; what is left after the last rows
# (the drain) is at most a part and the last chunk's outputs, so the least is the best
PART_BYTES = 5 << 20
MAX_PARTS = 9_000  # S3 takes 10,000 parts an upload: a file over 9,000 x PART_BYTES has larger
NO_SUCH_UPLOAD = ("NoSuchUpload", "404")
CONFLICT_RETRIES = 5  # of a conditional write that met a concurrent one (409)


def put_bytes(s3: Any, bucket: str, key: str, data: bytes, content_type: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)


def put_json(s3: Any, bucket: str, key: str, document: dict[str, Any]) -> None:
    put_bytes(s3, bucket, key, json.dumps(document, indent=1).encode(), "application/json")


def put_json_once(s3: Any, bucket: str, key: str, document: dict[str, Any]) -> bool:
    """Write `document` at `key` unless an object is there already (S3's conditional write,
    `If-None-Match: *`: 412 when there is one; 409 when a concurrent write to the key was in
    flight, which is retried): True when this call wrote it, False when another had."""
    body = json.dumps(document, indent=1).encode()
    for attempt in range(CONFLICT_RETRIES):
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json",
                          IfNoneMatch="*")
            return True
        except ClientError as error:
            code = error.response["Error"]["Code"]
            if code in ("PreconditionFailed", "412"):
                return False
            if code not in ("ConditionalRequestConflict", "409") \
                    or attempt + 1 == CONFLICT_RETRIES:
                raise
            time.sleep(0.2 * (attempt + 1))
    return False


def get_json(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """The JSON document at `key`, or None when there is none."""
    try:
        document: dict[str, Any] = json.loads(
            s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as error:
        if error.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise
    return document


def npy_header(array: np.ndarray) -> dict[str, Any]:
    """What concatenate_npy needs of a part, kept in the checkpoint (JSON)."""
    return {"descr": np.lib.format.dtype_to_descr(array.dtype), "shape": list(array.shape)}


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


class MultipartWriter:
    """A file-like sink that becomes one S3 object; a single PUT when it stays small."""

    def __init__(self, s3: Any, bucket: str, key: str, content_type: str) -> None:
        self.s3, self.bucket, self.key, self.content_type = s3, bucket, key, content_type
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= MULTIPART_BYTES:
            self._flush()

    def close(self) -> None:
        if self.upload_id is None:
            put_bytes(self.s3, self.bucket, self.key, bytes(self.buffer), self.content_type)
            return
        if self.buffer:
            self._flush()
        self.s3.complete_multipart_upload(Bucket=self.bucket, Key=self.key,
                                          UploadId=self.upload_id,
                                          MultipartUpload={"Parts": self.parts})

    def abort(self) -> None:
        if self.upload_id is not None:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key,
                                           UploadId=self.upload_id)

    def _flush(self) -> None:
        if self.upload_id is None:
            self.upload_id = self.s3.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType=self.content_type)["UploadId"]
        number = len(self.parts) + 1
        etag = self.s3.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                   PartNumber=number, Body=bytes(self.buffer))["ETag"]
        self.parts.append({"PartNumber": number, "ETag": etag})
        self.buffer.clear()


def concatenate_npy(s3: Any, bucket: str, part_keys: list[str], key: str,
                    known: Sequence[dict[str, Any] | None]) -> tuple[int, ...]:
    """Write the row-wise concatenation of .npy parts (an array job's children's outputs) to
    `key`; returns its shape. `known`: one per part, its header (npy_header) where the caller
    has it, else None: read from the part."""
    shapes, dtype = [], None
    for part, known_header in zip(part_keys, known, strict=True):  # the row count first
        if known_header is not None:
            shape = tuple(known_header["shape"])
            dtype = np.lib.format.descr_to_dtype(known_header["descr"])
        else:
            head = s3.get_object(Bucket=bucket, Key=part, Range="bytes=0-4095")["Body"].read()
            stream = io.BytesIO(head)
            np.lib.format.read_magic(stream)
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        shapes.append(shape)
    if dtype is None:
        raise ValueError("no parts to concatenate")
    total = (sum(shape[0] for shape in shapes), *shapes[0][1:])
    writer = MultipartWriter(s3, bucket, key, "application/octet-stream")
    try:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                     "shape": total})
        writer.write(header.getvalue())
        for part in part_keys:
            data = s3.get_object(Bucket=bucket, Key=part)["Body"].read()
            array = np.load(io.BytesIO(data))
            writer.write(np.ascontiguousarray(array).tobytes())
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return total


def npy_header_bytes(descr: Any, shape: Sequence[int]) -> bytes:
    """The header of a C-ordered .npy file of `shape` and dtype `descr` (format 1.0)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return header.getvalue()


class NpyUpload:
    """One model output's `.npy` at `key`, written while the job runs as ONE S3 multipart
    upload: the header (a `rows`-row file, the dtype and trailing shape of the first outputs
    added) and then the outputs' bytes, uploaded as parts of at least PART_BYTES (`flush`, the
    last part smaller) and made the object by `complete`. Nothing is written twice and nothing
    big is left to write after the last rows. `state()` is what a checkpoint keeps (upload id,
    parts and their ETags, dtype, trailing shape): an upload built from it continues where the
    checkpoint was taken; a part that a killed attempt uploaded after it is overwritten (S3
    keeps the last upload of a part number) or left out of `complete` (S3 drops unlisted parts).
    ValueError when an added array's dtype or trailing shape differs from the first's, or is an
    object dtype (a BYTES output, which a .npy cannot hold without pickling)."""

    def __init__(self, s3: Any, bucket: str, key: str, rows: int,
                 saved: dict[str, Any] | None = None) -> None:
        self.s3, self.bucket, self.key, self.rows = s3, bucket, key, rows
        saved = saved or {}
        self.upload_id: str | None = saved.get("upload_id")
        self.parts: list[dict[str, Any]] = list(saved.get("parts", ()))
        self.descr: Any = saved.get("descr")  # numpy's dtype descr (JSON), None until known
        self.trailing: list[int] | None = saved.get("trailing")
        self.completed: bool = bool(saved.get("completed"))
        self.pending: list[np.ndarray] = []
        self.pending_bytes = 0

    def state(self) -> dict[str, Any]:
        """The upload as the checkpoint keeps it (JSON): the parts uploaded so far."""
        return {"key": self.key, "upload_id": self.upload_id, "parts": list(self.parts),
                "descr": self.descr, "trailing": self.trailing, "completed": self.completed}

    @property
    def shape(self) -> list[int]:
        return [self.rows, *(self.trailing or [])]

    @property
    def size(self) -> int:
        """Bytes of the whole file (known once the dtype and trailing shape are)."""
        if self.descr is None:
            raise ValueError(f"{self.key}: no outputs added yet")
        itemsize = np.lib.format.descr_to_dtype(self.descr).itemsize
        return len(npy_header_bytes(self.descr, self.shape)) + itemsize * math.prod(self.shape)

    def add(self, array: np.ndarray) -> None:
        """Append the outputs of the next rows (held until `flush`)."""
        if array.dtype.hasobject:  # a BYTES output: its bytes would be pointers, not strings
            raise ValueError(f"{self.key}: a .npy output holds numbers, not {array.dtype} "
                             "(a BYTES output such as a label): send the input as JSON Lines, "
                             "whose records carry every output")
        descr, trailing = np.lib.format.dtype_to_descr(array.dtype), list(array.shape[1:])
        if self.descr is None:
            self.descr, self.trailing = descr, trailing
        elif (descr, trailing) != (self.descr, self.trailing):
            raise ValueError(f"{self.key}: rows of {descr} {trailing} cannot follow rows of "
                             f"{self.descr} {self.trailing} in one .npy")
        self.pending.append(np.ascontiguousarray(array))
        self.pending_bytes += array.nbytes

    @property
    def ready(self) -> bool:
        """Whether the outputs held make a part: PART_BYTES (S3 takes no part under 5 MiB but
        the last), or a MAX_PARTS'th of the file when that is more."""
        return self.pending_bytes >= max(PART_BYTES, -(-self.size // MAX_PARTS))

    def flush(self, last: bool = False) -> None:
        """Upload the outputs held as the next part (the header before the first part).
        `last`: they are the file's last rows; a file that is all in them (no part uploaded
        yet) is then written with one PUT instead of a multipart upload of one part, and
        marked completed (one request instead of three)."""
        if self.descr is None:
            raise ValueError(f"{self.key}: no outputs added yet")
        header = [] if self.parts else [npy_header_bytes(self.descr, self.shape)]
        body = b"".join([*header, *(array.data.cast("B") for array in self.pending
                                    if array.nbytes)])
        if last and self.upload_id is None:
            put_bytes(self.s3, self.bucket, self.key, body, "application/octet-stream")
            self.pending, self.pending_bytes, self.completed = [], 0, True
            return
        if self.upload_id is None:
            self.upload_id = self.s3.create_multipart_upload(
                Bucket=self.bucket, Key=self.key,
                ContentType="application/octet-stream")["UploadId"]
        number = len(self.parts) + 1
        etag = self.s3.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                   PartNumber=number, Body=body)["ETag"]
        self.parts.append({"PartNumber": number, "ETag": etag})
        self.pending, self.pending_bytes = [], 0

    def complete(self) -> None:
        """Make the parts uploaded the object (flush what is held first)."""
        if self.completed:
            return
        if self.pending or not self.parts:
            self.flush(last=True)
            if self.completed:
                return
        self.s3.complete_multipart_upload(Bucket=self.bucket, Key=self.key,
                                          UploadId=self.upload_id,
                                          MultipartUpload={"Parts": self.parts})
        self.completed = True

    def resumable(self) -> bool:
        """Whether a retry can go on with this upload (one request): True when nothing was
        uploaded yet, when S3 still has the upload, or when the object was completed already
        (a kill after `complete`; it is then marked completed); False when the upload is gone
        (aborted: by an erasure, or a bucket's lifecycle rule) and the rows must be redone."""
        if self.upload_id is None or self.completed:
            return True
        try:
            self.s3.list_parts(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                               MaxParts=1)
            return True
        except ClientError as error:
            if error.response["Error"]["Code"] not in NO_SUCH_UPLOAD:
                raise
        try:
            length = self.s3.head_object(Bucket=self.bucket, Key=self.key)["ContentLength"]
        except ClientError as error:
            if error.response["Error"]["Code"] not in ("NoSuchKey", "404"):
                raise
            return False
        self.completed = length == self.size
        return self.completed

    def abort(self) -> None:
        """Drop the upload and its parts (a job that failed for good)."""
        if self.upload_id is not None and not self.completed:
            try:
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key,
                                               UploadId=self.upload_id)
            except ClientError as error:
                if error.response["Error"]["Code"] not in NO_SUCH_UPLOAD:
                    raise
