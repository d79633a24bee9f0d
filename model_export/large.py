"""Large models for the tests and `make bench ONLY=large`, generated when needed, never committed:
a transformer encoder of a chosen size exported by PyTorch in .venv-torch
(model_export.transformer), and an embedding model built with onnx's helpers (no PyTorch), in
one file or, over 2 GiB, in ONNX's external-data format (its tensors written chunk by chunk, so
building it never holds them); kept in a cache folder so one test session or bench run makes
each size once. Both take `input_ids` and `attention_mask` INT64 [batch, sequence] and answer
`logits` FP32 [batch, 4]."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from model_export.digits import ROOT, TORCH_PYTHON
from model_export.weights import DATA_FILE

EMBEDDING_WIDTH = 64


def transformer(mb: float, cache: Path, seed: int = 0) -> Path:
    """The encoder of about `mb` MB (seeded) in `cache`, exported there on first use (about 5 s
    of CPU plus the writing). SystemExit when .venv-torch is missing or the export fails."""
    out = cache / f"transformer-{mb:g}mb-seed{seed}.onnx"
    if out.is_file():
        return out
    if not TORCH_PYTHON.exists():
        raise SystemExit(f"{TORCH_PYTHON} not found: run `make .venv-torch` (PyTorch, CPU)")
    partial = out.with_name(f".{out.name}.{os.getpid()}")
    result = subprocess.run(
        [str(TORCH_PYTHON), "-m", "model_export.transformer", "--out", str(partial),
         "--mb", str(mb), "--seed", str(seed)],
        cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"the transformer export failed in {TORCH_PYTHON}:\n"
                         f"{result.stdout}{result.stderr}")
    partial.rename(out)
    return out


def embedding(mb: float, cache: Path, external: bool = False, seed: int = 0) -> Path:
    """An embedding lookup, a masked mean and a linear head of about `mb` MB (seeded) in
    `cache`: one .onnx file, or with `external` a folder with model.onnx (the graph) and
    model.onnx.data (its tensors)."""
    name = f"embedding-{mb:g}mb-seed{seed}" + ("-external" if external else "")
    out = cache / name / "model.onnx" if external else cache / f"{name}.onnx"
    if out.is_file():
        return out
    # Tables of at most 1 GB each, added: onnxruntime (1.32) takes no single tensor over 2 GiB
    # from memory, and models over 2 GiB are many tensors.
    tables = max(1, int(np.ceil(mb / 1000)))
    rows = int(mb * 1e6 / (4 * EMBEDDING_WIDTH * tables))
    rng = np.random.default_rng(seed)
    head = rng.standard_normal((EMBEDDING_WIDTH, 4), dtype=np.float32)
    names = [f"table{i}" for i in range(tables)]
    nodes = [*(helper.make_node("Gather", [name, "input_ids"], [f"hidden{i}"])
               for i, name in enumerate(names)),
             helper.make_node("Sum", [f"hidden{i}" for i in range(tables)], ["hidden"]),
             helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mask"], ["mask3"], axes=[2]),
             helper.make_node("Mul", ["hidden", "mask3"], ["masked"]),
             helper.make_node("ReduceMean", ["masked"], ["pooled"], axes=[1], keepdims=0),
             helper.make_node("MatMul", ["pooled", "head"], ["logits"])]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
              for n in ("input_ids", "attention_mask")]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])]
    out.parent.mkdir(parents=True, exist_ok=True)
    if not external:
        initializers = [*(numpy_helper.from_array(
            rng.standard_normal((rows, EMBEDDING_WIDTH), dtype=np.float32), name)
            for name in names), numpy_helper.from_array(head, "head")]
    else:
        initializers = []
        with (out.parent / DATA_FILE).open("wb") as data:
            for tensor_name, shape, write in (
                    *((name, (rows, EMBEDDING_WIDTH), lambda: _write_rows(data, rng, rows))
                      for name in names),
                    ("head", head.shape, lambda: data.write(head.tobytes()))):
                offset = data.tell()
                write()
                tensor = TensorProto(name=tensor_name, data_type=TensorProto.FLOAT,
                                     dims=list(shape), data_location=TensorProto.EXTERNAL)
                for key, value in (("location", DATA_FILE), ("offset", str(offset)),
                                   ("length", str(data.tell() - offset))):
                    tensor.external_data.add(key=key, value=value)
                initializers.append(tensor)
    graph = helper.make_graph(nodes, "embedding", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 8
    partial = out.with_name(f".{out.name}.{os.getpid()}")
    partial.write_bytes(model.SerializeToString())
    partial.rename(out)
    return out


def _write_rows(data: object, rng: np.random.Generator, rows: int, chunk: int = 1 << 16) -> None:
    for start in range(0, rows, chunk):
        block = rng.standard_normal((min(chunk, rows - start), EMBEDDING_WIDTH),
                                    dtype=np.float32)
        data.write(block.tobytes())  # type: ignore[attr-defined]


def dense(mb: float, cache: Path, width: int = 2048, seed: int = 0) -> Path:
    """A stack of `width` x `width` FP32 MatMul + bias + ReLU layers of about `mb` MB (seeded),
    built with onnx's helpers in `cache`: `x` FP32 [batch, width] -> `y` FP32 [batch, width].
    Every weight is a MatMul's, the case onnxruntime's pre-packing copies (`make bench
    ONLY=large`: in place vs copied weights); the transformer's size is mostly its embedding."""
    out = cache / f"dense-{mb:g}mb-w{width}-seed{seed}.onnx"
    if out.is_file():
        return out
    layers = max(1, round(mb * 1e6 / (4 * width * width)))
    rng = np.random.default_rng(seed)
    nodes, initializers, hidden = [], [], "x"
    for i in range(layers):
        weight = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        initializers += [numpy_helper.from_array(weight, f"w{i}"),
                         numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [hidden, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"h{i}"] if i < layers - 1 else ["y"])]
        hidden = f"h{i}"
    graph = helper.make_graph(
        nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}")
    partial.write_bytes(model.SerializeToString())
    partial.rename(out)
    return out
