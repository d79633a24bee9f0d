"""Writing outputs to S3: whole part files per chunk, and large files by multipart upload.

A part is written with one PUT, so a retried chunk overwrites its part instead of appending
to it. The final .npy of each model output is streamed from the parts through a multipart
upload: the parts the runner still holds in memory (batch.job keeps this attempt's, up to
HELD_BYTES) as they are, the others read back from S3 one at a time.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from botocore.exceptions import ClientError

MULTIPART_BYTES = 16 * 1024 * 1024  # S3 wants parts of at least 5 MiB, except the last
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
                    known: Sequence[dict[str, Any] | None],
                    held: Mapping[str, np.ndarray] | None = None) -> tuple[int, ...]:
    """Write the row-wise concatenation of .npy parts to `key`; returns its shape. `known`:
    one per part, its header (npy_header) where the caller has it, else None: read from the
    part (a checkpoint written before headers were kept has none). `held`: part key -> the
    part's array, for the parts the caller still holds (those this attempt wrote): used as
    they are instead of being read back from S3."""
    held = held or {}
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
            array = held.get(part)
            if array is None:
                data = s3.get_object(Bucket=bucket, Key=part)["Body"].read()
                array = np.load(io.BytesIO(data))
            writer.write(np.ascontiguousarray(array).tobytes())
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return total
