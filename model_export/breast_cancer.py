"""breast-cancer-mlp: scaler + two-layer ReLU MLP on the Wisconsin breast cancer data.

Scaling is part of the ONNX graph, so clients send the raw 30 features exactly as
`load_breast_cancer()` returns them.
"""

from __future__ import annotations

import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from model_export.check import Tolerance
from model_export.explanation import sample_background
from model_export.export import Split, Splits, Trained
from model_export.versions import SKLEARN_FRAMEWORKS, TARGET_OPSET

SEED = 0


def splits() -> Splits:
    """load_breast_cancer() rows as float32 and targets as int64; 25 % held back, stratified."""
    data = load_breast_cancer()
    x, y = data.data.astype(np.float32), data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=SEED, stratify=y)
    return Splits(Split(x_train, y_train), Split(x_test, y_test), Split(x, y))


def train() -> Trained:
    data = load_breast_cancer()
    rows = splits()
    pipeline = make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(128, 128), activation="relu", max_iter=500,
                      random_state=SEED))
    pipeline.fit(rows.train.x, rows.train.y)
    n_features, n_classes = rows.full.x.shape[1], len(data.target_names)
    model = convert_sklearn(
        pipeline, name="breast-cancer-mlp",
        initial_types=[("features", FloatTensorType([None, n_features]))],
        final_types=[("label", Int64TensorType([None])),
                     ("probabilities", FloatTensorType([None, n_classes]))],
        options={id(pipeline): {"zipmap": False}}, target_opset=TARGET_OPSET)
    return Trained(
        model=model,
        inputs=[{"name": "features", "datatype": "FP32", "shape": [-1, n_features]}],
        outputs=[{"name": "label", "datatype": "INT64", "shape": [-1]},
                 {"name": "probabilities", "datatype": "FP32", "shape": [-1, n_classes]}],
        task="classification",
        labels=[str(name) for name in data.target_names],
        feature_names={"features": [str(name) for name in data.feature_names]},
        test=rows.test,
        train=rows.train,
        full=rows.full,
        framework={"label": pipeline.predict(rows.test.x).astype(np.int64),
                   "probabilities": pipeline.predict_proba(rows.test.x).astype(np.float32)},
        tolerances={"label": Tolerance("exact"), "probabilities": Tolerance("abs", 1e-5)},
        description="Breast cancer diagnosis (0 malignant, 1 benign) from the 30 features of "
                    "the Wisconsin diagnostic data set; StandardScaler and an MLP with two "
                    "hidden layers of 128 ReLU units, scaling inside the graph.",
        dataset="sklearn.datasets.load_breast_cancer",
        seed=SEED,
        frameworks=SKLEARN_FRAMEWORKS,
        background={"features": sample_background(rows.train.x, seed=SEED)},
    )
