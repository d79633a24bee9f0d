"""Tiny ONNX models written into tmp_path for the serving library's unit tests.

Each model is built with onnx.helper (an Identity or Add graph) with its manifest.json beside
it, exactly as the exporter lays out build/models/<name>/<version>/, so the tests depend on
no exported model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
from model_api.datatypes import ONNX_ELEMENT_TYPES
from model_api.manifest import Manifest, parse_manifest
from onnx import helper

ONNX_TYPES = {datatype: number for number, datatype in ONNX_ELEMENT_TYPES.items()}
Tensor = tuple[str, str, Sequence[int]]  # name, OIP datatype, shape (-1: variable)


def graph_model(nodes: Sequence[onnx.NodeProto], inputs: Sequence[Tensor],
                outputs: Sequence[Tensor]) -> onnx.ModelProto:
    """An ONNX model of `nodes`; -1 dimensions become symbolic ones."""

    def info(tensor: Tensor) -> onnx.ValueInfoProto:
        name, datatype, shape = tensor
        dims = [f"d{i}" if dim == -1 else dim for i, dim in enumerate(shape)]
        return helper.make_tensor_value_info(name, ONNX_TYPES[datatype], dims)

    graph = helper.make_graph(list(nodes), "test", [info(t) for t in inputs],
                              [info(t) for t in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def write_version(folder: Path, model: onnx.ModelProto, inputs: Sequence[Tensor],
                  outputs: Sequence[Tensor], **manifest: Any) -> Path:
    """`folder` laid out as an exported version: model.onnx and its manifest.json."""
    folder.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    (folder / "model.onnx").write_bytes(data)
    document = {
        "schema_version": 1, "name": folder.parent.name, "version": folder.name,
        "platform": "onnxruntime_onnx", "model_file": "model.onnx",
        "sha256": hashlib.sha256(data).hexdigest(),
        "inputs": [{"name": n, "datatype": d, "shape": list(s)} for n, d, s in inputs],
        "outputs": [{"name": n, "datatype": d, "shape": list(s)} for n, d, s in outputs],
        **manifest,
    }
    (folder / "manifest.json").write_text(json.dumps(document))
    return folder


def identity_version(folder: Path, datatype: str, shape: Sequence[int] = (-1, 3),
                     **manifest: Any) -> Path:
    """y = Identity(x) for one datatype."""
    inputs, outputs = [("x", datatype, shape)], [("y", datatype, shape)]
    model = graph_model([helper.make_node("Identity", ["x"], ["y"])], inputs, outputs)
    return write_version(folder, model, inputs, outputs, **manifest)


def add_version(folder: Path, **manifest: Any) -> Path:
    """sum = a + b and a copy of a: two FP32 inputs [-1, 2], two outputs."""
    inputs = [("a", "FP32", (-1, 2)), ("b", "FP32", (-1, 2))]
    outputs = [("sum", "FP32", (-1, 2)), ("copy", "FP32", (-1, 2))]
    nodes = [helper.make_node("Add", ["a", "b"], ["sum"]),
             helper.make_node("Identity", ["a"], ["copy"])]
    return write_version(folder, graph_model(nodes, inputs, outputs), inputs, outputs, **manifest)


def manifest_of(*inputs: Tensor, outputs: Sequence[Tensor] = (("y", "FP32", (-1,)),)) -> Manifest:
    """A manifest for codec tests, which need no model file."""
    return parse_manifest({
        "schema_version": 1, "name": "m", "version": "1", "platform": "onnxruntime_onnx",
        "model_file": "model.onnx", "sha256": "0" * 64,
        "inputs": [{"name": n, "datatype": d, "shape": list(s)} for n, d, s in inputs],
        "outputs": [{"name": n, "datatype": d, "shape": list(s)} for n, d, s in outputs],
    })
