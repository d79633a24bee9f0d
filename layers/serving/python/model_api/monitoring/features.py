"""The features monitored for a model, computed the same way from raw rows (the baseline, at
export and add-model) and from captured records (a window, model_api.capture.record):

- a numeric input of shape [-1] is one feature; of shape [-1, n] (tabular) one per column, named
  by the manifest's `feature_names` (the dataset's own) or `<input>[j]`; a wider row
  (n > MAX_COLUMNS) is cut into REGIONS contiguous spans, each feature the span's mean;
- a numeric input of rank 3 or more (an image, the last two dimensions spatial): the mean
  intensity of each cell of a REGION_GRID x REGION_GRID grid (other dimensions averaged);
- a BYTES input (free text): its length in characters, its token count (the model's own token
  pattern) and, when the manifest lists the model's vocabulary, the share of its tokens outside
  it: what the capture's `summary` rule keeps (never the text);
- the prediction: the `label` output (a category) when the model has one, else its first float
  output of one value per row (a number).

A numeric feature with at most MAX_CATEGORY_VALUES distinct values in the baseline (a 0/1
column, a bucket index) is compared as a category, as Evidently does for n_unique <= 5.
An input captured as a keyed hash, in buckets or dropped cannot be compared: `unavailable` says
so per input.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from model_api.capture.record import oov_share, token_pattern, vocabulary
from model_api.manifest import Manifest, TensorSpec

MAX_COLUMNS = 64
REGIONS = 16
REGION_GRID = 4
MAX_CATEGORY_VALUES = 5
LENGTH, TOKENS, OOV = "length", "tokens", "oov"
Values = dict[str, np.ndarray]  # feature name -> one value per row (float64, or str objects)


def _column_names(manifest: Manifest, spec: TensorSpec, width: int) -> list[str]:
    names = manifest.extra.get("feature_names")
    given = names.get(spec.name) if isinstance(names, Mapping) else None
    if isinstance(given, list) and len(given) == width and all(isinstance(n, str) for n in given):
        return list(given)
    return [f"{spec.name}[{j}]" for j in range(width)]


def _spans(size: int, parts: int) -> list[tuple[int, int]]:
    bounds = np.linspace(0, size, min(parts, size) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def numeric_features(manifest: Manifest, spec: TensorSpec, array: np.ndarray) -> Values:
    """The features of one numeric input (`array`: rows first, as the model takes it)."""
    values = np.asarray(array, dtype=np.float64)
    if values.ndim == 1:
        return {spec.name: values}
    if values.ndim == 2:
        width = values.shape[1]
        if width <= MAX_COLUMNS:
            return dict(zip(_column_names(manifest, spec, width), values.T, strict=True))
        return {f"{spec.name}[{a}:{b}] mean": values[:, a:b].mean(axis=1)
                for a, b in _spans(width, REGIONS)}
    image = values.reshape(values.shape[0], -1, *values.shape[-2:]).mean(axis=1)
    return {f"{spec.name} region ({i},{j}) mean": image[:, r0:r1, c0:c1].mean(axis=(1, 2))
            for i, (r0, r1) in enumerate(_spans(image.shape[1], REGION_GRID))
            for j, (c0, c1) in enumerate(_spans(image.shape[2], REGION_GRID))}


def text_features(spec: TensorSpec, lengths: Iterable[Any], tokens: Iterable[Any],
                  oov: Iterable[Any] | None = None) -> Values:
    """A text input's features, from per-row lengths, token counts and out-of-vocabulary
    shares (None: not known; a row without tokens, None, is left out of that feature)."""
    found = {f"{spec.name} {LENGTH}": np.asarray(list(lengths), dtype=np.float64).reshape(-1),
             f"{spec.name} {TOKENS}": np.asarray(list(tokens), dtype=np.float64).reshape(-1)}
    if oov is not None:
        shares = np.asarray([np.nan if v is None else v for v in
                             np.asarray(list(oov), dtype=object).reshape(-1)], dtype=np.float64)
        found[f"{spec.name} {OOV} share"] = shares[np.isfinite(shares)]
    return found


def _raw_text_features(manifest: Manifest, spec: TensorSpec, texts: list[str],
                       pattern: re.Pattern[str]) -> Values:
    tokens = [pattern.findall(t) for t in texts]
    known = vocabulary(manifest)
    return text_features(spec, (len(t) for t in texts), (len(t) for t in tokens),
                         None if known is None else (oov_share(t, known) for t in tokens))


def _texts(array: Any) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            for v in np.asarray(array, dtype=object).reshape(-1).tolist()]


def from_inputs(manifest: Manifest, inputs: Mapping[str, np.ndarray]) -> Values:
    """The features of raw rows (one array per input, rows first): the baseline's source."""
    pattern = token_pattern(manifest)
    found: Values = {}
    for spec in manifest.inputs:
        if spec.name not in inputs:
            continue
        if spec.datatype == "BYTES":
            found.update(_raw_text_features(manifest, spec, _texts(inputs[spec.name]),
                                            pattern))
        else:
            found.update(numeric_features(manifest, spec, np.asarray(inputs[spec.name])))
    return found


def prediction_output(manifest: Manifest) -> TensorSpec | None:
    """The output whose distribution is monitored (see the module's docstring), or None."""
    label = manifest.output("label")
    if label is not None and len(label.shape) == 1:
        return label
    return next((o for o in manifest.outputs if o.datatype.startswith("FP")
                 and (len(o.shape) == 1 or (len(o.shape) == 2 and o.shape[1] == 1))), None)


def prediction_values(spec: TensorSpec, array: Any) -> np.ndarray:
    """The monitored output's values, one per row: strings for a label, float64 otherwise."""
    if spec.name == "label":
        return np.array(_texts(array), dtype=object)
    return np.asarray(array, dtype=np.float64).reshape(-1)


class Window:
    """Features gathered from captured records of one model version (`add` each record)."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.pattern: re.Pattern[str] = token_pattern(manifest)
        self.parts: dict[str, list[np.ndarray]] = {}
        self.predictions: list[np.ndarray] = []
        self.rows = 0
        self.unavailable: dict[str, str] = {}  # input -> why its features cannot be compared
        self.output = prediction_output(manifest)

    def add(self, record: Mapping[str, Any]) -> None:
        """One record's rows (model_api.capture.record's format). ValueError on a record whose
        values do not fit the model's signature."""
        inputs = record.get("inputs")
        rows = int(record.get("rows") or 0)
        self.rows += rows
        if isinstance(inputs, Mapping):
            for spec in self.manifest.inputs:
                self._input(spec, inputs.get(spec.name))
        outputs = record.get("outputs")
        if self.output is not None and isinstance(outputs, Mapping) \
                and self.output.name in outputs:
            self.predictions.append(prediction_values(self.output, outputs[self.output.name]))

    def _input(self, spec: TensorSpec, value: Any) -> None:
        if value is None:
            self.unavailable[spec.name] = "not captured (rule drop, or inputs off)"
            return
        if isinstance(value, Mapping):
            if LENGTH in value and TOKENS in value:
                found = text_features(spec, value[LENGTH], value[TOKENS], value.get(OOV))
            else:
                self.unavailable[spec.name] = ("captured as keyed hashes" if "hash" in value
                                               else "captured as buckets")
                return
        elif spec.datatype == "BYTES":
            found = _raw_text_features(self.manifest, spec, _texts(value), self.pattern)
        else:
            found = numeric_features(self.manifest, spec, np.asarray(value, dtype=np.float64))
        for name, values in found.items():
            self.parts.setdefault(name, []).append(values)

    def features(self) -> Values:
        """Every feature's values over the window's records, in record order."""
        return {name: np.concatenate(parts) for name, parts in self.parts.items()}

    def prediction(self) -> np.ndarray | None:
        return np.concatenate(self.predictions) if self.predictions else None
