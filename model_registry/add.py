"""Bring your own ONNX: serve an existing .onnx file as a version of a model (`make add-model`).

The file is checked before anything is recorded: it must be a valid ONNX model whose inputs
and outputs are tensors of datatypes the API serves, with a known rank, and it must run in
onnxruntime. Its manifest is derived from the graph; the file is kept in the repository at
model_store/<name>/<version>/model.onnx and models.yaml records that path with its sha256, so
`make models` exports it again (`reimport`) on a fresh clone. The whole change (registry,
template, events, OpenAPI, export) is computed first and written only if every step passed
(`model_registry.changes`). A version published by `make optimize` also keeps a JSON file of
the manifest fields its graph cannot tell (metrics, the `optimization` section) beside it.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError
from model_api.datatypes import numpy_dtype
from model_api.examples import EXAMPLE_ROWS, EXAMPLES_FILE, Examples, ExamplesError
from model_api.examples import check as check_examples
from model_api.explainers.base import NONE
from model_api.explainers.kernel_shap import KERNEL_SHAP
from model_api.integrity import IntegrityError, read_verified, sha256_of
from model_api.manifest import STORE_FIELD, ManifestError, TensorSpec
from model_api.monitoring.baseline import BASELINE_FILE, manifest_section
from model_api.names import numbered

from model_export import explanation
from model_export.artifact import (
    MODEL_FILE,
    SignatureError,
    read_intact,
    signature,
    write_version,
)
from model_export.export import baseline_file, graph_vocabulary
from model_export.seeds import RECIPES
from model_export.text import UNICODE_TEXTS
from model_export.weights import DATA_FILE, WeightsError, split, store_section
from model_registry import placement, registry
from model_registry.changes import derived, staging
from model_registry.registry import PROJECT, ROOT, STORE, ModelEntry, Project, RegistryError
from model_registry.sizing import Sizing, SizingError, measure

# Manifest fields a version's fields file may set; the sha256 and signature always come from
# the file itself.
KEPT_FIELDS = frozenset({"labels", "task", "metrics", "description", "training", "optimization",
                         "feature_names"})
# A tabular input's column names, which explanations and drift reports say: in the manifest
# {"<input>": [a name per column]}; in a fields file also the list add-model was given
FEATURE_NAMES = "feature_names"
FIELDS_STORED = "fields.json"  # model_store/<name>/<version>/fields.json


class AddError(ValueError):
    """The file or the request cannot be served; the message says why."""


def external_location(model_bytes: bytes, source: str) -> str | None:
    """The one file a model's graph keeps its tensors in (ONNX's external-data format, for a
    model over 2 GiB), or None (one file, or not ONNX at all); AddError when it names several
    or one outside its folder."""
    try:
        model = onnx.load_from_string(model_bytes)
    except DecodeError:
        return None  # read_signature says why it cannot be served
    locations = {entry.value for tensor in model.graph.initializer
                 if tensor.data_location == onnx.TensorProto.EXTERNAL
                 for entry in tensor.external_data if entry.key == "location"}
    if not locations:
        return None
    (location, *others) = sorted(locations)
    if others or Path(location).name != location or location in RESERVED_NAMES:
        raise AddError(f"{source} keeps its tensors in {sorted(locations)}; save them as one "
                       "file beside it (onnx.save_model(model, path, save_as_external_data="
                       'True, all_tensors_to_one_file=True, location="model.onnx.data"))')
    return location


# Files of a version folder an external-data file may not be named as.
RESERVED_NAMES = frozenset({MODEL_FILE, "manifest.json", "examples.json", "fields.json"})


def read_signature(model_bytes: bytes, source: str,
                   path: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """The manifest signature of a model file, or AddError saying why it cannot be served. A
    graph with external data is checked at `path` (its data file beside it)."""
    try:
        model = onnx.load_from_string(model_bytes)
        external = [t.name for t in model.graph.initializer
                    if t.data_location == onnx.TensorProto.EXTERNAL]
        if external and path is None:
            raise AddError(f"{source} keeps tensors in external data files ({external[:3]})")
        onnx.checker.check_model(str(path) if external else model)
    except (DecodeError, onnx.checker.ValidationError) as exc:
        raise AddError(f"{source} is not a valid ONNX model: {exc}") from exc
    try:
        return signature(model)
    except SignatureError as exc:
        raise AddError(f"{source}: {exc}") from exc


def cpu_session(model_bytes: bytes,
                external: tuple[str, bytes] | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session of `model_bytes`; `external`: its tensors' file (name, bytes)
    for a model in ONNX's external-data format (the model store's form), handed over from
    memory as the API's fallback does (copied: model_api.model.session_on_weights, which runs
    every model it can with the weights in place and the others this way, so what loads here
    loads there). Raises onnxruntime's own errors."""
    options = ort.SessionOptions()
    if external is not None:
        options.add_external_initializers_from_files_in_memory(
            [external[0]], [np.frombuffer(external[1], dtype=np.uint8)], [len(external[1])])
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def smoke_run(model_bytes: bytes, source: str,
              external: tuple[str, bytes] | None = None) -> None:
    """Load the model in onnxruntime and run it on one row of zeros (empty strings for BYTES);
    `external`: its tensors' file (name, bytes), handed over from memory (cpu_session)."""
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
        session = cpu_session(model_bytes, external)
        session.run(None, feeds)
    except Exception as exc:  # onnxruntime raises its own unexported exception types
        raise AddError(f"{source} does not run in onnxruntime on a dummy input: {exc}") from exc
    if len(feeds) == 1 and next(iter(feeds.values())).dtype.kind == "O":
        text_run(session, next(iter(feeds)), next(iter(feeds.values())).shape, source)


def text_run(session: ort.InferenceSession, name: str, shape: tuple[int, ...],
             source: str) -> None:
    """A text model (one string input of one text per row) must answer every text of
    model_export.text.UNICODE_TEXTS (accents, German, Chinese, emoji, stop words alone, empty)
    with one row each: AddError if it fails or drops or adds rows (a StringNormalizer with
    stop words drops a text that is only stop words)."""
    if any(size != 1 for size in shape[1:]):
        return  # several strings per row: no text per row to try
    texts = np.array(UNICODE_TEXTS, dtype=object).reshape(len(UNICODE_TEXTS), *shape[1:])
    try:
        outputs = session.run(None, {name: texts})
    except Exception as exc:  # onnxruntime raises its own unexported exception types
        raise AddError(f"{source} fails on texts beyond ASCII: {exc}") from exc
    wrong = [output.name for output, value in zip(session.get_outputs(), outputs, strict=True)
             if not value.shape or value.shape[0] != len(texts)]
    if wrong:
        raise AddError(f"{source} does not answer one row per text for {len(texts)} texts "
                       f"(accents, Chinese, emoji, stop words alone, empty): outputs {wrong}")


def read_fields(path: Path) -> dict[str, Any]:
    """The manifest fields kept in `path`: a JSON object with keys of KEPT_FIELDS, or AddError."""
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AddError(f"cannot read manifest fields from {path}: {exc}") from exc
    if not isinstance(fields, dict) or not set(fields) <= KEPT_FIELDS:
        raise AddError(f"{path}: give a JSON object with keys among {sorted(KEPT_FIELDS)}")
    return fields


def feature_names_field(names: list[str], inputs: list[dict[str, Any]], source: str
                        ) -> dict[str, list[str]]:
    """The manifest's `feature_names` for a model of one tabular input ([N, features], its
    width fixed): {input: names}, a name per column, in order. AddError for another signature,
    a count that is not the width, or names empty or repeated."""
    if len(inputs) != 1 or len(inputs[0]["shape"]) != 2 or inputs[0]["shape"][1] < 1:
        shapes = ", ".join(f"{spec['name']} {spec['shape']}" for spec in inputs)
        raise AddError(f"FEATURE_NAMES names the columns of a model of one input of [N, "
                       f"features]; {source}'s inputs are {shapes}")
    (spec,) = inputs
    if len(names) != spec["shape"][1]:
        raise AddError(f"FEATURE_NAMES gives {len(names)} names; input {spec['name']!r} has "
                       f"{spec['shape'][1]} columns")
    if not all(names) or len(set(names)) != len(names):
        raise AddError(f"FEATURE_NAMES {names}: give distinct, non-empty names, one per column")
    return {spec["name"]: names}


def read_background(data: bytes, source: str,
                    inputs: list[dict[str, Any]], what: str = "background"
                    ) -> dict[str, np.ndarray]:
    """Background rows for Kernel SHAP (or baseline rows) from the bytes of a .npy (a model of
    one input) or .npz (one array per input name) file, cast to each input's datatype; AddError
    saying why not."""
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AddError(f"{what} {source} is not a .npy or .npz file: {exc}") from exc
    if isinstance(loaded, np.ndarray):
        if len(inputs) != 1:
            raise AddError(f"{what} {source}: the model has {len(inputs)} inputs; give a "
                           ".npz with one array per input name")
        arrays = {inputs[0]["name"]: loaded}
    else:
        with loaded:
            arrays = {name: loaded[name] for name in loaded.files}
    dtypes = {spec["name"]: numpy_dtype(spec["datatype"]) for spec in inputs}
    try:
        return {name: array.astype(dtypes[name]) if name in dtypes and array.dtype.kind in "iuf"
                else array for name, array in arrays.items()}
    except (TypeError, ValueError) as exc:
        raise AddError(f"{what} {source}: {exc}") from exc


def import_version(entry: ModelEntry, version: str, model_bytes: bytes, source: str,
                   version_dir: Path, examples: Examples | None = None,
                   background: bytes | None = None, shown: str | None = None,
                   fields: Mapping[str, Any] | None = None, in_store: bool = False,
                   external: tuple[str, bytes] | None = None,
                   path: Path | None = None, baseline: bytes | None = None) -> None:
    """Check the file (and the background rows, if given) and write its exported version
    (manifest with its explanation, chosen from the graph by model_export.explanation;
    examples; the monitoring baseline) to `version_dir`; `source` is the stored path the
    manifest records, `shown` the name messages use, `fields` override what is derived (see
    KEPT_FIELDS). `in_store`: the version is served from the model store
    (model_registry.placement): its manifest names the object (`store`: key and bytes,
    model_api.store) and its layer leaves the file out. `external`: a model over 2 GiB, its
    tensors' file (name, bytes), kept beside the graph (always in the store); `path`: the
    graph's file on disk, its data beside it (checked there). The baseline
    (model_api.monitoring.baseline) summarises `baseline` (training rows, .npy or .npz like the
    background), else the background rows, else the examples, and the model's outputs on them.
    """
    shown = shown or source
    found = read_signature(model_bytes, shown, path)
    smoke_run(model_bytes, shown, external)
    manifest: dict[str, Any] = {"name": entry.name, "version": version}
    if entry.labels:
        manifest.update(labels=list(entry.labels), task="classification")
    manifest.update(
        description=f"Added with `make add-model` from {source}.",
        source={"file": source, "producer": _producer(model_bytes),
                **({"background_sha256": sha256_of(background)} if background else {}),
                **({"baseline_sha256": sha256_of(baseline)} if baseline else {})})
    rows = (read_background(background, shown, found["inputs"])
            if background is not None else None)
    section, files = explanation.choose(entry.name, onnx.load_from_string(model_bytes), found,
                                        rows)
    if rows is not None and section["method"] != KERNEL_SHAP:
        how = (f"is explained by {section['method']}" if section["method"] != NONE else
               f"cannot be explained: {section.get('reason', 'no method fits its inputs')}")
        raise AddError(f"background rows were given, but {shown} {how} (background rows are "
                       "for tabular models: inputs of [N, features] each)")
    if examples is None and rows is not None:  # real rows, not values made from the signature
        examples = {name: array[:EXAMPLE_ROWS] for name, array in rows.items()}
    manifest["explanation"] = section
    if in_store:
        manifest[STORE_FIELD] = store_section(
            model_bytes, external[1] if external else None,
            placement.store_key(entry.name, version),
            placement.store_key(entry.name, version, external[0]) if external else None,
            external[0] if external else DATA_FILE)
    manifest.update(fields or {})
    if isinstance(manifest.get(FEATURE_NAMES), list):  # as add-model was given them
        manifest[FEATURE_NAMES] = feature_names_field(manifest[FEATURE_NAMES], found["inputs"],
                                                      shown)
    if external is not None:
        files = {**files, external[0]: external[1]}
    words = graph_vocabulary(onnx.load_from_string(model_bytes))
    if words is not None:
        manifest["monitoring"] = {"vocabulary": words}
    if baseline is None and rows is None and examples is not None:
        try:  # the examples become the baseline: refused as write_version would refuse them
            examples = check_examples(examples, [TensorSpec(spec["name"], spec["datatype"],
                                                            tuple(spec["shape"]))
                                                 for spec in found["inputs"]])
        except ExamplesError as exc:
            raise AddError(f"{shown}: {exc}") from exc
    baseline_rows = (read_background(baseline, shown, found["inputs"], "baseline")
                     if baseline is not None else rows if rows is not None else examples)
    if baseline_rows is not None:
        files = {**files, **_baseline(manifest, model_bytes, found, baseline_rows, shown,
                                      "the baseline rows given to add-model" if baseline
                                      else "the background rows" if rows is not None
                                      else "the example rows", external)}
    try:
        write_version(version_dir, model_bytes, manifest, examples, files)
    except (ExamplesError, ManifestError) as exc:
        raise AddError(f"{shown}: {exc}") from exc


def _baseline(manifest: dict[str, Any], model_bytes: bytes,
              found: Mapping[str, list[dict[str, Any]]], rows: Mapping[str, np.ndarray],
              shown: str, what: str,
              external: tuple[str, bytes] | None = None) -> dict[str, bytes]:
    """The monitoring baseline of `rows` and of the model's outputs on them (its file by
    name); sets the manifest's `monitoring` section. AddError when the rows do not fit."""
    names = [spec["name"] for spec in found["inputs"]]
    if set(rows) != set(names):
        raise AddError(f"{what} of {shown} give inputs {sorted(rows)}; the model takes {names}")
    for spec in found["inputs"]:
        shape = list(np.shape(rows[spec["name"]]))
        wanted = spec["shape"]
        if len(shape) != len(wanted) or any(
                want not in (-1, got) for want, got in zip(wanted[1:], shape[1:], strict=True)):
            raise AddError(f"{shown}: cannot build the monitoring baseline from {what}: input "
                           f"{spec['name']!r} has shape {shape}; the model takes "
                           f"{spec['shape']}")
    feed = {spec["name"]: np.asarray(rows[spec["name"]]).astype(
                object if spec["datatype"] == "BYTES" else numpy_dtype(spec["datatype"]))
            for spec in found["inputs"]}
    try:
        session = cpu_session(model_bytes, external)
        predicted = dict(zip([o.name for o in session.get_outputs()],
                             session.run(None, feed), strict=True))
        data = baseline_file(manifest, found["inputs"], found["outputs"], feed, predicted,
                             f"{len(next(iter(feed.values())))} rows: {what}")
    except Exception as exc:  # onnxruntime raises its own unexported exception types
        raise AddError(f"{shown}: cannot build the monitoring baseline from {what}: {exc}"
                       ) from exc
    manifest["monitoring"] = {**manifest.get("monitoring", {}), **manifest_section(data)}
    return {BASELINE_FILE: data}


def _producer(model_bytes: bytes) -> str:
    model = onnx.load_from_string(model_bytes)
    return f"{model.producer_name} {model.producer_version}".strip() or "unknown"


BACKGROUND_STORED = "background"  # model_store/<name>/<version>/background.npy|.npz
BASELINE_STORED = "baseline"  # model_store/<name>/<version>/baseline.npy|.npz (training rows)


def _placement(name: str, entry: ModelEntry | None, version: str, size: int,
               wanted: str | None, project: Project,
               external: bool = False, sizing: Sizing | None = None) -> placement.Placement:
    """Where a new `version` of `size` bytes goes beside the model's other versions (their
    recorded bytes; a seed or older version's exported file size; their measured sizing), or
    AddError saying why no function can hold it. `sizing`: the new version's measured peak."""
    layer_sizes: list[int] = []
    store_sizes: list[int] = []
    store_sizings: list[Sizing | None] = []
    for other in (entry.versions if entry else []):
        if other == version:
            continue
        record = entry.files.get(other, {}) if entry else {}
        size_of = record.get("bytes")
        if size_of is None:
            exported = project.models_dir / name / other / MODEL_FILE
            size_of = exported.stat().st_size if exported.is_file() else 0
        (store_sizes if record.get("home") == placement.STORE else layer_sizes).append(
            int(size_of))
        if record.get("home") == placement.STORE:
            store_sizings.append(Sizing.from_record(record["sizing"]) if "sizing" in record
                                 else None)
    try:
        return placement.place(size, layer_sizes, store_sizes, wanted, external, sizing,
                               store_sizings)
    except placement.PlacementError as exc:
        raise AddError(f"no Lambda function can hold {name} version {version}: {exc}") from exc


def stored_path(name: str, version: str) -> str:
    """Where models.yaml records an added version's file, relative to the repository."""
    return f"{STORE}/{name}/{version}/{MODEL_FILE}"


def read_examples(path: Path) -> Examples:
    """Example inputs from a .npz (one array per input name) or a .json examples document
    (`{"inputs": {name: rows}}`, model_api.examples); AddError if unreadable."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                return {name: arrays[name] for name in arrays.files}
        if path.suffix == ".json":
            document = json.loads(path.read_text())
            return {name: np.array(rows) for name, rows in document["inputs"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AddError(f"cannot read examples from {path}: {exc}") from exc
    raise AddError(f"examples {path}: give a .npz (one array per input) or a .json file "
                   '({"inputs": {"<input>": [rows]}})')


def next_version(entry: ModelEntry | None) -> str:
    if entry is None:
        return "1"
    numbers = numbered(entry.versions)
    if not numbers:
        raise AddError(f"{entry.name}: its versions {entry.versions} are not numbers; "
                       "give the new one with --version")
    return str(numbers[-1] + 1)


def add(name: str, onnx_path: Path, version: str | None = None, labels: list[str] | None = None,
        make_current: bool = False, examples_path: Path | None = None,
        background_path: Path | None = None, fields: Path | None = None,
        project: Project = PROJECT, place: str | None = None,
        placed: list[placement.Placement] | None = None,
        baseline_path: Path | None = None, sizing_path: Path | None = None,
        feature_names: list[str] | None = None) -> ModelEntry:
    """Serve `onnx_path` as `name` (version `version`, or the next number); returns the entry.

    The file is copied to model_store/<name>/<version>/model.onnx (with its examples and its
    background rows: `background_path`, .npy or .npz by input name, training rows for Kernel
    SHAP), recorded in models.yaml with its sha256, exported to build/models, and its group's
    stack (stacks/models-<group>.yaml, the first group with room), template.yaml, the model
    catalog, its events/ and docs/openapi.json are rendered again: the other models' files are
    not touched, so adding a model costs the same however many exist. Every check and render
    runs first: AddError (with the reason) leaves every file as it was. A version of a seed model
    may be added from a file too. `fields` is a JSON file of manifest fields (KEPT_FIELDS: what
    `make optimize` measured) kept beside the file. Its size decides where the version is
    served from (model_registry.placement: its layer, or the model store; `place` forces one);
    the decision is appended to `placed` when given. A version in the store is loaded in a
    fresh process and runs a sizing request (`sizing_path`: rows, .npz by input name; else the
    default worst case, model_registry.sizing): its function is sized from the measured peak,
    recorded in models.yaml (files[version].sizing). A version no Lambda function can hold is
    refused (AddError). `feature_names`: the names of a tabular input's columns, in order,
    kept with the version's fields (explanations' summaries and drift reports say them).
    """
    entries = registry.load(project.registry)
    existing = next((e for e in entries if e.name == name), None)
    kept = read_fields(fields) if fields is not None else None
    if existing is None and name in {n for n, _ in RECIPES}:
        raise AddError(f"{name} is a seed model trained by model_export/; pick another name")
    if labels is not None and (not all(labels) or len(set(labels)) != len(labels)):
        raise AddError(f"labels {labels}: give distinct, non-empty names (labels[i] names class i)")
    try:
        model_bytes = onnx_path.read_bytes()
    except OSError as exc:
        raise AddError(f"cannot read {onnx_path}: {exc}") from exc
    location = external_location(model_bytes, str(onnx_path))
    external = None
    if location is not None:
        try:
            external = (location, (onnx_path.parent / location).read_bytes())
        except OSError as exc:
            raise AddError(f"cannot read {location}, the file of {onnx_path}'s tensors beside "
                           f"it: {exc}") from exc
    if feature_names is not None:  # (checked against the signature by import_version)
        kept = {**(kept or {}), FEATURE_NAMES: feature_names}
    examples = read_examples(examples_path) if examples_path is not None else None
    asked_version = version
    version = version or next_version(existing)
    size = len(model_bytes) + (len(external[1]) if external else 0)
    given_external = external is not None
    where = _placement(name, existing, version, size, place, project, given_external)
    if where.home == placement.STORE:
        model_bytes, external = store_form(model_bytes, external, str(onnx_path))
        size = len(model_bytes) + (len(external[1]) if external else 0)
    record: dict[str, Any] = {"path": stored_path(name, version),
                              "sha256": sha256_of(model_bytes)}
    if where.home == placement.STORE:
        record.update(home=placement.STORE, bytes=size)
    if external is not None:
        record.update(data=str(Path(record["path"]).with_name(external[0])),
                      data_sha256=sha256_of(external[1]))
    background = _rows_to_store(record, "background", BACKGROUND_STORED, background_path)
    baseline = _rows_to_store(record, "baseline", BASELINE_STORED, baseline_path)
    if kept is not None:
        earlier = existing.files.get(version, {}).get("fields") if existing else None
        if earlier:  # the same version again: what its fields file holds stays
            kept = {**read_fields(project.root / earlier), **kept}
        record["fields"] = str(Path(record["path"]).with_name(FIELDS_STORED))
    same = [v for v, f in (existing.files.items() if existing else ()) if f.get("sha256")
            == record["sha256"] and v != version]
    if asked_version is None and same:  # the same command run twice, most likely
        raise AddError(f"{onnx_path} is {name} version {same[0]} already (the same sha256): "
                       f"nothing to add; VERSION={same[0]} records what this add brings "
                       "(labels, examples, background rows) for it, and VERSION=<new> adds the "
                       "same file as another version on purpose")
    if existing is None:
        entry = ModelEntry(name, "onnx", [version], version, files={version: record},
                           labels=labels, group=registry.free_group(entries))
    elif version in existing.versions:
        if existing.files.get(version, {}).get("sha256") != record["sha256"]:
            what = existing.files[version]["path"] if version in existing.files else "its recipe"
            raise AddError(f"{name} version {version} already exists with a different file "
                           f"({what}); add it as a new version")
        # The same file again: what this add brings (background rows, kept fields) is
        # recorded for that version, never dropped
        brought = {key: value for key, value in record.items() if key not in ("path", "sha256")}
        entry = replace(existing, labels=labels or existing.labels,
                        files={**existing.files, version: {**existing.files[version],
                                                           **brought}})
    else:
        entry = replace(existing, versions=[*existing.versions, version],
                        files={**existing.files, version: record},
                        labels=labels or existing.labels or _current_labels(existing, project))
    if make_current:
        entry = replace(entry, current=version)
    try:
        registry.check(entry)
    except RegistryError as exc:
        raise AddError(str(exc)) from exc
    new_entries = ([entry if e.name == name else e for e in entries]
                   + ([entry] if existing is None else []))
    staged_root = staging(project)
    try:
        staged = staged_root / name / version
        import_version(entry, version, model_bytes, record["path"], staged, examples,
                       background, shown=str(onnx_path), fields=kept,
                       in_store=record.get("home") == placement.STORE, external=external,
                       path=onnx_path, baseline=baseline)
        if where.home == placement.STORE:
            # Measured, not guessed: its function is sized from the peak of a fresh process
            # that loads it as the function does and runs the sizing request
            try:
                sizing = measure(staged, sizing_path)
            except SizingError as exc:
                raise AddError(f"{name} version {version}: measuring its memory: {exc}"
                               ) from exc
            where = _placement(name, existing, version, size, place, project,
                               given_external, sizing)
            entry = replace(entry, files={**entry.files, version: {
                **entry.files[version], "sizing": sizing.record()}})
            new_entries = [entry if e.name == name else e for e in new_entries]

        def locate(model: str, wanted: str) -> Path:
            return staged if (model, wanted) == (name, version) else \
                project.models_dir / model / wanted

        try:
            change = derived(project, new_entries, locate, touched=[entry])
        except (ValueError, OSError, SystemExit) as exc:
            raise AddError(f"{name} version {version} cannot be served: {exc}") from exc
        stored = project.root / record["path"]
        change.writes[stored] = model_bytes
        if examples is not None:
            change.writes[stored.with_name(EXAMPLES_FILE)] = (staged / EXAMPLES_FILE).read_text()
        if background is not None:
            change.writes[project.root / record["background"]] = background
        if external is not None:
            change.writes[project.root / record["data"]] = external[1]
        if baseline is not None:
            change.writes[project.root / record["baseline"]] = baseline
        if kept is not None:
            change.writes[project.root / record["fields"]] = json.dumps(kept, indent=2) + "\n"
        change.moves[staged] = project.models_dir / name / version
        change.apply()
    finally:
        shutil.rmtree(staged_root, ignore_errors=True)
    if placed is not None:
        placed.append(where)
    return entry


def store_form(model_bytes: bytes, external: tuple[str, bytes] | None, source: str
               ) -> tuple[bytes, tuple[str, bytes] | None]:
    """A version placed in the model store as the store keeps it (model_export.weights): its
    graph and the file of its weights (DATA_FILE, bytes), which its function runs on in place
    (1 x its size in memory). A model without a tensor large enough to move stays one file; one
    that is not ONNX is left for read_signature to refuse. AddError when its tensors cannot be
    laid out."""
    try:
        graph, data = split(model_bytes, external[1] if external else None)
    except DecodeError:
        return model_bytes, external
    except WeightsError as exc:
        raise AddError(f"{source}: {exc}") from exc
    return (graph, (DATA_FILE, data)) if data else (model_bytes, external)


def _current_labels(entry: ModelEntry, project: Project) -> list[str] | None:
    """A seed model's class labels, from its current exported version (a version added from a
    file serves the same classes unless told otherwise)."""
    manifest = read_intact(project.models_dir / entry.name / entry.current)
    return list(manifest.labels) if manifest and manifest.labels else None


def reimport(entry: ModelEntry, models_dir: Path = PROJECT.models_dir,
             root: Path = ROOT) -> list[str]:
    """Export each version recorded with a file (models.yaml `files`) into models_dir again, from
    model_store/; the versions written.

    A version already there with the recorded sha256 and labels is left alone; a stored file
    whose sha256 no longer matches models.yaml is refused, never served.
    """
    written = []
    for version, record in entry.files.items():
        kept = read_fields(root / record["fields"]) if "fields" in record else None
        labels = (kept or {}).get("labels", entry.labels)
        if _is_current(models_dir / entry.name / version, record, labels):
            continue
        source = root / record["path"]
        try:
            model_bytes = read_verified(source, record["sha256"])
        except OSError as exc:
            raise AddError(f"{entry.name} version {version}: cannot read {record['path']} "
                           f"recorded in models.yaml: {exc}") from exc
        except IntegrityError:
            raise AddError(f"{entry.name} version {version}: {record['path']} changed since it "
                           "was added (sha256 differs from models.yaml); add it as a new "
                           "version") from None
        stored_examples = source.with_name(EXAMPLES_FILE)
        examples = read_examples(stored_examples) if stored_examples.exists() else None
        external = None
        if "data" in record:
            try:
                external = (Path(record["data"]).name,
                            read_verified(root / record["data"], record.get("data_sha256")))
            except (OSError, IntegrityError) as exc:
                raise AddError(f"{entry.name} version {version}: {record['data']} recorded in "
                               f"models.yaml cannot be read or changed: {exc}") from None
        import_version(entry, version, model_bytes, record["path"],
                       models_dir / entry.name / version, examples,
                       _recorded_rows(entry, version, "background", root), fields=kept,
                       in_store=record.get("home") == placement.STORE, external=external,
                       path=source, baseline=_recorded_rows(entry, version, "baseline", root))
        written.append(version)
    return written


def _rows_to_store(record: dict[str, Any], kind: str, stored: str,
                   path: Path | None) -> bytes | None:
    """The bytes of the rows file `path` (None: none given), recorded in the version's
    models.yaml `record` as `kind` (its stored path, named `stored` + the file's suffix, and
    `kind`_sha256). AddError when it cannot be read."""
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AddError(f"cannot read {path}: {exc}") from exc
    record.update({kind: str(Path(record["path"]).with_name(stored + path.suffix)),
                   f"{kind}_sha256": sha256_of(data)})
    return data


def _recorded_rows(entry: ModelEntry, version: str, kind: str,
                   root: Path = ROOT) -> bytes | None:
    """The rows models.yaml records for a version (`kind`: "background" or "baseline"),
    checked against their sha256."""
    record = entry.files[version]
    if kind not in record:
        return None
    try:
        return read_verified(root / record[kind], record.get(f"{kind}_sha256"))
    except OSError as exc:
        raise AddError(f"{entry.name} version {version}: cannot read the {kind} "
                       f"{record[kind]} recorded in models.yaml: {exc}") from exc
    except IntegrityError:
        raise AddError(f"{entry.name} version {version}: {record[kind]} changed since "
                       "it was added (sha256 differs from models.yaml); add a new version"
                       ) from None


def _is_current(version_dir: Path, record: dict[str, str], labels: list[str] | None) -> bool:
    manifest = read_intact(version_dir)
    return (manifest is not None and manifest.sha256 == record["sha256"]
            and manifest.labels == (tuple(labels) if labels else None)
            and manifest.extra.get("source", {}).get("background_sha256")
            == record.get("background_sha256")
            and (manifest.extra.get("store") or {}).get("data", {}).get("sha256")
            == record.get("data_sha256")
            and manifest.extra.get("source", {}).get("baseline_sha256")
            == record.get("baseline_sha256"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="model name: lower-case words and hyphens")
    parser.add_argument("--onnx", required=True, type=Path, help="the .onnx file to serve")
    parser.add_argument("--version", help="version to add (default: 1, or the next number)")
    parser.add_argument("--labels", help="class names, comma-separated: labels[i] names class i")
    parser.add_argument("--examples", type=Path,
                        help="example inputs: .npz (one array per input) or .json")
    parser.add_argument("--background", type=Path,
                        help="training rows for Kernel SHAP explanations of a tabular model: "
                             ".npy [rows, features], or .npz with one array per input name")
    parser.add_argument("--baseline", type=Path,
                        help="training rows for the monitoring baseline (README 'Monitoring'): "
                             ".npy or .npz with one array per input name; default: the "
                             "background rows, else the examples")
    parser.add_argument("--feature-names",
                        help="a tabular model's column names, comma-separated, in order: its "
                             "explanations and drift reports name them")
    parser.add_argument("--current", action="store_true",
                        help="make this version the one the unversioned routes serve")
    parser.add_argument("--place", choices=placement.HOMES,
                        help="serve it from its layer or the model store (default: chosen by "
                             "its size, model_registry.placement)")
    parser.add_argument("--sizing", type=Path,
                        help="a store-placed version's sizing request: .npz, one array per "
                             "input name (default: 8 rows x 512 on variable axes, "
                             "model_registry.sizing)")
    args = parser.parse_args(argv)
    labels = [label.strip() for label in args.labels.split(",")] if args.labels else None
    try:
        placed: list[placement.Placement] = []
        entry = add(args.name, args.onnx, args.version, labels, args.current, args.examples,
                    args.background, place=args.place, placed=placed,
                    baseline_path=args.baseline, sizing_path=args.sizing,
                    feature_names=[name.strip() for name in args.feature_names.split(",")]
                    if args.feature_names else None)
    except AddError as exc:
        print(f"add-model refused: {exc}", file=sys.stderr)
        return 2
    print(f"{entry.name} version {args.version or entry.versions[-1]} is served "
          f"{placed[0].reason}")
    print(f"added {entry.name}: versions {entry.versions}, current {entry.current} (restart "
          f"`make serve` to serve it); its file is "
          f"kept in {STORE}/{entry.name}/ (commit it: a fresh clone rebuilds from there)")
    if not (args.baseline or args.background or args.examples):
        added = read_intact(PROJECT.models_dir / entry.name / (args.version or entry.versions[-1]))
        rows = ("rows.npy" if added is None or len(added.inputs) == 1 else
                "rows.npz (one array per input, named as the input)")
        print(f"no monitoring baseline: {entry.name} was added without rows to build one from, "
              "so `make monitor` cannot report drift for it; add the version again with "
              f"BASELINE={rows} (training rows; README 'Monitoring') to have one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
