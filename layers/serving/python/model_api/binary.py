"""The binary tensor data extension (Triton's `binary_tensor_data`): raw tensor bytes after JSON.

Layout, as Triton and its clients write it: the body is a JSON header of
`Inference-Header-Content-Length` bytes, then each binary tensor's bytes in the order of the
header's `inputs` (or `outputs`), each sized by its `parameters.binary_data_size`; little-endian,
row-major, BOOL one byte, a BYTES element a 4-byte little-endian length then its bytes.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from model_api.datatypes import LENGTH_PREFIXED, datatype_row
from model_api.errors import BadRequest, TooLarge
from model_api.limits import MAX_BYTES_ELEMENT

HEADER_LENGTH = "Inference-Header-Content-Length"
_LENGTH = struct.Struct("<I")


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tail) of a request body; the tail is empty without the header."""
    if header_length is None:
        return body, b""
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:  # 19 digits: any int64
        raise BadRequest(f"{HEADER_LENGTH} must be a byte count, got {header_length!r}")
    length = int(text)
    if not 0 < length <= len(body):
        raise BadRequest(
            f"{HEADER_LENGTH} is {length} but the request body has {len(body)} bytes"
        )
    return body[:length], body[length:]


def decode_tensor(name: str, datatype: str, shape: tuple[int, ...], raw: bytes) -> np.ndarray:
    """The array `raw` encodes; 400 if its size does not match `shape` of `datatype`."""
    count = math.prod(shape)
    row = datatype_row(datatype)
    if row.wire == LENGTH_PREFIXED:
        return _decode_strings(name, count, raw).reshape(shape)
    dtype = row.dtype
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise BadRequest(
            f"input '{name}' has binary_data_size {len(raw)}, but shape {list(shape)} of "
            f"{datatype} takes {expected} bytes"
        )
    if row.kind == "bool" and raw and max(raw) > 1:
        raise BadRequest(f"input '{name}' is {datatype}: each element must be the byte 0 or 1")
    # astype copies into an aligned, native-order array that onnxruntime can own.
    array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
    if row.kind == "float" and not np.isfinite(array).all():
        raise BadRequest(f"input '{name}' holds NaN or infinite values; only finite numbers")
    return array.reshape(shape)


def _decode_strings(name: str, count: int, raw: bytes) -> np.ndarray:
    strings = np.empty(count, dtype=object)
    offset = 0
    for index in range(count):
        if offset + _LENGTH.size > len(raw):
            raise BadRequest(
                f"input '{name}' binary data ends after {index} of {count} BYTES elements"
            )
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if length > MAX_BYTES_ELEMENT:
            raise TooLarge(
                f"input '{name}' element {index} is {length} bytes; the limit is "
                f"{MAX_BYTES_ELEMENT} bytes per BYTES element"
            )
        if offset + length > len(raw):
            raise BadRequest(
                f"input '{name}' element {index} claims {length} bytes but only "
                f"{len(raw) - offset} remain in its binary data"
            )
        try:
            strings[index] = raw[offset:offset + length].decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"input '{name}' element {index} is not valid UTF-8") from None
        offset += length
    if offset != len(raw):
        raise BadRequest(
            f"input '{name}' has {len(raw) - offset} bytes left after its {count} BYTES elements"
        )
    return strings


def encode_tensor(array: np.ndarray, datatype: str) -> bytes:
    """The wire bytes of `array` as `datatype`."""
    row = datatype_row(datatype)
    if row.wire == LENGTH_PREFIXED:
        parts: list[bytes] = []
        for item in array.ravel():
            data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
            parts += (_LENGTH.pack(len(data)), data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=row.dtype).tobytes()
