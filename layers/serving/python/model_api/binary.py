"""The binary tensor data extension (Triton's `binary_tensor_data`): raw tensor bytes after JSON.

Layout, as Triton and its clients write it: the body is a JSON header of
`Inference-Header-Content-Length` bytes, then each binary tensor's bytes in the order of the
header's `inputs` (or `outputs`), each sized by its `parameters.binary_data_size`; little-endian,
row-major, BOOL one byte, a BYTES element a 4-byte little-endian length then its bytes.

A raw binary request (the extension's "Raw Binary Request") has an
`Inference-Header-Content-Length` of 0: no JSON header at all, the body is the bytes of the
model's only input. Its shape is deduced from the body's size (`raw_shape`): at most one
variable dimension for a fixed-size datatype; for BYTES, the body is one element (shape of 1s).
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


def header_length(value: str | None) -> int | None:
    """The byte count an `Inference-Header-Content-Length` value gives (None without one);
    400 unless it is a non-negative decimal integer of at most 19 ASCII digits (any int64)."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise BadRequest(f"{HEADER_LENGTH} must be a byte count, got {value!r}")
    return int(text)


def split_body(body: bytes, length: int | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tail) of a request body whose JSON header is `length` bytes (the
    header_length); the tail is empty without one. 0 is a raw binary request, not split here."""
    if length is None:
        return body, b""
    if not 0 < length <= len(body):
        raise BadRequest(
            f"{HEADER_LENGTH} is {length} but the request body has {len(body)} bytes"
        )
    return body[:length], body[length:]


def raw_shape(name: str, datatype: str, shape: tuple[int, ...], size: int) -> tuple[int, ...]:
    """The shape of a raw binary request's tensor: the model input's `shape` (-1: variable)
    with its variable dimension deduced from the body's `size` in bytes, as Triton deduces it.

    A fixed-size datatype may have at most one variable dimension, and `size` must be a
    positive multiple of the bytes one step of it takes (exactly those bytes without one). A
    BYTES input's body is one element: each dimension must be 1 or variable (then 1). 400
    otherwise, naming the rule; raw_tensor turns the bytes into the array.
    """
    variable = [index for index, dim in enumerate(shape) if dim == -1]
    row = datatype_row(datatype)
    if row.itemsize is None:  # BYTES: one element, whatever its length
        if any(dim not in (1, -1) for dim in shape):
            raise BadRequest(
                f"a raw binary request (no JSON header) to input '{name}' of BYTES carries one "
                f"element, but the model takes shape {list(shape)}: send a JSON header"
            )
        return tuple(1 for _ in shape)
    if len(variable) > 1:
        raise BadRequest(
            f"a raw binary request (no JSON header) cannot tell the shape of input '{name}': "
            f"shape {list(shape)} has {len(variable)} variable dimensions (at most 1); send "
            "a JSON header with the shape"
        )
    step = row.itemsize * math.prod(dim for dim in shape if dim != -1)
    if size == 0 or size % step or (not variable and size != step):
        raise BadRequest(
            f"a raw binary request of {size} bytes does not fit input '{name}': shape "
            f"{list(shape)} of {datatype} takes " + (f"a positive multiple of {step} bytes"
                                                     if variable else f"{step} bytes")
        )
    return tuple(size // step if dim == -1 else dim for dim in shape)


def raw_tensor(name: str, datatype: str, shape: tuple[int, ...], body: bytes) -> np.ndarray:
    """The array of a raw binary request's `body` in `shape` (from raw_shape): the bytes as
    decode_tensor reads them; a BYTES body is the one element's UTF-8 bytes, unprefixed."""
    if datatype_row(datatype).wire == LENGTH_PREFIXED:
        body = _LENGTH.pack(len(body)) + body
    return decode_tensor(name, datatype, shape, body)


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
