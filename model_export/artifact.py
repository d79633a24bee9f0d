"""Write one exported version: build/models/<name>/<version>/{model.onnx, manifest.json,
examples.json}.

Shared by the seed exporters and `model_registry.add`: the manifest's signature is read from the
graph itself, and the written manifest is read back with the serving library's own loader, so a
version that the API could not load is never left on disk.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import model_api.examples as model_examples
import numpy as np
import onnx
from model_api.datatypes import ONNX_ELEMENT_TYPES
from model_api.explainers import ExplanationError, load_explainer
from model_api.integrity import IntegrityError, read_verified, sha256_of
from model_api.manifest import MANIFEST_FILE, Manifest, ManifestError, load_manifest

MODEL_FILE = "model.onnx"
PLATFORM = "onnxruntime_onnx"


class SignatureError(ValueError):
    """The graph has an input or output the serving code cannot handle; the message says which."""


def tensor_spec(value: onnx.ValueInfoProto) -> dict[str, Any]:
    """The manifest entry of one graph input/output: unknown or symbolic dims become -1."""
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise SignatureError(
            f"{value.name!r} is a {kind or 'untyped'} value, not a tensor: only tensors can be "
            "served (a scikit-learn ZipMap output is a sequence of maps; convert with zipmap=False)"
        )
    tensor = value.type.tensor_type
    datatype = ONNX_ELEMENT_TYPES.get(tensor.elem_type)
    if datatype is None:
        type_name = onnx.TensorProto.DataType.Name(tensor.elem_type)
        raise SignatureError(f"{value.name!r} has element type {type_name}, which the API cannot "
                             f"serve; supported: {sorted(set(ONNX_ELEMENT_TYPES.values()))}")
    if not tensor.HasField("shape"):
        raise SignatureError(f"{value.name!r} has no known rank: the API needs a fixed number "
                             "of dimensions")
    shape = [dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else -1
             for dim in tensor.shape.dim]
    if not shape:
        raise SignatureError(f"{value.name!r} is a scalar: the API needs a batch dimension first")
    shape[0] = -1  # the first dimension is the batch
    return {"name": value.name, "datatype": datatype, "shape": shape}


def signature(model: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs of the graph as manifest entries (initializers are not inputs)."""
    initializers = {init.name for init in model.graph.initializer}
    return {
        "inputs": [tensor_spec(v) for v in model.graph.input if v.name not in initializers],
        "outputs": [tensor_spec(v) for v in model.graph.output],
    }


def canonical_bytes(model: onnx.ModelProto) -> bytes:
    """The serialised model with its opset imports sorted by domain.

    skl2onnx collects the domains in a set, so their order (and the file's sha256) would change
    from one process to the next; sorted, the same training gives the same bytes.
    """
    imports = sorted(model.opset_import, key=lambda opset: opset.domain)
    del model.opset_import[:]
    model.opset_import.extend(imports)
    return model.SerializeToString()


def write_version(version_dir: Path, model_bytes: bytes, manifest: dict[str, Any],
                  examples: Mapping[str, np.ndarray] | None = None,
                  files: Mapping[str, bytes] | None = None) -> Manifest:
    """Write model.onnx, manifest.json (sha256 and signature filled in), examples.json (the
    given example inputs, else ones built from the signature) and `files` (by name: the
    explanation's background rows) all at once.

    Raises ExamplesError when `examples` do not fit the signature, ManifestError when the
    explanation does not load. The files are written to a sibling temporary folder that
    replaces `version_dir` only once the manifest loads, its explanation with it
    (model_api.explainers, which checks the background's sha256) and its examples, so a failed
    export never leaves a half-written version behind.    """
    model = onnx.load_from_string(model_bytes)
    document = {
        "schema_version": 1,
        "name": manifest["name"],
        "version": manifest["version"],
        "platform": PLATFORM,
        "model_file": MODEL_FILE,
        "sha256": sha256_of(model_bytes),
        **signature(model),
        **{k: v for k, v in manifest.items() if k not in ("name", "version")},
    }
    version_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version_dir.name}-", dir=version_dir.parent))
    try:
        (staging / MODEL_FILE).write_bytes(model_bytes)
        (staging / MANIFEST_FILE).write_text(json.dumps(document, indent=2) + "\n")
        for name, data in (files or {}).items():
            (staging / name).write_bytes(data)
        loaded = load_manifest(staging / MANIFEST_FILE)
        try:
            load_explainer(loaded, staging)
        except ExplanationError as exc:
            raise ManifestError(f"{version_dir}: its explanation cannot load: {exc}") from exc
        model_examples.write(staging, model_examples.check(examples, loaded.inputs)
                             if examples is not None
                             else model_examples.from_signature(loaded.inputs))
        if version_dir.exists():
            shutil.rmtree(version_dir)
        staging.rename(version_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return loaded


def read_intact(version_dir: Path) -> Manifest | None:
    """The manifest of an exported version whose model file matches its sha256, else None."""
    try:
        manifest = load_manifest(version_dir / MANIFEST_FILE)
        read_verified(version_dir / manifest.model_file, manifest.sha256)
    except (ManifestError, OSError, IntegrityError):
        return None
    return manifest
