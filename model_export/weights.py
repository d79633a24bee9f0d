"""A model's weights in one file beside its graph: the form the model store keeps (issue 21;
docs/performance.md, "Large models"), written by `make add-model` for every version it places
in the store.

ONNX's external-data format moves each large tensor of the graph's initializers out of the
protobuf into one file (`DATA_FILE`), the graph keeping its name, type, shape, and where in the
file it lies (offset and length, at a multiple of model_api.store.ALIGNMENT). A model function
then reads that file into one buffer, checks its sha256 and hands onnxruntime each tensor where
it lies, without a copy (model_api.model); the graph, small, is parsed as before. The same two
files are a model onnx, onnxruntime and netron read as any other in that format.

Which tensors move: those of the top graph's initializers of at least `THRESHOLD` bytes whose
element type has a fixed size (model_api.store.ITEMSIZE); small ones (shapes, axes, scalars,
which shape inference reads) and strings stay in the graph. A model already in the format (over
2 GiB) is laid out again the same way, from its own file of tensors. The layout is a function
of the graph alone, so writing an already written model again gives the same bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from model_api.integrity import sha256_of
from model_api.store import ALIGNMENT, ITEMSIZE
from onnx import numpy_helper

DATA_FILE = "model.onnx.data"
# The smallest tensor moved out of the graph (onnx's own default for save_as_external_data).
THRESHOLD = 1024
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data",
                "uint64_data", "string_data")


class WeightsError(ValueError):
    """The model's tensors cannot be laid out in one file; the message says why."""


def _external(tensor: onnx.TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def split(model_bytes: bytes, data: bytes | None = None,
          location: str = DATA_FILE) -> tuple[bytes, bytes]:
    """The graph (serialised, its large tensors referring to `location`) and the bytes of that
    file, from a model in one file (`model_bytes`), or from one in the external-data format
    (its graph and `data`, the file of its tensors, as add-model requires it: one file).

    Memory: the model, its tensors' bytes and the new file's at once (3 x its size at
    add-model, never in a model function). WeightsError when a tensor the graph keeps outside
    lies outside `data`, or is of a type without a fixed size."""
    model = onnx.load_from_string(model_bytes)
    out = bytearray()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raw = _external_bytes(tensor, data)
        elif (tensor.data_type in ITEMSIZE
              and _size(tensor) * ITEMSIZE[tensor.data_type] >= THRESHOLD):
            raw = (tensor.raw_data if tensor.HasField("raw_data")
                   else numpy_helper.to_array(tensor).tobytes())
        else:
            continue
        out.extend(bytes(-len(out) % ALIGNMENT))
        offset = len(out)
        out.extend(raw)
        for name in _DATA_FIELDS:
            tensor.ClearField(name)
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", str(offset)),
                           ("length", str(len(raw)))):
            tensor.external_data.add(key=key, value=value)
    return model.SerializeToString(), bytes(out)


def _size(tensor: onnx.TensorProto) -> int:
    return int(np.prod(tensor.dims, dtype=np.int64))


def _external_bytes(tensor: onnx.TensorProto, data: bytes | None) -> bytes:
    """The bytes of a tensor the graph keeps in its file of tensors `data`."""
    if tensor.data_type not in ITEMSIZE:
        raise WeightsError(f"tensor {tensor.name!r} is of ONNX type {tensor.data_type}, which "
                           f"has no fixed size per element (served: {sorted(ITEMSIZE)})")
    info = _external(tensor)
    length = _size(tensor) * ITEMSIZE[tensor.data_type]
    offset = int(info.get("offset", 0))
    if data is None or offset + length > len(data) or int(info.get("length", length)) != length:
        raise WeightsError(f"tensor {tensor.name!r}: {length} bytes at {offset} are not in its "
                           f"file of tensors ({len(data or b'')} bytes)")
    return data[offset:offset + length]


def tensors(graph_bytes: bytes) -> list[dict[str, Any]]:
    """Where each tensor of a graph `split` wrote lies in its file: the manifest's
    `store.data.tensors` (model_api.store.Tensor), in the graph's order."""
    model = onnx.load_from_string(graph_bytes)
    return [{"name": tensor.name, "type": tensor.data_type, "shape": list(tensor.dims),
             "offset": int(_external(tensor)["offset"]),
             "bytes": int(_external(tensor)["length"])}
            for tensor in model.graph.initializer
            if tensor.data_location == onnx.TensorProto.EXTERNAL]


def store_section(graph_bytes: bytes, data: bytes | None, key: str,
                  data_key: str | None = None, location: str = DATA_FILE) -> dict[str, Any]:
    """The manifest's `store` field (model_api.store) of a version whose graph is the object
    `key` and, when `data` is given, whose weights' file (`split`) is `data_key`."""
    section: dict[str, Any] = {"key": key, "bytes": len(graph_bytes)}
    if data is not None:
        section["data"] = {"key": data_key, "bytes": len(data), "sha256": sha256_of(data),
                           "location": location, "tensors": tensors(graph_bytes)}
    return section
