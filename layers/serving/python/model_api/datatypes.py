"""Open Inference Protocol datatypes: one row per datatype with every fact the project keeps about
it (its numpy dtype, ONNX and onnxruntime names, what a JSON `data` element may be, how it is
laid out as binary tensor data). Every lookup below, the codecs and the export derive from
`ROWS`: a new datatype is one more row.

BYTES tensors are numpy object arrays of `str`: that is what onnxruntime takes and returns for
ONNX `string` tensors. Binary tensor data is little-endian, hence the explicit `<` dtypes.
"""

from __future__ import annotations

from typing import Literal

import msgspec
import numpy as np

from model_api.errors import BadRequest

Kind = Literal["bool", "integer", "float", "string"]
# How its elements are laid out as binary tensor data (model_api.binary): `fixed`, each element
# the dtype's itemsize bytes, little-endian; `length-prefixed`, each element a 4-byte
# little-endian length and then that many UTF-8 bytes (Triton's BYTES layout).
Wire = Literal["fixed", "length-prefixed"]
FIXED: Wire = "fixed"
LENGTH_PREFIXED: Wire = "length-prefixed"

# The Python types a JSON `data` element may have, by kind (bool is not an int here).
_JSON_TYPES: dict[Kind, frozenset[type]] = {
    "bool": frozenset({bool}),
    "integer": frozenset({int}),
    "float": frozenset({int, float}),
    "string": frozenset({str}),
}


class Datatype(msgspec.Struct, frozen=True):
    """One OIP datatype. `dtype`: the numpy dtype of its little-endian wire form (and of the
    array handed to onnxruntime); `onnx`: its onnx.TensorProto.DataType number (a number, not an
    `onnx` import: the onnx package is not part of the Lambda runtime); `ort`: onnxruntime's
    NodeArg.type string; `kind`: the JSON element rule (bool: true/false; integer: a JSON integer
    within the dtype's range; float: any finite number within the dtype's range; string: a
    string); `wire`: the binary tensor data rule (FIXED or LENGTH_PREFIXED)."""

    name: str
    dtype: np.dtype
    onnx: int
    ort: str
    kind: Kind
    wire: Wire = FIXED

    @property
    def json_types(self) -> frozenset[type]:
        """The Python types a JSON `data` element of this datatype may have."""
        return _JSON_TYPES[self.kind]

    @property
    def itemsize(self) -> int | None:
        """Bytes per element as binary tensor data; None when each is length-prefixed."""
        return self.dtype.itemsize if self.wire == FIXED else None


BYTES = "BYTES"

# In the protocol's order (the OpenAPI document's enum lists them so).
ROWS: tuple[Datatype, ...] = (
    Datatype("BOOL", np.dtype("?"), 9, "tensor(bool)", "bool"),
    Datatype("UINT8", np.dtype("u1"), 2, "tensor(uint8)", "integer"),
    Datatype("UINT16", np.dtype("<u2"), 4, "tensor(uint16)", "integer"),
    Datatype("UINT32", np.dtype("<u4"), 12, "tensor(uint32)", "integer"),
    Datatype("UINT64", np.dtype("<u8"), 13, "tensor(uint64)", "integer"),
    Datatype("INT8", np.dtype("i1"), 3, "tensor(int8)", "integer"),
    Datatype("INT16", np.dtype("<i2"), 5, "tensor(int16)", "integer"),
    Datatype("INT32", np.dtype("<i4"), 6, "tensor(int32)", "integer"),
    Datatype("INT64", np.dtype("<i8"), 7, "tensor(int64)", "integer"),
    Datatype("FP16", np.dtype("<f2"), 10, "tensor(float16)", "float"),
    Datatype("FP32", np.dtype("<f4"), 1, "tensor(float)", "float"),
    Datatype("FP64", np.dtype("<f8"), 11, "tensor(double)", "float"),
    Datatype(BYTES, np.dtype(object), 8, "tensor(string)", "string", LENGTH_PREFIXED),
)

# The lookups, derived from ROWS.
BY_NAME: dict[str, Datatype] = {row.name: row for row in ROWS}
DATATYPES = tuple(BY_NAME)
# OIP datatype -> numpy dtype of its wire form.
NUMPY_DTYPES: dict[str, np.dtype] = {row.name: row.dtype for row in ROWS}
# onnx.TensorProto.DataType values -> OIP datatype, for metadata derived from a graph.
ONNX_ELEMENT_TYPES: dict[int, str] = {row.onnx: row.name for row in ROWS}
# onnxruntime NodeArg.type strings -> OIP datatype, to check a session against its manifest.
ORT_TYPES: dict[str, str] = {row.ort: row.name for row in ROWS}
FLOATS = tuple(row.name for row in ROWS if row.kind == "float")
NUMERIC = tuple(row.name for row in ROWS if row.kind in ("integer", "float"))


def datatype_row(datatype: str) -> Datatype:
    """The row of an OIP datatype; 400 naming the allowed ones if unknown."""
    try:
        return BY_NAME[datatype]
    except (KeyError, TypeError):
        raise BadRequest(
            f"unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"
        ) from None


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of an OIP datatype; 400 naming the allowed ones if unknown."""
    return datatype_row(datatype).dtype


def is_float(datatype: str) -> bool:
    """Whether `datatype` is a floating-point one (its values must be finite)."""
    row = BY_NAME.get(datatype)
    return row is not None and row.kind == "float"


def is_integer(datatype: str) -> bool:
    """Whether `datatype` is a signed or unsigned integer one."""
    row = BY_NAME.get(datatype)
    return row is not None and row.kind == "integer"
