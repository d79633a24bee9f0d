"""The model store: where a model too large for a Lambda layer is kept (docs/architecture.md,
"Large models"), and the one way its bytes are read back.

A stored version is two objects (`StoredObject`: key, size in bytes, sha256): its graph, small,
and its weights, one file of every large tensor at aligned offsets (ONNX's external-data format,
written so by `make add-model`, model_export.weights; `Tensor` says where each tensor lies).
`fetch_into` reads an object with parallel ranged reads (a thread pool of `workers`,
`part_bytes` per range) into one buffer allocated once (`aligned_buffer`), never onto disk
(Lambda's /tmp above 512 MB would rule SnapStart out, and a second copy would cost its size
again), and hashes the buffer in order as the parts land: the sha256 is checked on the stream,
and the buffer is handed on only when it matches, so nothing unverified ever reaches
onnxruntime (model_api.model then hands it the tensors in place, without a copy). The store
itself is anything that reads a byte range of an object into a buffer (`RangeReader`): S3
through boto3 on Lambda, in the batch runner and in `make serve` (whose local S3 is a moto
server) is model_api.aws.model_store; this module knows no AWS.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from model_api.integrity import IntegrityError
from model_api.manifest import STORE_FIELD

if TYPE_CHECKING:
    from concurrent.futures import Future

# A part of 16 MiB keeps each GET long enough to reach S3's per-connection throughput (AWS's
# S3 performance guidelines: byte-range fetches of 8-16 MB) and 8 in flight use the function's
# network without holding more than 8 parts beyond what was hashed.
PART_BYTES = 16 << 20
WORKERS = 8
# Where each tensor of the weights' file starts: a multiple of this many bytes (the alignment
# onnxruntime's own CPU allocator gives its tensors, a cache line).
ALIGNMENT = 64
# Bytes per element of the ONNX tensor types (onnx.TensorProto.DataType) a weights' file may
# hold: onnxruntime is handed each tensor as unsigned integers of that size, reinterpreted as
# its own type (OrtValue.ortvalue_from_numpy_with_onnx_type), so bfloat16 and float8 need no
# numpy type of their own. Strings and 4-bit types stay in the graph.
ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8,
            16: 2, 17: 1, 18: 1, 19: 1, 20: 1}


class StoreError(Exception):
    """The stored object cannot be read (missing, denied, the store unreachable)."""


@dataclass(frozen=True)
class Tensor:
    """One tensor of a weights' file: its `name` in the graph, ONNX element `type`
    (onnx.TensorProto.DataType, a key of ITEMSIZE), `shape`, and its bytes [offset,
    offset + size) in the file."""

    name: str
    type: int
    shape: tuple[int, ...]
    offset: int
    size: int

    @classmethod
    def from_manifest(cls, found: Any, file_size: int) -> Tensor:
        """The tensor a manifest's `store.data.tensors` entry names ({"name", "type", "shape",
        "offset", "bytes"}); ValueError unless it lies, aligned and whole, inside the file."""
        if not (isinstance(found, dict) and isinstance(found.get("name"), str)
                and found.get("type") in ITEMSIZE and isinstance(found.get("shape"), list)
                and all(type(dim) is int and dim >= 0 for dim in found["shape"])
                and all(type(found.get(k)) is int and found[k] >= 0
                        for k in ("offset", "bytes"))):
            raise ValueError(f'{STORE_FIELD}.data.tensors: each must be {{"name", "type" (one '
                             f'of {sorted(ITEMSIZE)}), "shape", "offset", "bytes"}}, got '
                             f"{found!r}")
        tensor = cls(found["name"], found["type"], tuple(found["shape"]), found["offset"],
                     found["bytes"])
        elements = int(np.prod(tensor.shape, dtype=np.int64))
        if (tensor.size != elements * ITEMSIZE[tensor.type] or tensor.offset % ALIGNMENT
                or tensor.offset + tensor.size > file_size):
            raise ValueError(f"{STORE_FIELD}.data.tensors: {tensor.name!r} ({tensor.size} "
                             f"bytes at {tensor.offset}) is not its shape's size, aligned to "
                             f"{ALIGNMENT} and inside the {file_size} bytes of its file")
        return tensor

    def view(self, weights: np.ndarray) -> np.ndarray:
        """The tensor's bytes in `weights` (the file's buffer) as unsigned integers of its
        element's size, in its shape: a view, no copy."""
        part = weights[self.offset:self.offset + self.size]
        return part.view(f"u{ITEMSIZE[self.type]}").reshape(self.shape)


@dataclass(frozen=True)
class StoredObject:
    """One file of a model in the store: its `key`, its `size` in bytes and its sha256 (64 hex);
    `location`: for the file of a graph's tensors (ONNX's external-data format), the name the
    graph gives it, and `tensors`, where each lies in it; None and () for the graph itself."""

    key: str
    size: int
    sha256: str
    location: str | None = None
    tensors: tuple[Tensor, ...] = ()

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
    """The file of a model's tensors (ONNX's external-data format) its manifest names
    (`store.data`: {"key", "bytes", "sha256", "location", "tensors": [Tensor...]}), or None.
    ValueError when malformed."""
    found = (extra.get(STORE_FIELD) or {}).get("data")
    if found is None:
        return None
    if not (isinstance(found, dict) and all(isinstance(found.get(k), str)
                                            for k in ("key", "sha256", "location"))
            and type(found.get("bytes")) is int and found["bytes"] > 0
            and "/" not in found["location"] and isinstance(found.get("tensors"), list)
            and found["tensors"]):
        raise ValueError(f'{STORE_FIELD}.data must be {{"key", "bytes", "sha256", "location": '
                         f'<a file name>, "tensors": [...]}} (a version exported before the '
                         f"tensors were listed: add it again), got {str(found)[:300]}")
    tensors = tuple(Tensor.from_manifest(tensor, found["bytes"]) for tensor in found["tensors"])
    return StoredObject(found["key"], found["bytes"], found["sha256"], found["location"],
                        tensors)


class RangeReader(Protocol):
    """Reads a byte range of an object of the store straight into the caller's buffer."""

    def read_range_into(self, key: str, start: int, out: memoryview) -> int:
        """Write the object's bytes from `start` into `out` (its length is the range's) and
        return how many were written (fewer: the object ends sooner); StoreError when the
        object cannot be read."""
        ...


@dataclass
class Progress:
    """How far a read is: bytes read and verified of `total` (for `/ready` while loading)."""

    total: int
    done: int = 0

    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


def size_text(size: int) -> str:
    """`size` bytes in the unit that reads best: "860 B", "8.6 kB", "20 MB", "2.2 GB" (SI)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            value = size / scale
            return f"{value:,.1f} {unit}" if value < 10 else f"{value:,.0f} {unit}"
    return f"{size} B"


def aligned_buffer(size: int) -> np.ndarray:
    """`size` bytes (uint8, uninitialised) starting at a multiple of ALIGNMENT: allocated once,
    filled in place by `fetch_into`."""
    raw = np.empty(size + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + size]


def fetch_into(reader: RangeReader, stored: StoredObject, buffer: np.ndarray,
               part_bytes: int = PART_BYTES, workers: int = WORKERS,
               progress: Progress | None = None) -> None:
    """Fill `buffer` (uint8, `stored.size` bytes) with `stored`, read as ranges of
    `part_bytes` by `workers` threads, each written to its place as it arrives, and hash it in
    order; return only once the sha256 is `stored.sha256`.

    Memory: the buffer only: each part is read straight into its place (no parts held, no
    joined second copy: parts of 16 MiB read as bytes and copied left ~150 MB of freed parts
    resident in glibc's thread arenas for a 400 MB model). Raises StoreError when a range
    cannot be read or is short, IntegrityError when the sha256 differs (the key in place of a
    path): the buffer's bytes are then not to be used."""
    if buffer.shape != (stored.size,) or buffer.dtype != np.uint8:
        raise ValueError(f"{stored.key}: a buffer of {stored.size} bytes is needed, got "
                         f"{buffer.dtype} {buffer.shape}")
    ranges = [(start, min(start + part_bytes, stored.size))
              for start in range(0, stored.size, part_bytes)]

    view = memoryview(buffer)

    def read(start: int, end: int) -> None:
        count = reader.read_range_into(stored.key, start, view[start:end])
        if count != end - start:
            raise StoreError(f"{stored.key}: bytes {start}-{end - 1} came back as "
                             f"{count} bytes; the object is not {stored.size} bytes long")

    from concurrent.futures import ThreadPoolExecutor  # a stored version's alone (cold start)

    digest = hashlib.sha256()
    with ThreadPoolExecutor(max_workers=max(1, workers),
                            thread_name_prefix="model-store") as pool:
        futures: list[Future[None]] = [pool.submit(read, start, end) for start, end in ranges]
        try:
            for (start, end), future in zip(ranges, futures, strict=True):
                future.result()
                digest.update(memoryview(buffer[start:end]))
                if progress is not None:
                    progress.done += end - start
        finally:
            for future in futures:
                future.cancel()
    actual = digest.hexdigest()
    if actual != stored.sha256:
        raise IntegrityError(Path(stored.key), actual, stored.sha256)


def fetch_verified(reader: RangeReader, stored: StoredObject, part_bytes: int = PART_BYTES,
                   workers: int = WORKERS, progress: Progress | None = None) -> bytes:
    """The bytes of `stored` (a graph: small), read and checked as `fetch_into` does; returned
    only once their sha256 is `stored.sha256`. Same errors."""
    buffer = np.empty(stored.size, dtype=np.uint8)
    fetch_into(reader, stored, buffer, part_bytes, workers, progress)
    return buffer.tobytes()


def read_file_into(path: Path, stored: StoredObject, buffer: np.ndarray) -> None:
    """Fill `buffer` with the file at `path` (the weights of a version read from its folder,
    not the store), hashing it as it is read; IntegrityError when its sha256 is not
    `stored.sha256` or its size not `stored.size`; OSError when it cannot be read."""
    digest = hashlib.sha256()
    view = memoryview(buffer)
    done = 0
    with path.open("rb", buffering=0) as handle:
        while done < stored.size:
            count = handle.readinto(view[done:done + PART_BYTES])
            if not count:
                break
            digest.update(view[done:done + count])
            done += count
        extra = handle.read(1)
    actual = (digest.hexdigest() if done == stored.size and not extra
              else f"unknown: the file is not {stored.size} bytes long")
    if actual != stored.sha256:
        raise IntegrityError(path, actual, stored.sha256)
