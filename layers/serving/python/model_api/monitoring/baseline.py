"""A model version's baseline: what its training rows look like, per monitored feature
(model_api.monitoring.features) and for its prediction, kept in BASELINE_FILE beside the
manifest, whose `monitoring.baseline` names it with its sha256 (checked on read, as the model
file is: model_api.integrity).

    {"format": 1, "rows": 426, "source": "training rows (train split)",
     "features": {"mean radius": {"kind": "number", "edges": [...], "counts": [...],
                                  "quantiles": [...], "mean": 14.1, "std": 3.5},
                  "sex": {"kind": "category", "categories": ["-0.04", ...], "counts": [...]}},
     "prediction": {"output": "label", "kind": "category", ...}}

A number's `edges` are the interior cut points of BINS equal-count bins of the baseline (its
deciles, duplicates removed: a column with many equal values gets fewer bins); the outer bins are
open, so every later value falls in one. `counts` are the baseline rows per bin, `quantiles` its
QUANTILES percentiles (0 to 100 %, for the Wasserstein distance and the console's plot). A
category's `categories` are the distinct values as text, most frequent first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from model_api.integrity import read_recorded, sha256_of
from model_api.manifest import Manifest
from model_api.monitoring import features as monitored

BASELINE_FILE = "baseline.json"
FORMAT = 1
BINS = 10
QUANTILES = 101  # 0 %, 1 %, ..., 100 %
NUMBER, CATEGORY = "number", "category"


class BaselineError(ValueError):
    """A baseline that cannot be built or read; the message names the file or the input."""


def category_labels(values: np.ndarray) -> list[str]:
    """Values as the text a category is known by (numbers in their shortest form)."""
    if values.dtype.kind == "f":
        return [repr(float(v)) if not float(v).is_integer() else str(int(v)) for v in values]
    return [str(v) for v in values.tolist()]


def bin_index(edges: list[float], values: np.ndarray) -> np.ndarray:
    """Each value's bin (0 .. len(edges)): bin i holds edges[i-1] < v <= edges[i]."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")


def summarise(values: np.ndarray, kind: str | None = None) -> dict[str, Any]:
    """One feature's summary (the module's docstring); `kind` None: a number unless it has at
    most MAX_CATEGORY_VALUES distinct values or is text."""
    if kind is None:
        text = values.dtype.kind in "OSU"
        kind = CATEGORY if text or len(np.unique(values)) <= monitored.MAX_CATEGORY_VALUES \
            else NUMBER
    if kind == CATEGORY:
        labels = category_labels(values) if values.dtype.kind in "iuf" else \
            [str(v) for v in values.tolist()]
        names, counts = np.unique(np.array(labels, dtype=object), return_counts=True)
        order = np.argsort(-counts, kind="stable")
        return {"kind": CATEGORY, "categories": [str(names[i]) for i in order],
                "counts": [int(counts[i]) for i in order]}
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise BaselineError("a numeric feature has no finite value in the baseline rows")
    edges = sorted(set(np.quantile(finite, np.linspace(0, 1, BINS + 1)[1:-1]).tolist()))
    counts = np.bincount(bin_index(edges, finite), minlength=len(edges) + 1)
    return {"kind": NUMBER, "edges": edges, "counts": counts.tolist(),
            "quantiles": np.quantile(finite, np.linspace(0, 1, QUANTILES)).tolist(),
            "mean": float(finite.mean()), "std": float(finite.std())}


def build(manifest: Manifest, inputs: Mapping[str, np.ndarray],
          outputs: Mapping[str, np.ndarray] | None, source: str) -> dict[str, Any]:
    """The baseline document of `inputs` (raw rows, one array per input, rows first) and the
    model's `outputs` on them (None: no prediction baseline). BaselineError when the rows are
    empty or a numeric feature has no finite value."""
    found = monitored.from_inputs(manifest, inputs)
    rows = len(next(iter(found.values()))) if found else 0
    if rows == 0:
        raise BaselineError("no baseline rows: give at least one row per input")
    document: dict[str, Any] = {"format": FORMAT, "rows": rows, "source": source,
                                "features": {}}
    for name, values in found.items():
        try:
            document["features"][name] = summarise(values)
        except BaselineError as exc:
            raise BaselineError(f"feature {name!r}: {exc}") from None
    spec = monitored.prediction_output(manifest)
    if spec is not None and outputs is not None and spec.name in outputs:
        predicted = monitored.prediction_values(spec, outputs[spec.name])
        document["prediction"] = {"output": spec.name,
                                  **summarise(predicted, CATEGORY if spec.name == "label"
                                              else None)}
    return document


def encode(document: Mapping[str, Any]) -> bytes:
    """The file's bytes (compact JSON, features in the inputs' order)."""
    return (json.dumps(document, separators=(",", ":")) + "\n").encode()


def manifest_section(data: bytes) -> dict[str, Any]:
    """The manifest's `monitoring` object naming the baseline file `data` is written to."""
    return {"baseline": {"file": BASELINE_FILE, "sha256": sha256_of(data)}}


def read(manifest: Manifest, version_dir: Path) -> dict[str, Any] | None:
    """The version's baseline after its sha256 check; None when the manifest names none (a
    version exported before baselines existed). BaselineError when the file is missing,
    altered or malformed."""
    section = manifest.extra.get("monitoring")
    record = section.get("baseline") if isinstance(section, Mapping) else None
    if record is None:
        return None
    try:
        path, data = read_recorded(
            version_dir, dict(record) if isinstance(record, Mapping) else record,
            "monitoring.baseline", "the baseline")
    except ValueError as exc:
        raise BaselineError(str(exc)) from None
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise BaselineError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT \
            or not isinstance(document.get("features"), dict):
        raise BaselineError(f"{path}: not a baseline of format {FORMAT}")
    return document
