"""diabetes-linear: least-squares linear regression on the diabetes progression data.

skl2onnx emits the prediction as [N, 1]; a Reshape appended to the graph makes it the [N]
vector the manifest promises, so clients get one number per row.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import train_test_split

from model_export.check import Tolerance
from model_export.export import Split, Splits, Trained
from model_export.versions import SKLEARN_FRAMEWORKS, TARGET_OPSET

SEED = 0
OUTPUT = "prediction"


def flatten_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """Reshape the graph's single [N, 1] output to an [N] output called `name`."""
    graph = model.graph
    column = graph.output[0].name
    graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64),
                                                     f"{name}_shape"))
    graph.node.append(helper.make_node("Reshape", [column, f"{name}_shape"], [name],
                                       name=f"{name}_flatten"))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [None]))
    return model


def splits() -> Splits:
    """load_diabetes() rows as float32 and its float64 targets; 25 % held back."""
    data = load_diabetes()
    x, y = data.data.astype(np.float32), data.target
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=SEED)
    return Splits(Split(x_train, y_train), Split(x_test, y_test), Split(x, y))


def train() -> Trained:
    rows = splits()
    regression = LinearRegression().fit(rows.train.x, rows.train.y)
    n_features = rows.full.x.shape[1]
    model = convert_sklearn(
        regression, name="diabetes-linear",
        initial_types=[("features", FloatTensorType([None, n_features]))],
        final_types=[("prediction_column", FloatTensorType([None, 1]))],
        target_opset=TARGET_OPSET)
    return Trained(
        model=flatten_output(model, OUTPUT),
        inputs=[{"name": "features", "datatype": "FP32", "shape": [-1, n_features]}],
        outputs=[{"name": OUTPUT, "datatype": "FP32", "shape": [-1]}],
        task="regression",
        feature_names={"features": [str(name) for name in load_diabetes().feature_names]},
        test=rows.test,
        train=rows.train,
        full=rows.full,
        framework={OUTPUT: regression.predict(rows.test.x).astype(np.float32)},
        tolerances={OUTPUT: Tolerance("rel", 1e-4)},
        description="Disease progression one year after baseline from the 10 features of the "
                    "diabetes data set (as load_diabetes returns them: mean-centred and "
                    "scaled); ordinary least squares.",
        dataset="sklearn.datasets.load_diabetes",
        seed=SEED,
        frameworks=SKLEARN_FRAMEWORKS,
        linear=(regression.coef_.astype(np.float64)[None],
                rows.train.x.astype(np.float64).mean(axis=0)),
    )
