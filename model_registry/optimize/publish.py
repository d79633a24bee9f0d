"""Publishing the best candidate as the model's next version (not current) through add-model,
with the manifest fields it was measured with."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from model_api.examples import EXAMPLES_FILE
from model_api.explainers.kernel_shap import KERNEL_SHAP
from model_api.manifest import Manifest
from model_api.model import session_options

from model_export.explanation import BACKGROUND_FILE, encode_background
from model_registry import add, registry
from model_registry.optimize.candidates import TOOLS
from model_registry.optimize.data import Dataset
from model_registry.optimize.measure import Parent
from model_registry.optimize.result import Result
from model_registry.optimize.timing import Timing, lambda_memory, load_average
from model_registry.registry import Project

FIELDS_FILE = "manifest-fields.json"


def manifest_fields(reference: Parent, best: Result, timing: Timing,
                    data: Dataset) -> dict[str, Any]:
    """The new version's manifest fields: the parent's description of the task and data, the
    candidate's own measured metrics, and the `optimization` section."""
    parent = reference.manifest
    fields: dict[str, Any] = {}
    if parent.labels is not None:
        fields["labels"] = list(parent.labels)
    if parent.task is not None:
        fields["task"] = parent.task
    if best.metrics:
        fields["metrics"] = best.metrics
    fields["description"] = (f"{parent.description or parent.name} Optimised by "
                             f"`make optimize` ({best.method}) from version {parent.version}.")
    if "feature_names" in parent.extra:  # the same columns: explanations and drift name them
        fields["feature_names"] = parent.extra["feature_names"]
    if "training" in parent.extra:  # less the fingerprint: this version is not trained
        fields["training"] = {k: v for k, v in parent.extra["training"].items()
                              if k != "fingerprint"}
    with lambda_memory(timing.lambda_memory_mb):
        threads = session_options().intra_op_num_threads
    fields["optimization"] = {
        "method": best.method,
        "tool": TOOLS[best.method],
        "parent_version": parent.version,
        "parent_sha256": parent.sha256,
        "metric_delta": best.metric_delta,
        "size_ratio": round(best.size_ratio, 4),
        "latency_ratio_1": round(best.latency_ratio(1), 4),
        "latency_ratio_1024": round(best.latency_ratio(1024), 4),
        "latency_ms": {str(rows): {"parent": round(p, 5), "optimized": round(c, 5)}
                       for rows, (p, c) in best.latency_ms.items()},
        "agreement": best.agreement,
        "measured": {"rows": data.source, "passes": timing.passes,
                     "lambda_memory_mb": timing.lambda_memory_mb, "intra_op_threads": threads,
                     "machine": f"{platform.machine()} {platform.processor()}".strip(),
                     "cpus": os.cpu_count(), "load_average": load_average(),
                     "control_ratio_1": round(reference.control[1], 4),
                     "control_ratio_1024": round(reference.control[1024], 4)},
    }
    return fields


def publish_version(entry: registry.ModelEntry, parent: Parent, best: Result, data: Dataset,
                    timing: Timing, project: Project) -> str:
    """Add the candidate as the model's next version (not current) with model_registry.add,
    its measured manifest fields with it, and what the parent version was served with
    (`parent_rows`: its examples, Kernel SHAP background, monitoring baseline rows): add-model
    keeps them in model_store/ and renders the template, events and OpenAPI in one atomic
    change. The version."""
    assert best.model_bytes is not None
    version = add.next_version(entry)
    with tempfile.TemporaryDirectory(prefix="optimized-") as work:
        folder = Path(work)
        (folder / "model.onnx").write_bytes(best.model_bytes)
        (folder / FIELDS_FILE).write_text(
            json.dumps(manifest_fields(parent, best, timing, data), indent=2) + "\n")
        rows = parent_rows(entry, parent.manifest, data, project, folder)
        add.add(entry.name, folder / "model.onnx", version, fields=folder / FIELDS_FILE,
                project=project, examples_path=rows.examples, background_path=rows.background,
                baseline_path=rows.baseline)
    return version


class ParentRows(NamedTuple):
    """The parent version's row files that add-model takes (None: it has none)."""

    examples: Path | None  # its examples.json
    background: Path | None  # its Kernel SHAP background rows (.npz by input name)
    baseline: Path | None  # the rows its monitoring baseline was built from


def parent_rows(entry: registry.ModelEntry, parent: Manifest, data: Dataset, project: Project,
                work: Path) -> ParentRows:
    """The parent's row files for its optimised version, so that it is explained, shown and
    monitored as the parent is: its examples, its background when it is explained by Kernel
    SHAP, and the rows its baseline was built from (those add-model recorded, or a seed's
    training rows from its recipe, written into `work`; else None: add-model builds the
    baseline from the background or the examples, as it did the parent's)."""
    folder = project.models_dir / entry.name / parent.version
    examples = folder / EXAMPLES_FILE
    explained = parent.extra.get("explanation") or {}
    background = folder / BACKGROUND_FILE
    recorded = entry.files.get(parent.version, {}).get("baseline")
    baseline = project.root / recorded if recorded else None
    if baseline is None and data.full is not None:  # a seed's recipe: its training rows
        baseline = work / "baseline.npz"
        baseline.write_bytes(encode_background(data.calibration))
    return ParentRows(
        examples if examples.is_file() else None,
        background if explained.get("method") == KERNEL_SHAP and background.is_file() else None,
        baseline)
