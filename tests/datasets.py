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


def held_back(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows seed model `name` was not trained on: its exporter's split (test_size 0.25,
    random_state 0, stratified by class for the classifiers)."""
    from sklearn.model_selection import train_test_split

    x, y = whole_dataset(name)
    stratify = None if name == "diabetes-linear" else y
    _, x_test, _, y_test = train_test_split(x, y, test_size=0.25, random_state=0,
                                            stratify=stratify)
    return x_test, y_test
