"""The four exported seed models keep the contract of docs/architecture.md.

These read build/models (written by `make models`, which `make test` runs first) rather than
training again: the manifest loads with the serving library, the file matches its sha256, the
signature is the promised one, and the numbers in the manifest are reproduced by onnxruntime.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from model_api.integrity import sha256_of
from model_api.manifest import load_manifest
from sklearn.datasets import load_diabetes, load_digits
from sklearn.metrics import mean_absolute_error, r2_score

from tests.conftest import MODELS_DIR, ROOT
from tests.datasets import whole_dataset

SIGNATURES = {
    "breast-cancer-mlp": (
        [("features", "FP32", (-1, 30))],
        [("label", "INT64", (-1,)), ("probabilities", "FP32", (-1, 2))]),
    "diabetes-linear": (
        [("features", "FP32", (-1, 10))],
        [("prediction", "FP32", (-1,))]),
    "text-topics": (
        [("text", "BYTES", (-1,))],
        [("label", "BYTES", (-1,)), ("probabilities", "FP32", (-1, 4))]),
    "digits-cnn": (
        [("image", "FP32", (-1, 8, 8))],
        [("label", "INT64", (-1,)), ("probabilities", "FP32", (-1, 10))]),
}


def version_dir(name: str) -> Path:
    path = MODELS_DIR / name / "1"
    if not (path / "manifest.json").exists():
        pytest.fail(f"{path} not exported: run `make models` (make test does)")
    return path


def session(name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(version_dir(name) / "model.onnx"),
                                providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_manifest_loads_matches_its_file_and_promises_the_signature(name: str) -> None:
    manifest = load_manifest(version_dir(name) / "manifest.json")
    assert (manifest.name, manifest.version, manifest.platform) == (name, "1", "onnxruntime_onnx")
    assert sha256_of((version_dir(name) / manifest.model_file).read_bytes()) == manifest.sha256
    inputs, outputs = SIGNATURES[name]
    assert [(s.name, s.datatype, s.shape) for s in manifest.inputs] == inputs
    assert [(s.name, s.datatype, s.shape) for s in manifest.outputs] == outputs
    ort_session = session(name)
    assert [i.name for i in ort_session.get_inputs()] == [n for n, _, _ in inputs]
    assert [o.name for o in ort_session.get_outputs()] == [n for n, _, _ in outputs]
    training = manifest.extra["training"]
    assert {"dataset", "seed", "frameworks", "fingerprint"} <= set(training)
    parity = manifest.extra["parity"]
    assert parity["rows"] == manifest.metrics["test"]["rows"]
    if manifest.task == "classification":
        assert parity["labels_equal"] is True
        assert parity["max_abs_diff"]["probabilities"] <= 1e-5
        assert manifest.labels is not None
        assert len(manifest.labels) == outputs[1][2][1]
    else:
        assert parity["max_rel_diff"]["prediction"] <= 1e-4


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_full_dataset_metrics_are_reproduced_by_onnxruntime_exactly(name: str) -> None:
    manifest = load_manifest(version_dir(name) / "manifest.json")
    x, y = whole_dataset(name)
    outputs = dict(zip([o.name for o in session(name).get_outputs()],
                       session(name).run(None, {manifest.inputs[0].name: x}), strict=True))
    reported: dict[str, Any] = dict(manifest.metrics["full_dataset"])
    assert reported["rows"] == len(y)
    if manifest.task == "classification":
        assert reported["accuracy"] == float(np.mean(outputs["label"] == y))
    else:
        assert reported["r2"] == float(r2_score(y, outputs["prediction"]))
        assert reported["mae"] == float(mean_absolute_error(y, outputs["prediction"]))


def test_classifiers_are_as_good_as_promised() -> None:
    accuracy = {name: load_manifest(version_dir(name) / "manifest.json").metrics["test"]["accuracy"]
                for name in ("breast-cancer-mlp", "digits-cnn", "text-topics")}
    assert accuracy["breast-cancer-mlp"] >= 0.93
    assert accuracy["digits-cnn"] >= 0.97
    assert accuracy["text-topics"] >= 0.75


def test_digits_cnn_has_a_dynamic_batch_and_scaling_softmax_argmax_inside() -> None:
    images = load_digits().images.astype(np.float32)
    for rows in (1, 7):
        label, probabilities = session("digits-cnn").run(None, {"image": images[:rows]})
        assert label.shape == (rows,) and probabilities.shape == (rows, 10)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
        assert (label == probabilities.argmax(axis=1)).all()


def test_diabetes_prediction_is_one_number_per_row() -> None:
    (prediction,) = session("diabetes-linear").run(
        None, {"features": load_diabetes().data[:3].astype(np.float32)})
    assert prediction.shape == (3,)


def test_text_topics_takes_any_unicode_and_answers_topic_names() -> None:
    texts = np.array(["東京は今日も雨です", "🌧️☔", "", "   ", "ÉCOLE DE FOOTBALL",
                      "Grill the salmon with lemon", "x" * 2000], dtype=object)
    label, probabilities = session("text-topics").run(None, {"text": texts})
    labels = load_manifest(version_dir("text-topics") / "manifest.json").labels
    assert labels is not None
    assert set(label) <= set(labels)
    assert label[4] == "sport" and label[5] == "cooking"
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_pytorch_stays_out_of_the_main_venv_and_the_runtime_layer() -> None:
    assert importlib.util.find_spec("torch") is None
    runtime = (ROOT / "layers" / "runtime" / "requirements.txt").read_text().lower()
    assert "torch" not in runtime
