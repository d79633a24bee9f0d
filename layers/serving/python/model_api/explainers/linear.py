"""`linear`: exact contributions `coef_i * (x_i - mean_i)` over the training data's means (the
SHAP values of a linear model with independent features; Lundberg & Lee 2017, sec. 4.1).

`base_value` is the model's output at the means. One model run of 2 rows per request. Reads
the manifest's `explanation.coefficients` ([classes or 1, *input shape]) and `means` ([*input
shape]), written at export from the trained model; a model of one input only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from model_api.explainers.base import (
    Explainer,
    Explanation,
    ExplanationError,
    Options,
    Predictor,
)
from model_api.manifest import Manifest

LINEAR = "linear"


class LinearExplainer(Explainer):
    """Exact contributions of a linear model: coef_i * (x_i - mean_i), FP64 arithmetic."""

    method = LINEAR
    manifest_fields = ("coefficients", "means")
    explains_every_input = True

    def __init__(self, manifest: Manifest, output: str, coefficients: np.ndarray,
                 means: np.ndarray) -> None:
        super().__init__(manifest, output)
        self.input = manifest.inputs[0]
        self.coefficients = coefficients  # FP64 [classes, *input shape]
        self.means = means  # FP64 [*input shape]

    @classmethod
    def from_manifest(cls, manifest: Manifest, section: Mapping[str, Any],
                      version_dir: Path) -> LinearExplainer:
        """ExplanationError unless the model has one input and the coefficients and means are
        numeric and fit its shape."""
        if len(manifest.inputs) != 1:
            raise ExplanationError("linear explanations take a model of one input")
        shape = manifest.inputs[0].shape[1:]
        try:
            coefficients = np.asarray(section["coefficients"], dtype=np.float64)
            means = np.asarray(section["means"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ExplanationError(f"linear explanation needs numeric coefficients and means: "
                                   f"{exc}") from exc
        if coefficients.ndim == len(shape):
            coefficients = coefficients[None]
        if coefficients.shape[1:] != shape or means.shape != shape:
            raise ExplanationError(f"linear coefficients {coefficients.shape} and means "
                                   f"{means.shape} do not fit the input's shape {shape}")
        return cls(manifest, section["output"], coefficients, means)

    def _explain(self, predict: Predictor, inputs: dict[str, np.ndarray], options: Options,
                 rows: int) -> Explanation:
        x = inputs[self.input.name]
        batch = np.concatenate([x, self.means[None].astype(x.dtype)])
        scores = predict({self.input.name: batch})
        target = self._targets(scores[:rows], options)
        contributions = self.coefficients[target] * (x.astype(np.float64) - self.means)
        return self._explanation({self.input.name: contributions}, scores[rows, target], target,
                            scores[:rows])


EXPLAINER = LinearExplainer
