"""The whole dataset each seed model was trained on, as its served input takes it, with targets.

Shared by the export tests (onnxruntime directly) and the end-to-end tests (through the API),
so both check the manifest's `full_dataset` metrics against the same rows.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

from model_export.text_topics import load_corpus


def whole_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (float32 rows, 8x8 images or str texts) and targets of seed model `name`."""
    if name == "breast-cancer-mlp":
        data = load_breast_cancer()
        return data.data.astype(np.float32), data.target
    if name == "diabetes-linear":
        data = load_diabetes()
        return data.data.astype(np.float32), data.target
    if name == "digits-cnn":
        data = load_digits()
        return data.images.astype(np.float32), data.target
    if name == "text-topics":
        return load_corpus()
    raise ValueError(f"{name} is not a seed model")
