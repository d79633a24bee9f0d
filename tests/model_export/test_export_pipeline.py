"""The shared export path: reproducible training, loud parity failures, unchanged models skipped."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from model_api.integrity import sha256_of
from onnx import TensorProto, helper

from model_export import breast_cancer, diabetes, text_topics
from model_export.artifact import canonical_bytes
from model_export.check import ParityError, Tolerance, check_graph, compare
from model_export.export import Trained
from model_registry import export as cli
from tests.conftest import MODELS_DIR


@pytest.mark.parametrize(("name", "train"), [
    ("breast-cancer-mlp", breast_cancer.train),
    ("diabetes-linear", diabetes.train),
    ("text-topics", text_topics.train),
])
def test_retraining_a_cheap_seed_model_gives_the_exported_bytes(
        name: str, train: Callable[[], Trained]) -> None:
    trained = train()
    exported = json.loads((MODELS_DIR / name / "1" / "manifest.json").read_text())
    assert sha256_of(canonical_bytes(trained.model)) == exported["sha256"]


def test_parity_drift_beyond_the_tolerance_stops_the_export() -> None:
    want = {"label": np.array([0, 1]), "probabilities": np.array([[0.9, 0.1], [0.2, 0.8]])}
    tolerances = {"label": Tolerance("exact"), "probabilities": Tolerance("abs", 1e-5)}
    record = compare(want, want, tolerances)
    assert record == {"rows": 2, "labels_equal": True, "max_abs_diff": {"probabilities": 0.0}}
    with pytest.raises(ParityError, match="probabilities: max abs diff"):
        compare({**want, "probabilities": want["probabilities"] + 1e-4}, want, tolerances)
    with pytest.raises(ParityError, match="label: 1 of 2 rows differ"):
        compare({**want, "label": np.array([0, 0])}, want, tolerances)
    with pytest.raises(ParityError, match="max rel diff"):
        compare({"p": np.array([np.nan])}, {"p": np.array([1.0])}, {"p": Tolerance("rel", 1e-4)})


def test_a_graph_without_the_promised_signature_is_refused() -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    promised = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
                "outputs": [{"name": "prediction", "datatype": "FP32", "shape": [-1]}]}
    with pytest.raises(ParityError, match="not the promised"):
        check_graph(model, promised)
    onnx.checker.check_model(model)


def test_an_unchanged_model_is_skipped_and_a_damaged_one_exported_again(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--out", str(tmp_path), "--only", "diabetes-linear"]
    cli.main(args)
    model_file = tmp_path / "diabetes-linear" / "1" / "model.onnx"
    first = model_file.read_bytes()
    assert "diabetes-linear/1: exported" in capsys.readouterr().out
    cli.main(args)
    assert "diabetes-linear/1: unchanged, skipped" in capsys.readouterr().out
    model_file.write_bytes(first + b"\0")
    cli.main(args)
    assert "diabetes-linear/1: exported" in capsys.readouterr().out
    assert model_file.read_bytes() == first
    assert sorted(p.name for p in (tmp_path / "diabetes-linear" / "1").iterdir()) == [
        "baseline.json", "examples.json", "manifest.json", "model.onnx"]
