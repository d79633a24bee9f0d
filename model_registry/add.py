"""Bring your own ONNX: serve an existing .onnx file as a version of a model (`make add-model`).

The file is checked before anything is recorded: it must be a valid ONNX model whose inputs
and outputs are tensors of datatypes the API serves, with a known rank, and it must run in
onnxruntime. Its manifest is derived from the graph, the file is copied to
build/models/<name>/<version>/ and models.yaml records where it came from with its sha256, so
`make models` can import it again (`reimport`) on a clean checkout. A version published by
`make optimize` also records a JSON file of the manifest fields its graph cannot tell (metrics,
the `optimization` section), and is the only kind of version a seed model takes from a file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError

from model_export.artifact import SignatureError, read_intact, sha256_of, signature, write_version
from model_export.seeds import RECIPES
from model_registry import registry
from model_registry.registry import ROOT, ModelEntry, RegistryError

MODELS_DIR = ROOT / "build" / "models"
# Manifest fields a version's fields file may set; the sha256 and signature always come from
# the file itself.
KEPT_FIELDS = frozenset({"labels", "task", "metrics", "description", "training", "optimization"})


class AddError(ValueError):
    """The file or the request cannot be served; the message says why."""


def read_signature(model_bytes: bytes, source: str) -> dict[str, list[dict[str, Any]]]:
    """The manifest signature of a model file, or AddError saying why it cannot be served."""
    try:
        model = onnx.load_from_string(model_bytes)
        onnx.checker.check_model(model)
    except (DecodeError, onnx.checker.ValidationError) as exc:
        raise AddError(f"{source} is not a valid ONNX model: {exc}") from exc
    external = [t.name for t in model.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise AddError(f"{source} keeps tensors in external data files ({external[:3]}); save "
                       "the model as one file (onnx.save(..., save_as_external_data=False))")
    try:
        return signature(model)
    except SignatureError as exc:
        raise AddError(f"{source}: {exc}") from exc


def smoke_run(model_bytes: bytes, source: str) -> None:
    """Load the model in onnxruntime and run it on one row of zeros (empty strings for BYTES)."""
    model = onnx.load_from_string(model_bytes)
    initializers = {init.name for init in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        shape = [dim.dim_value if dim.dim_value > 0 else 1 for dim in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        feeds[value.name] = (np.full(shape, "", dtype=object) if dtype.kind == "O"
                             else np.zeros(shape, dtype=dtype))
    try:
        session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        session.run(None, feeds)
    except Exception as exc:  # onnxruntime raises its own unexported exception types
        raise AddError(f"{source} does not run in onnxruntime on a dummy input: {exc}") from exc


def read_fields(path: Path) -> dict[str, Any]:
    """The manifest fields kept in `path`: a JSON object with keys of KEPT_FIELDS, or AddError."""
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AddError(f"cannot read manifest fields from {path}: {exc}") from exc
    if not isinstance(fields, dict) or not set(fields) <= KEPT_FIELDS:
        raise AddError(f"{path}: give a JSON object with keys among {sorted(KEPT_FIELDS)}")
    return fields


def import_version(entry: ModelEntry, version: str, model_bytes: bytes, source: str,
                   models_dir: Path, fields: Mapping[str, Any] | None = None) -> None:
    """Check the file and write build/models/<name>/<version>/ with its manifest (`fields`
    override what is derived: see KEPT_FIELDS)."""
    read_signature(model_bytes, source)
    smoke_run(model_bytes, source)
    manifest: dict[str, Any] = {"name": entry.name, "version": version}
    if entry.labels:
        manifest.update(labels=list(entry.labels), task="classification")
    manifest.update(
        description=f"Added with `make add-model` from {source}.",
        source={"file": source, "producer": _producer(model_bytes)})
    manifest.update(fields or {})
    write_version(models_dir / entry.name / version, model_bytes, manifest)


def _producer(model_bytes: bytes) -> str:
    model = onnx.load_from_string(model_bytes)
    return f"{model.producer_name} {model.producer_version}".strip() or "unknown"


def recorded_path(onnx_path: Path) -> str:
    """How models.yaml records the file: relative to the repository when inside it."""
    resolved = onnx_path.resolve()
    if resolved.is_relative_to(ROOT / "build"):
        raise AddError(f"{onnx_path} is under build/, which `make clean` deletes; keep the file "
                       "outside build/ so `make models` can import it again")
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(resolved)


def next_version(entry: ModelEntry | None) -> str:
    if entry is None:
        return "1"
    numbers = [int(v) for v in entry.versions if v.isdigit()]
    if not numbers:
        raise AddError(f"{entry.name}: its versions {entry.versions} are not numbers; "
                       "give the new one with --version")
    return str(max(numbers) + 1)


def add(name: str, onnx_path: Path, version: str | None = None, labels: list[str] | None = None,
        make_current: bool = False, registry_path: Path = registry.REGISTRY,
        models_dir: Path = MODELS_DIR, fields: Path | None = None) -> ModelEntry:
    """Serve `onnx_path` as `name` (version `version`, or the next number); returns the entry.

    `fields` is a JSON file of manifest fields (KEPT_FIELDS) recorded with the file; a seed model
    takes a version from a file only when its fields carry an `optimization` section.
    """
    entries = registry.load(registry_path)
    existing = next((e for e in entries if e.name == name), None)
    kept = read_fields(fields) if fields is not None else None
    seed = (existing is not None and existing.source == "seed") or name in {n for n, _ in RECIPES}
    if seed and (existing is None or "optimization" not in (kept or {})):
        raise AddError(f"{name} is a seed model trained by model_export/; pick another name "
                       "(`make optimize` alone adds versions to it)")
    if labels is not None and (not all(labels) or len(set(labels)) != len(labels)):
        raise AddError(f"labels {labels}: give distinct, non-empty names (labels[i] names class i)")
    try:
        model_bytes = onnx_path.read_bytes()
    except OSError as exc:
        raise AddError(f"cannot read {onnx_path}: {exc}") from exc
    version = version or next_version(existing)
    record = {"path": recorded_path(onnx_path), "sha256": sha256_of(model_bytes)}
    if fields is not None:
        record["fields"] = recorded_path(fields)
    if existing is None:
        entry = ModelEntry(name, "onnx", [version], version, files={version: record},
                           labels=labels)
    elif version in existing.versions:
        if existing.files[version]["sha256"] != record["sha256"]:
            raise AddError(f"{name} version {version} already exists with a different file "
                           f"({existing.files[version]['path']}); add it as a new version")
        entry = replace(existing, files={**existing.files, version: record},
                        labels=labels or existing.labels)
    else:
        entry = replace(existing, versions=[*existing.versions, version],
                        files={**existing.files, version: record},
                        labels=labels or existing.labels)
    if make_current:
        entry = replace(entry, current=version)
    try:
        registry.check(entry)
    except RegistryError as exc:
        raise AddError(str(exc)) from exc
    import_version(entry, version, model_bytes, record["path"], models_dir, kept)
    registry.save([entry if e.name == name else e for e in entries]
                  + ([entry] if existing is None else []), registry_path)
    return entry


def reimport(entry: ModelEntry, models_dir: Path = MODELS_DIR) -> list[str]:
    """Copy each recorded file of an entry into models_dir again; the versions written.

    A version already there with the recorded sha256 and labels is left alone; a source file
    whose sha256 no longer matches models.yaml is refused, never served. A seed model's trained
    versions have no file: model_export trains them.
    """
    written = []
    for version in entry.versions:
        record = entry.files.get(version)
        if record is None:
            continue
        kept = read_fields(_resolve(record["fields"])) if "fields" in record else None
        labels = (kept or {}).get("labels", entry.labels)
        if _is_current(models_dir / entry.name / version, record["sha256"], labels):
            continue
        source = _resolve(record["path"])
        try:
            model_bytes = source.read_bytes()
        except OSError as exc:
            raise AddError(f"{entry.name} version {version}: cannot read {record['path']} "
                           f"recorded in models.yaml: {exc}") from exc
        if sha256_of(model_bytes) != record["sha256"]:
            raise AddError(f"{entry.name} version {version}: {record['path']} changed since it "
                           "was added (sha256 differs from models.yaml); add it as a new version")
        import_version(entry, version, model_bytes, record["path"], models_dir, kept)
        written.append(version)
    return written


def _resolve(recorded: str) -> Path:
    """A path as models.yaml records it (relative to the repository, or absolute)."""
    path = Path(recorded)
    return path if path.is_absolute() else ROOT / path


def _is_current(version_dir: Path, sha256: str, labels: list[str] | None) -> bool:
    manifest = read_intact(version_dir)
    return (manifest is not None and manifest.sha256 == sha256
            and manifest.labels == (tuple(labels) if labels else None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="model name: lower-case words and hyphens")
    parser.add_argument("--onnx", required=True, type=Path, help="the .onnx file to serve")
    parser.add_argument("--version", help="version to add (default: 1, or the next number)")
    parser.add_argument("--labels", help="class names, comma-separated: labels[i] names class i")
    parser.add_argument("--current", action="store_true",
                        help="make this version the one the unversioned routes serve")
    args = parser.parse_args(argv)
    labels = [label.strip() for label in args.labels.split(",")] if args.labels else None
    try:
        entry = add(args.name, args.onnx, args.version, labels, args.current)
    except AddError as exc:
        print(f"add-model refused: {exc}", file=sys.stderr)
        return 2
    print(f"added {entry.name}: versions {entry.versions}, current {entry.current}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
