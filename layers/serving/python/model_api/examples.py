"""A model's example inputs, which travel with it: `<version>/examples.json` beside its manifest.

A seed model's examples are real held-back rows of its dataset (written at export); an added
model's are the rows its owner gave (`make add-model … EXAMPLES=rows.npz`), else values built
from its signature for every input and datatype (`from_signature`). Everything that needs an
input for a model — the events/ fixtures, `make bench`, `python -m local_api.batch.sample`, the
tests — reads them here and names no model. The request builders turn them into the
protocol's JSON and binary tensor bodies, with the same encoder the server answers with
(`model_api.binary`).

File format: `{"inputs": {"<input name>": <nested list, rows first>}}`, every input with the
same number of rows (BYTES as strings, BOOL as true/false).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from model_api.binary import encode_tensor
from model_api.datatypes import BY_NAME, BYTES, numpy_dtype
from model_api.manifest import Manifest, TensorSpec

EXAMPLES_FILE = "examples.json"
EXAMPLE_ROWS = 2  # rows built from a signature
Examples = dict[str, np.ndarray]


class ExamplesError(ValueError):
    """Example inputs that do not fit the model's signature; the message says which and why."""


def from_signature(inputs: Sequence[TensorSpec], rows: int = EXAMPLE_ROWS) -> Examples:
    """`rows` rows for every input: a variable dimension (-1) becomes 1, values are small and
    distinct per element (0, 1, 2, … cast to the datatype: BOOL alternates, BYTES "example-i")."""
    built: Examples = {}
    for spec in inputs:
        shape = (rows, *(dim if dim > 0 else 1 for dim in spec.shape[1:]))
        count = int(np.prod(shape))
        if spec.datatype == BYTES:
            values = np.array([f"example-{i}" for i in range(count)], dtype=object)
        elif BY_NAME[spec.datatype].kind == "bool":
            values = np.arange(count) % 2 == 1
        else:
            values = (np.arange(count) % 100).astype(numpy_dtype(spec.datatype))
        built[spec.name] = values.reshape(shape)
    return built


def check(examples: Mapping[str, np.ndarray], inputs: Sequence[TensorSpec]) -> Examples:
    """`examples` cast to the inputs' datatypes; ExamplesError when an input is missing or
    unknown, a shape does not fit its spec, or the inputs' row counts differ."""
    names = [spec.name for spec in inputs]
    if set(examples) != set(names):
        raise ExamplesError(f"examples give inputs {sorted(examples)}; the model takes {names}")
    checked: Examples = {}
    for spec in inputs:
        array = np.asarray(examples[spec.name])
        fits = array.ndim == len(spec.shape) and all(
            want in (-1, got) for want, got in zip(spec.shape[1:], array.shape[1:], strict=True))
        if not fits or array.shape[0] < 1:
            raise ExamplesError(f"example input {spec.name!r} has shape {list(array.shape)}; "
                                f"the model takes {list(spec.shape)} with at least one row")
        try:
            checked[spec.name] = (array.astype(str).astype(object) if spec.datatype == BYTES
                                  else array.astype(numpy_dtype(spec.datatype)))
        except (TypeError, ValueError) as exc:
            raise ExamplesError(f"example input {spec.name!r} is not {spec.datatype}: {exc}") \
                from exc
    if len({array.shape[0] for array in checked.values()}) > 1:
        raise ExamplesError("every example input needs the same number of rows")
    return checked


def plain(array: np.ndarray) -> list[object]:
    """`array` as nested lists for JSON; FP16 and FP32 values in their shortest decimal form
    (17.99, not float32's 17.989999771118164), which parses back to the same value."""
    if array.dtype.kind == "f" and array.dtype.itemsize < 8:
        shortest = [float(str(value)) for value in array.ravel()]
        array = np.array(shortest, dtype=np.float64).reshape(array.shape)
    result: list[object] = array.tolist()
    return result


def to_document(examples: Mapping[str, np.ndarray]) -> dict[str, object]:
    """The examples.json document of `examples`."""
    return {"inputs": {name: plain(array) for name, array in examples.items()}}


def write(version_dir: Path, examples: Mapping[str, np.ndarray]) -> None:
    (version_dir / EXAMPLES_FILE).write_text(json.dumps(to_document(examples)) + "\n")


def load(version_dir: Path, manifest: Manifest) -> Examples:
    """The examples of an exported version, as arrays of its inputs' dtypes; the signature's
    own when the version has no examples file (ExamplesError when the file does not fit)."""
    path = version_dir / EXAMPLES_FILE
    if not path.exists():
        return from_signature(manifest.inputs)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        arrays = {name: np.array(value, dtype=object if _is_bytes(manifest, name) else None)
                  for name, value in document["inputs"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ExamplesError(f"{path}: cannot read examples: {exc}") from exc
    return check(arrays, manifest.inputs)


def _is_bytes(manifest: Manifest, name: str) -> bool:
    spec = manifest.input(name)
    return spec is not None and spec.datatype == BYTES


def json_request(manifest: Manifest, examples: Mapping[str, np.ndarray],
                 request_id: str = "example-1") -> bytes:
    """An inference request with `examples` as JSON tensors."""
    return json.dumps({"id": request_id, "inputs": [
        {"name": spec.name, "shape": list(examples[spec.name].shape), "datatype": spec.datatype,
         "data": plain(examples[spec.name])} for spec in manifest.inputs]}).encode()


def binary_request(manifest: Manifest, examples: Mapping[str, np.ndarray],
                   request_id: str = "example-binary") -> tuple[bytes, int]:
    """(body, JSON header length) of a binary tensor data request with `examples`, asking for
    binary outputs, as Triton's client sends it."""
    blobs = [encode_tensor(examples[spec.name], spec.datatype) for spec in manifest.inputs]
    header = json.dumps({"id": request_id, "inputs": [
        {"name": spec.name, "shape": list(examples[spec.name].shape), "datatype": spec.datatype,
         "parameters": {"binary_data_size": len(blob)}}
        for spec, blob in zip(manifest.inputs, blobs, strict=True)],
        "parameters": {"binary_data_output": True}}).encode()
    return header + b"".join(blobs), len(header)
