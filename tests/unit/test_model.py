"""LoadedModel: sha256 before any session, the graph checked against its manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from model_api import model as model_module
from model_api.model import LoadedModel, ModelIntegrityError, ModelLoadError, intra_op_threads
from onnx import helper

from tests.unit.tiny_models import add_version, graph_model, identity_version, write_version


def test_a_checked_model_runs_on_the_cpu(tmp_path: Path) -> None:
    model = LoadedModel.load(add_version(tmp_path / "add" / "1"))
    assert model.manifest.name == "add" and model.providers == ("CPUExecutionProvider",)
    a = np.array([[1, 2]], dtype=np.float32)
    b = np.array([[10, 20]], dtype=np.float32)
    results = model.run({"a": a, "b": b}, ["sum"])
    assert list(results) == ["sum"] and results["sum"].tolist() == [[11, 22]]


def test_strings_in_strings_out(tmp_path: Path) -> None:
    model = LoadedModel.load(identity_version(tmp_path / "text" / "1", "BYTES", (-1,)))
    texts = np.array(["héllo", ""], dtype=object)
    assert model.run({"x": texts}, ["y"])["y"].tolist() == ["héllo", ""]


def test_a_sha256_mismatch_never_reaches_onnxruntime(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a model file changed after export
    folder = add_version(tmp_path / "add" / "1")
    (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes() + b"\0")
    created: list[Any] = []
    monkeypatch.setattr(model_module.ort, "InferenceSession",
                        lambda *args, **kwargs: created.append(args))
    # When it is loaded, Then it is refused and no session was ever created
    with pytest.raises(ModelIntegrityError, match=r"sha256 is [0-9a-f]{64} but manifest\.json"):
        LoadedModel.load(folder)
    assert created == []


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda m: m.pop("inputs"), "inputs must be a non-empty list"),
    (lambda m: m.update(sha256="ABC"), "sha256 must be 64 lowercase hex digits"),
    (lambda m: m.update(model_file="../model.onnx"), "must be a file name"),
    (lambda m: m.update(schema_version=2), "schema_version is 2"),
    (lambda m: m["inputs"][0].update(shape=[]), "shape must be a non-empty list"),
    (lambda m: m.update(model_file="other.onnx"), "cannot read model file"),
])
def test_a_bad_manifest_is_refused_naming_the_field(tmp_path: Path, change: Any,
                                                    fragment: str) -> None:
    folder = add_version(tmp_path / "add" / "1")
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match=fragment):
        LoadedModel.load(folder)


def test_a_missing_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot read manifest"):
        LoadedModel.load(tmp_path)


def test_a_corrupt_file_with_a_matching_sha256_is_refused_by_onnxruntime(tmp_path: Path) -> None:
    folder = add_version(tmp_path / "add" / "1")
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "model.onnx").write_bytes(b"not an onnx model")
    manifest["sha256"] = hashlib.sha256(b"not an onnx model").hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load it"):
        LoadedModel.load(folder)


@pytest.mark.parametrize(("inputs", "outputs", "fragment"), [
    ([("z", "FP32", (-1, 3))], [("y", "FP32", (-1, 3))], "the graph's inputs are ['x']"),
    ([("x", "FP32", (-1, 3))], [("out", "FP32", (-1, 3))], "the graph's outputs are ['y']"),
    ([("x", "FP64", (-1, 3))], [("y", "FP32", (-1, 3))], "tensor(float) in the graph but FP64"),
    ([("x", "FP32", (-1, 3))], [("y", "INT64", (-1, 3))], "output 'y' is tensor(float)"),
    ([("x", "FP32", (-1, 4))], [("y", "FP32", (-1, 3))], "input 'x' has shape"),
    ([("x", "FP32", (-1,))], [("y", "FP32", (-1, 3))], "input 'x' has shape"),
])
def test_the_graph_must_match_its_manifest(tmp_path: Path, inputs: Any, outputs: Any,
                                           fragment: str) -> None:
    graph = graph_model([helper.make_node("Identity", ["x"], ["y"])],
                        [("x", "FP32", (-1, 3))], [("y", "FP32", (-1, 3))])
    folder = write_version(tmp_path / "m" / "1", graph, inputs, outputs)
    with pytest.raises(ModelLoadError) as caught:
        LoadedModel.load(folder)
    assert fragment in str(caught.value)


def test_a_fixed_manifest_dimension_fits_a_variable_graph_dimension(tmp_path: Path) -> None:
    graph = graph_model([helper.make_node("Identity", ["x"], ["y"])],
                        [("x", "FP32", (-1, -1))], [("y", "FP32", (-1, -1))])
    folder = write_version(tmp_path / "m" / "1", graph, [("x", "FP32", (-1, 5))],
                           [("y", "FP32", (-1, 5))])
    assert LoadedModel.load(folder).manifest.inputs[0].shape == (-1, 5)


def test_a_variable_manifest_dimension_needs_a_variable_graph_dimension(tmp_path: Path) -> None:
    graph = graph_model([helper.make_node("Identity", ["x"], ["y"])],
                        [("x", "FP32", (1, 3))], [("y", "FP32", (1, 3))])
    folder = write_version(tmp_path / "m" / "1", graph, [("x", "FP32", (-1, 3))],
                           [("y", "FP32", (-1, 3))])
    with pytest.raises(ModelLoadError, match="does not accept every shape"):
        LoadedModel.load(folder)


def test_providers_are_passed_to_onnxruntime(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[Any] = []
    real = ort.InferenceSession

    def spy(model: bytes, sess_options: Any, providers: list[str]) -> Any:
        asked.append(providers)
        return real(model, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(model_module.ort, "InferenceSession", spy)
    LoadedModel.load(add_version(tmp_path / "add" / "1"),
                     providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert asked == [["CUDAExecutionProvider", "CPUExecutionProvider"]]


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("3", 3), ("0", None),
                                                 ("many", None)])
def test_intra_op_threads_come_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                    value: str | None,
                                                    expected: int | None) -> None:
    monkeypatch.setattr(model_module.os, "cpu_count", lambda: 7)
    if value is None:
        monkeypatch.delenv(model_module.THREADS_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(model_module.THREADS_VARIABLE, value)
    assert intra_op_threads() == (expected or 7)


@pytest.mark.parametrize(("memory", "expected"), [("128", 1), ("1024", 1), ("3008", 2),
                                                  ("10240", 6), ("", 8)])
def test_threads_follow_the_vcpus_lambda_memory_pays_for(monkeypatch: pytest.MonkeyPatch,
                                                         memory: str, expected: int) -> None:
    monkeypatch.setattr(model_module.os, "cpu_count", lambda: 8)
    monkeypatch.delenv(model_module.THREADS_VARIABLE, raising=False)
    monkeypatch.setenv(model_module.LAMBDA_MEMORY_VARIABLE, memory)
    assert intra_op_threads() == expected


def test_threads_never_spin_on_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(model_module.LAMBDA_MEMORY_VARIABLE, "1024")
    options = model_module.session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
