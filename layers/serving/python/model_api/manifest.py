"""`manifest.json`: the exported model's identity, signature and provenance, validated on load.

The manifest is the source of truth for what a model accepts and returns (docs/architecture.md);
everything the service checks a request against comes from here, so a malformed manifest is
refused with a message naming the file and the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from model_api.datatypes import DATATYPES

SCHEMA_VERSION = 1
# Its file name in every exported version folder, beside the model file it names.
MANIFEST_FILE = "manifest.json"
# The manifest's field that says a version's model file is in the store (model_export/artifact;
# model_api.store parses it): only a manifest holding it makes a load import that module.
STORE_FIELD = "store"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """The manifest cannot be read or breaks the format of docs/architecture.md."""


class TensorSpec(msgspec.Struct, frozen=True):
    """One input or output of the signature; -1 in `shape` is a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> dict[str, Any]:
        """The protocol's tensor metadata object."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class Manifest(msgspec.Struct, frozen=True):
    name: str
    version: str
    platform: str
    model_file: str
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...] | None = None
    task: str | None = None
    description: str | None = None
    metrics: Mapping[str, Any] = msgspec.field(default_factory=dict)
    # Provenance fields (training, parity, ...) kept as exported, for tools that report them.
    extra: Mapping[str, Any] = msgspec.field(default_factory=dict)

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.outputs if spec.name == name), None)


def load_manifest(path: Path) -> Manifest:
    """Read and validate `path`; ManifestError says which file and field is wrong."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc}") from exc
    try:
        return parse_manifest(document)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from None


def parse_manifest(document: Any) -> Manifest:
    """Validate a decoded manifest document."""
    if not isinstance(document, dict):
        raise ManifestError("manifest must be a JSON object")
    if document.get("schema_version") != SCHEMA_VERSION:
        raise ManifestError(
            f"schema_version is {document.get('schema_version')!r}; this library reads "
            f"{SCHEMA_VERSION}"
        )
    model_file = _string(document, "model_file")
    if Path(model_file).name != model_file or model_file in (".", ".."):
        raise ManifestError(f"model_file {model_file!r} must be a file name in the version folder")
    sha256 = _string(document, "sha256")
    if not _SHA256.fullmatch(sha256):
        raise ManifestError("sha256 must be 64 lowercase hex digits")
    labels = document.get("labels")
    if labels is not None and not (
        isinstance(labels, list) and all(isinstance(label, str) for label in labels)
    ):
        raise ManifestError("labels must be a list of strings")
    metrics = document.get("metrics", {})
    if not isinstance(metrics, dict):
        raise ManifestError("metrics must be an object")
    known = {"schema_version", "name", "version", "platform", "model_file", "sha256", "inputs",
             "outputs", "labels", "task", "description", "metrics"}
    return Manifest(
        name=_string(document, "name"),
        version=_string(document, "version"),
        platform=_string(document, "platform"),
        model_file=model_file,
        sha256=sha256,
        inputs=_tensors(document, "inputs"),
        outputs=_tensors(document, "outputs"),
        labels=tuple(labels) if labels is not None else None,
        task=_optional_string(document, "task"),
        description=_optional_string(document, "description"),
        metrics=metrics,
        extra={key: value for key, value in document.items() if key not in known},
    )


def _string(document: Mapping[str, Any], key: str) -> str:
    value = document.get(key)
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{key} must be a non-empty string, got {value!r}")
    return value


def _optional_string(document: Mapping[str, Any], key: str) -> str | None:
    return None if document.get(key) is None else _string(document, key)


def _tensors(document: Mapping[str, Any], key: str) -> tuple[TensorSpec, ...]:
    items = document.get(key)
    if not isinstance(items, list) or not items:
        raise ManifestError(f"{key} must be a non-empty list of tensors")
    specs = tuple(_tensor(item, f"{key}[{index}]") for index, item in enumerate(items))
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ManifestError(f"{key} has duplicate names: {names}")
    return specs


def _tensor(item: Any, where: str) -> TensorSpec:
    if not isinstance(item, dict):
        raise ManifestError(f"{where} must be an object with name, datatype and shape")
    datatype = item.get("datatype")
    if datatype not in DATATYPES:
        raise ManifestError(f"{where}.datatype is {datatype!r}; expected one of {DATATYPES}")
    shape = item.get("shape")
    if not isinstance(shape, list) or not shape or not all(
        type(dim) is int and dim >= -1 for dim in shape
    ):
        # The first dimension is the batch: every tensor has at least one.
        raise ManifestError(
            f"{where}.shape must be a non-empty list of integers >= -1, got {shape!r}"
        )
    return TensorSpec(name=_string(item, "name"), datatype=datatype, shape=tuple(shape))
