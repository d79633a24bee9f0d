"""The background rows a method reads (Kernel SHAP's): the file the manifest's
`explanation.background` names, checked against its sha256 at load and against the model's
inputs when first used.

The file's bytes are read and hashed when the version loads (a file that differs from the
exported one keeps the version from loading, as the model file's does); parsing the `.npz`
(numpy's zipfile reader: 4-5 ms of a cold start) and checking its rows against the inputs wait
for the first explanation, which a cold start's first /infer never needs.

The exporter writes it (model_export/explanation.py, encode_background).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from model_api.datatypes import BYTES
from model_api.explainers.base import ExplanationError
from model_api.integrity import read_recorded
from model_api.limits import MAX_BACKGROUND_ROWS
from model_api.manifest import Manifest


class BackgroundFile:
    """A background file whose bytes matched the manifest's sha256 (read_background), its rows
    parsed and checked against the model's inputs on the first `arrays()` call."""

    def __init__(self, manifest: Manifest, path: Path, data: bytes) -> None:
        self.manifest = manifest
        self.path = path
        self.data = data  # dropped once parsed

    def arrays(self) -> dict[str, np.ndarray]:
        """One array per input, [K, *input shape without batch], K equal for all
        (check_background). ExplanationError when the file is not a numpy `.npz` archive or
        its rows do not fit the inputs."""
        try:
            with np.load(io.BytesIO(self.data), allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except (OSError, ValueError) as exc:
            raise ExplanationError(f"{self.path}: not a numpy .npz archive: {exc}") from exc
        try:
            checked = check_background(self.manifest, arrays)
        except ExplanationError as exc:
            raise ExplanationError(f"{self.path}: {exc}") from None
        self.data = b""
        return checked


def read_background(manifest: Manifest, version_dir: Path,
                    config: Mapping[str, Any]) -> BackgroundFile:
    """The background file of a Kernel SHAP model, after its sha256 check (ExplanationError
    when the record is malformed, the file unreadable or different); its rows are parsed by
    its first `arrays()` call."""
    record = config.get("background")
    try:
        path, data = read_recorded(version_dir, record, "explanation.background",
                                   "the background rows")
    except ValueError as exc:
        raise ExplanationError(str(exc)) from None
    return BackgroundFile(manifest, path, data)


def check_background(manifest: Manifest, arrays: Mapping[str, np.ndarray]
                     ) -> dict[str, np.ndarray]:
    """Background rows that fit the manifest's inputs (ExplanationError naming what does
    not): one array per input, numeric, finite, the input's fixed dimensions, 1 to
    MAX_BACKGROUND_ROWS rows, the same count for every input."""
    names = {spec.name for spec in manifest.inputs}
    if set(arrays) != names:
        raise ExplanationError(f"background arrays {sorted(arrays)} must be exactly the "
                               f"model's inputs {sorted(names)}")
    checked: dict[str, np.ndarray] = {}
    for spec in manifest.inputs:
        array = np.asarray(arrays[spec.name])
        if spec.datatype == BYTES or array.dtype.kind not in "iuf" or array.ndim != len(
                spec.shape) or any(d != -1 and d != a for d, a in
                                   zip(spec.shape[1:], array.shape[1:], strict=True)):
            raise ExplanationError(
                f"background for input '{spec.name}' is {array.dtype} {list(array.shape)}; "
                f"the input is {spec.datatype} {list(spec.shape)}")
        if not 1 <= array.shape[0] <= MAX_BACKGROUND_ROWS:
            raise ExplanationError(f"background for input '{spec.name}' has "
                                   f"{array.shape[0]} rows; give 1 to {MAX_BACKGROUND_ROWS}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ExplanationError(f"background for input '{spec.name}' has NaN or inf")
        checked[spec.name] = array
    if len({array.shape[0] for array in checked.values()}) != 1:
        raise ExplanationError("background arrays must have the same number of rows")
    return checked
