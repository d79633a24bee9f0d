"""Open Inference Protocol datatypes and their numpy and ONNX counterparts.

BYTES tensors are numpy object arrays of `str`: that is what onnxruntime takes and returns for
ONNX `string` tensors. Binary tensor data is little-endian, hence the explicit `<` dtypes.
"""

from __future__ import annotations

import numpy as np

from model_api.errors import BadRequest

BYTES = "BYTES"

# OIP datatype -> numpy dtype of its little-endian wire form (and of the array handed to ORT).
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    BYTES: np.dtype(object),
}

DATATYPES = tuple(NUMPY_DTYPES)

# onnx.TensorProto.DataType values -> OIP datatype, for metadata derived from a graph
# (numbers, not `onnx` imports: the onnx package is not part of the Lambda runtime).
ONNX_ELEMENT_TYPES: dict[int, str] = {
    1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
    8: BYTES, 9: "BOOL", 10: "FP16", 11: "FP64", 12: "UINT32", 13: "UINT64",
}

# onnxruntime NodeArg.type strings -> OIP datatype, to check a session against its manifest.
ORT_TYPES: dict[str, str] = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(int8)": "INT8",
    "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
    "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(string)": BYTES,
}


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of an OIP datatype; 400 naming the allowed ones if unknown."""
    try:
        return NUMPY_DTYPES[datatype]
    except (KeyError, TypeError):
        raise BadRequest(
            f"unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"
        ) from None


def is_float(datatype: str) -> bool:
    return datatype in ("FP16", "FP32", "FP64")


def is_integer(datatype: str) -> bool:
    return datatype.startswith(("INT", "UINT"))
