"""The model store: where a model too large for a Lambda layer is kept (docs/architecture.md,
"Large models"), and the one way its bytes are read back.

A stored version is one object (`StoredObject`: key, size in bytes, sha256). `fetch_verified`
reads it with parallel ranged reads (a thread pool of `workers`, `part_bytes` per range) into
memory, never onto disk (Lambda's /tmp above 512 MB would rule SnapStart out, and a second copy
would cost its size again), and hashes the parts in order as they arrive: the sha256 is checked
on the stream, and the bytes are returned only when it matches, so nothing unverified ever
reaches onnxruntime. The store itself is anything that reads a byte range of an object
(`RangeReader`): S3 through boto3 on Lambda, in the batch runner and in `make serve` (whose
local S3 is a moto server) is model_api.aws.model_store; this module knows no AWS.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from model_api.integrity import IntegrityError

# A part of 16 MiB keeps each GET long enough to reach S3's per-connection throughput (AWS's
# S3 performance guidelines: byte-range fetches of 8-16 MB) and 8 in flight use the function's
# network without holding more than 8 parts beyond what was hashed.
PART_BYTES = 16 << 20
WORKERS = 8
# The manifest's field that says a version's model file is in the store (model_export/artifact).
STORE_FIELD = "store"


class StoreError(Exception):
    """The stored object cannot be read (missing, denied, the store unreachable)."""


@dataclass(frozen=True)
class StoredObject:
    """One file of a model in the store: its `key`, its `size` in bytes and its sha256 (64 hex);
    `location`: for a model over 2 GiB (ONNX's external-data format), the name its graph gives
    the file of its tensors; None for the graph itself."""

    key: str
    size: int
    sha256: str
    location: str | None = None

    @classmethod
    def from_manifest(cls, extra: dict[str, Any], sha256: str) -> StoredObject | None:
        """The object a manifest's `store` field names ({"key", "bytes"}), or None (the file is
        in the version folder). ValueError when the field is malformed."""
        found = extra.get(STORE_FIELD)
        if found is None:
            return None
        if not (isinstance(found, dict) and isinstance(found.get("key"), str)
                and type(found.get("bytes")) is int and found["bytes"] > 0):
            raise ValueError(f'{STORE_FIELD} must be {{"key": <string>, "bytes": <int > 0>}}, '
                             f"got {found!r}")
        return cls(found["key"], found["bytes"], sha256)


def external_data(extra: dict[str, Any]) -> StoredObject | None:
    """The file of a model's tensors in the external-data format (over 2 GiB) its manifest names
    (`store.data`: {"key", "bytes", "sha256", "location"}), or None. ValueError when malformed."""
    found = (extra.get(STORE_FIELD) or {}).get("data")
    if found is None:
        return None
    if not (isinstance(found, dict) and all(isinstance(found.get(k), str)
                                            for k in ("key", "sha256", "location"))
            and type(found.get("bytes")) is int and found["bytes"] > 0
            and "/" not in found["location"]):
        raise ValueError(f'{STORE_FIELD}.data must be {{"key", "bytes", "sha256", "location": '
                         f"<a file name>}}, got {found!r}")
    return StoredObject(found["key"], found["bytes"], found["sha256"], found["location"])


class RangeReader(Protocol):
    """Reads bytes [start, end) of an object of the store; StoreError when it cannot."""

    def read_range(self, key: str, start: int, end: int) -> bytes:
        ...


@dataclass
class Progress:
    """How far a read is: bytes read and verified of `total` (for `/ready` while loading)."""

    total: int
    done: int = 0

    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


def fetch_verified(reader: RangeReader, stored: StoredObject, part_bytes: int = PART_BYTES,
                   workers: int = WORKERS, progress: Progress | None = None) -> bytes:
    """The bytes of `stored`, read as ranges of `part_bytes` by `workers` threads and hashed in
    order as they arrive; returned only once their sha256 is `stored.sha256`.

    Memory: the parts (the object's size), then the one joined copy that onnxruntime reads,
    momentarily both (2 x size); the parts are released as soon as they are joined.
    Raises StoreError when a range cannot be read or is short, IntegrityError when the sha256
    differs (the key in place of a path)."""
    ranges = [(start, min(start + part_bytes, stored.size))
              for start in range(0, stored.size, part_bytes)]
    digest = hashlib.sha256()
    parts: list[bytes] = []
    with ThreadPoolExecutor(max_workers=max(1, workers),
                            thread_name_prefix="model-store") as pool:
        futures: list[Future[bytes]] = [pool.submit(reader.read_range, stored.key, start, end)
                                        for start, end in ranges]
        try:
            for (start, end), future in zip(ranges, futures, strict=True):
                part = future.result()
                if len(part) != end - start:
                    raise StoreError(f"{stored.key}: bytes {start}-{end - 1} came back as "
                                     f"{len(part)} bytes; the object is not {stored.size} "
                                     "bytes long")
                digest.update(part)
                parts.append(part)
                if progress is not None:
                    progress.done += len(part)
        finally:
            for future in futures:
                future.cancel()
    actual = digest.hexdigest()
    if actual != stored.sha256:
        raise IntegrityError(Path(stored.key), actual, stored.sha256)
    data = b"".join(parts)
    parts.clear()
    return data
