"""The one path every seed model takes from a trained graph to build/models/<name>/<version>/.

A recipe trains its model and converts it (`Trained`); this module checks the graph, proves
parity on the held-back rows, measures metrics with onnxruntime (the numbers the API will
reproduce) and writes the version with its manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from model_api.datatypes import BYTES
from model_api.manifest import parse_manifest
from model_api.monitoring import baseline as monitoring_baseline
from sklearn.metrics import accuracy_score, mean_absolute_error, r2_score

from model_export import explanation
from model_export.artifact import canonical_bytes, write_version
from model_export.check import Tolerance, check_graph, compare, session, unicode_parity

EXAMPLE_ROWS = 8  # held-back rows kept as the model's examples


@dataclass(frozen=True)
class Split:
    """Rows of one part of a dataset: model input and true targets."""

    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class Splits:
    """A seed model's dataset as its served input takes it: the rows it was trained on, the
    held-back rows its `test` metrics are measured on, and the whole dataset (`full_dataset`).

    One source for the split: the recipe trains on `train`, and `make optimize` calibrates on
    `train` and measures on `test` and `full` without training again.
    """

    train: Split
    test: Split
    full: Split


@dataclass(frozen=True)
class Trained:
    """A trained and converted model, with what is needed to check and describe it."""

    model: onnx.ModelProto
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    task: str  # "classification" (label output) or "regression" (prediction output)
    test: Split
    full: Split
    framework: Mapping[str, np.ndarray]  # the framework's own outputs on test.x, by output name
    tolerances: Mapping[str, Tolerance]
    description: str
    dataset: str
    seed: int
    frameworks: Mapping[str, str]
    labels: list[str] | None = None
    # Names of a tabular input's columns (the dataset's own), by input name: the console shows
    # them beside the values and the attributions.
    feature_names: Mapping[str, list[str]] | None = None
    # For the explanation (model_export/explanation.py): training rows for Kernel SHAP's
    # background, by input name; or a linear model's (coefficients, training means), FP64.
    background: Mapping[str, np.ndarray] | None = None
    linear: tuple[np.ndarray, np.ndarray] | None = None
    # The framework's own prediction (rows -> outputs by name, as `framework`): required for a
    # text (BYTES) input, whose parity is also checked on texts beyond ASCII (model_export.text).
    predict: Callable[[np.ndarray], Mapping[str, np.ndarray]] | None = None
    # The rows it was trained on: the monitoring baseline (model_api.monitoring.baseline) is
    # summarised from them and from the model's outputs on them.
    train: Split | None = None
    # Words a text model drops before its vocabulary (its vectorizer's stop words), which the
    # graph does not list: a captured text's out-of-vocabulary share leaves them out
    # (the manifest's monitoring.vocabulary.ignored; model_api.capture.record.oov_share).
    ignored_words: frozenset[str] | None = None


def metrics(task: str, split: Split, outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    if task == "classification":
        return {"accuracy": float(accuracy_score(split.y, outputs["label"])), "rows": len(split.y)}
    prediction = outputs["prediction"]
    return {"r2": float(r2_score(split.y, prediction)),
            "mae": float(mean_absolute_error(split.y, prediction)), "rows": len(split.y)}


def graph_vocabulary(model: onnx.ModelProto) -> dict[str, Any] | None:
    """The words of the graph's (first) TfIdfVectorizer (its unigrams) and whether a
    StringNormalizer lower-cases before it: the manifest's `monitoring.vocabulary`, from which
    a captured text's out-of-vocabulary share is counted (model_api.capture.record). None for a
    graph without one."""
    lowercase, words = False, None
    for node in model.graph.node:
        attributes = {attribute.name: attribute for attribute in node.attribute}
        if node.op_type == "StringNormalizer" and "case_change_action" in attributes:
            lowercase = lowercase or attributes["case_change_action"].s == b"LOWER"
        if node.op_type == "TfIdfVectorizer" and "pool_strings" in attributes and words is None:
            pool = list(attributes["pool_strings"].strings)
            counts = list(attributes["ngram_counts"].ints) if "ngram_counts" in attributes \
                else [0]
            words = [word.decode("utf-8") for word in
                     pool[counts[0]:counts[1] if len(counts) > 1 else len(pool)]]
    return None if words is None else {"lowercase": lowercase, "words": sorted(words)}


def write_baseline(manifest: dict[str, Any], trained: Trained, run: Any,
                   input_name: str) -> dict[str, bytes]:
    """The monitoring baseline of the training rows (`trained.train`) and of the model's
    outputs on them: its file by name, and its `monitoring` section set in `manifest`."""
    assert trained.train is not None
    outputs = dict(zip([o.name for o in run.get_outputs()],
                       run.run(None, {input_name: trained.train.x}), strict=True))
    words = graph_vocabulary(trained.model)
    if words is not None:
        if trained.ignored_words:
            words["ignored"] = sorted(trained.ignored_words)
        manifest["monitoring"] = {"vocabulary": words}
    data = baseline_file(manifest, trained.inputs, trained.outputs,
                         {input_name: trained.train.x}, outputs,
                         f"the {len(trained.train.x)} training rows of {trained.dataset}")
    manifest["monitoring"] = {**manifest.get("monitoring", {}),
                              **monitoring_baseline.manifest_section(data)}
    return {monitoring_baseline.BASELINE_FILE: data}


def baseline_file(manifest: Mapping[str, Any], inputs: list[dict[str, Any]],
                  outputs: list[dict[str, Any]], rows: Mapping[str, np.ndarray],
                  predicted: Mapping[str, np.ndarray] | None, source: str) -> bytes:
    """The baseline file's bytes for a version about to be written (`manifest`: its fields so
    far, with `inputs`/`outputs` its signature): the features are named as the served
    manifest names them (feature_names, token pattern)."""
    signed = parse_manifest({"schema_version": 1, "name": manifest["name"],
                             "version": manifest["version"], "platform": "onnxruntime_onnx",
                             "model_file": "model.onnx", "sha256": "0" * 64,
                             "inputs": inputs, "outputs": outputs,
                             **{k: v for k, v in manifest.items()
                                if k in ("feature_names", "explanation", "labels",
                                         "monitoring")}})
    return monitoring_baseline.encode(
        monitoring_baseline.build(signed, rows, predicted, source))


def finish(trained: Trained, version_dir: Path, fingerprint: str,
           step: Callable[[str], AbstractContextManager[None]]) -> dict[str, Any]:
    """Check, measure and write `trained`; `step(name)` is a context manager that reports timing."""
    with step("check"):
        check_graph(trained.model, {"inputs": trained.inputs, "outputs": trained.outputs})
        run = session(trained.model)
        input_name = trained.inputs[0]["name"]
        on_test = dict(zip([o.name for o in run.get_outputs()],
                           run.run(None, {input_name: trained.test.x}), strict=True))
        parity = compare(on_test, trained.framework, trained.tolerances)
        if trained.inputs[0]["datatype"] == BYTES:
            parity["unicode_texts"] = unicode_parity(run, input_name, trained.predict,
                                                     trained.tolerances)
        on_full = dict(zip([o.name for o in run.get_outputs()],
                           run.run(None, {input_name: trained.full.x}), strict=True))
    manifest: dict[str, Any] = {
        "name": version_dir.parent.name,
        "version": version_dir.name,
        **({"labels": trained.labels} if trained.labels is not None else {}),
        **({"feature_names": {name: list(columns) for name, columns
                              in trained.feature_names.items()}}
           if trained.feature_names is not None else {}),
        "task": trained.task,
        "metrics": {"test": metrics(trained.task, trained.test, on_test),
                    "full_dataset": metrics(trained.task, trained.full, on_full)},
        "description": trained.description,
        "training": {"dataset": trained.dataset, "seed": trained.seed,
                     "frameworks": dict(trained.frameworks), "fingerprint": fingerprint},
        "parity": parity,
    }
    section, files = explanation.choose(version_dir.parent.name, trained.model,
                                        {"inputs": trained.inputs, "outputs": trained.outputs},
                                        trained.background, trained.linear)
    manifest["explanation"] = section
    if trained.train is not None:
        with step("baseline"):
            files = {**files, **write_baseline(manifest, trained, run, input_name)}
    with step("write"):
        # Real held-back rows travel with the model as its example inputs (model_api.examples).
        write_version(version_dir, canonical_bytes(trained.model), manifest,
                      {input_name: trained.test.x[:EXAMPLE_ROWS]}, files)
    return manifest
