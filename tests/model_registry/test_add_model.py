"""Bring your own ONNX: other exporters' files are served, unservable ones refused with a reason."""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from model_api.manifest import load_manifest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from model_registry import add as add_model
from model_registry import registry
from model_registry.add import AddError, add, reimport
from model_registry.registry import ModelEntry
from tests.conftest import ROOT, LambdaContext

HANDLER = ROOT / "functions" / "inference" / "app.py"
ROWS = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)

OPSET = [helper.make_opsetid("", 18)]


def save_model(path: Path, graph: onnx.GraphProto) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="handmade")
    model.ir_version = 10
    onnx.save(model, path)
    return path


def handmade(path: Path, scale: float = 2.0) -> Path:
    """A 3-class scorer built with onnx.helper: symbolic batch and a symbolic feature dim."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [1], [scale])
    return save_model(path, helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["scaled"]),
         helper.make_node("Softmax", ["scaled"], ["scores"], axis=1),
         helper.make_node("ArgMax", ["scores"], ["class"], axis=1, keepdims=0)],
        "handmade",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "classes"])],
        [helper.make_tensor_value_info("class", TensorProto.INT64, ["batch"]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "classes"])],
        [weights]))


def direct(source: Path, rows: np.ndarray) -> dict[str, np.ndarray]:
    """What onnxruntime itself answers for the file as it was given."""
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: rows}), strict=True))


def assert_same(served_outputs: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert served_outputs.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_allclose(served_outputs[name], value, rtol=1e-6, atol=1e-7)


def one_op(path: Path, in_type: int, out_type: int, in_shape: list[int | str] | None = None,
           cast: bool = False) -> Path:
    """x -> y through one Identity (or a Cast to out_type); in_shape None: unknown rank."""
    node = (helper.make_node("Cast", ["x"], ["y"], to=out_type) if cast
            else helper.make_node("Identity", ["x"], ["y"]))
    return save_model(path, helper.make_graph(
        [node], "one_op",
        [helper.make_tensor_value_info("x", in_type, in_shape)],
        [helper.make_tensor_value_info("y", out_type, in_shape)]))


def test_a_handmade_model_is_served_with_a_manifest_derived_from_its_graph(
        tmp_path: Path, registry_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = handmade(tmp_path / "scorer.onnx")
    models = tmp_path / "models"
    entry = add("hand-scorer", source, labels=["red", "green", "blue"],
                registry_path=registry_path, models_dir=models)

    manifest = load_manifest(models / "hand-scorer" / "1" / "manifest.json")
    assert (models / "hand-scorer" / "1" / "model.onnx").read_bytes() == source.read_bytes()
    assert manifest.sha256 == entry.files["1"]["sha256"]
    assert [(s.name, s.datatype, s.shape) for s in manifest.inputs] == [("x", "FP32", (-1, -1))]
    assert [(s.name, s.datatype, s.shape) for s in manifest.outputs] == [
        ("class", "INT64", (-1,)), ("scores", "FP32", (-1, -1))]
    assert manifest.labels == ("red", "green", "blue")
    assert manifest.platform == "onnxruntime_onnx"
    assert sorted(p.name for p in (models / "hand-scorer" / "1").iterdir()) == [
        "manifest.json", "model.onnx"]

    saved = registry.load(registry_path)
    assert registry_path.read_text().startswith("# header kept\n")
    assert [e.name for e in saved] == ["breast-cancer-mlp", "hand-scorer"]
    assert saved[1] == entry
    assert (entry.source, entry.versions, entry.current) == ("onnx", ["1"], "1")
    assert entry.files["1"]["path"] == str(source)
    assert_same(served(models, entry, "/v2/models/hand-scorer/infer", ROWS, monkeypatch),
                direct(source, ROWS))


def test_an_sklearn_model_converted_without_zipmap_is_served_with_its_own_names(
        tmp_path: Path, registry_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    classifier = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    source = tmp_path / "logreg.onnx"
    source.write_bytes(to_onnx(classifier, x[:1], options={"zipmap": False},
                               target_opset=18).SerializeToString())
    entry = add("logreg", source, registry_path=registry_path, models_dir=tmp_path / "models")
    manifest = load_manifest(tmp_path / "models" / "logreg" / "1" / "manifest.json")
    assert [(s.name, s.datatype) for s in manifest.outputs] == [
        ("label", "INT64"), ("probabilities", "FP32")]
    assert manifest.inputs[0].shape == (-1, 3)
    outputs = served(tmp_path / "models", entry, "/v2/models/logreg/infer", ROWS, monkeypatch)
    np.testing.assert_array_equal(outputs["label"], classifier.predict(ROWS))
    np.testing.assert_allclose(outputs["probabilities"], classifier.predict_proba(ROWS), atol=1e-5)


def test_a_second_version_is_served_beside_the_first_and_can_become_current(
        tmp_path: Path, registry_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    add("scorer", handmade(tmp_path / "v1.onnx"), registry_path=registry_path, models_dir=models)
    entry = add("scorer", handmade(tmp_path / "v2.onnx", scale=3.0),
                registry_path=registry_path, models_dir=models)
    assert (entry.versions, entry.current) == (["1", "2"], "1")
    assert {p.name for p in (models / "scorer").iterdir()} == {"1", "2"}
    base = "/v2/models/scorer"
    assert_same(served(models, entry, f"{base}/infer", ROWS, monkeypatch),
                direct(tmp_path / "v1.onnx", ROWS))
    assert_same(served(models, entry, f"{base}/versions/2/infer", ROWS, monkeypatch),
                direct(tmp_path / "v2.onnx", ROWS))
    entry = add("scorer", handmade(tmp_path / "v3.onnx", scale=4.0), version="2024-06",
                make_current=True, registry_path=registry_path, models_dir=models)
    assert (entry.versions, entry.current) == (["1", "2", "2024-06"], "2024-06")
    assert_same(served(models, entry, f"{base}/infer", ROWS, monkeypatch),
                direct(tmp_path / "v3.onnx", ROWS))
    # Adding the same file again under its version changes nothing.
    again = add("scorer", tmp_path / "v2.onnx", version="2", registry_path=registry_path,
                models_dir=models)
    assert again.versions == entry.versions


def served(models: Path, entry: ModelEntry, path: str, rows: np.ndarray,
           monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    """Outputs of an infer request for `rows` POSTed to `path` through the real inference handler
    (module init included), run as the added model's function runs: its environment, its models,
    an API Gateway event of events/ given this route and body."""
    event = json.loads((ROOT / "events" / "breast-cancer-mlp" / "version-infer.json").read_text())
    version = path.split("/versions/")[1].split("/")[0] if "/versions/" in path else None
    manifest = load_manifest(models / entry.name / (version or entry.current) / "manifest.json")
    tensor = {"name": manifest.inputs[0].name, "shape": list(rows.shape), "datatype": "FP32",
              "data": rows.ravel().tolist()}
    body = {"id": "byo", "inputs": [tensor]}
    event.update(path=path, body=base64.b64encode(json.dumps(body).encode()).decode(),
                 resource=path.replace(f"/versions/{version}/", "/versions/{version}/"),
                 pathParameters={"version": version} if version else None)
    event["requestContext"].update(path=f"/v1{path}", resourcePath=event["resource"])
    monkeypatch.setenv("MODELS_DIR", str(models))
    monkeypatch.setenv("MODEL_NAME", entry.name)
    monkeypatch.setenv("MODEL_VERSION", entry.current)
    spec = importlib.util.spec_from_file_location(f"handler_{entry.name}_{len(rows)}", HANDLER)
    assert spec and spec.loader
    handler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler)
    answer = handler.lambda_handler(event, LambdaContext())
    assert answer["statusCode"] == 200, answer["body"]
    document = json.loads(base64.b64decode(answer["body"]) if answer["isBase64Encoded"]
                          else answer["body"])
    assert document["id"] == "byo" and document["model_name"] == entry.name
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in document["outputs"]}


def refusal(tmp_path: Path, registry_path: Path, source: Path, name: str = "mine",
            **kwargs: Any) -> str:
    before = registry_path.read_text()
    with pytest.raises(AddError) as error:
        add(name, source, registry_path=registry_path, models_dir=tmp_path / "models",
            **kwargs)
    assert registry_path.read_text() == before, "a refused model must not be recorded"
    return str(error.value)


def test_files_the_api_cannot_serve_are_refused_with_the_reason(
        tmp_path: Path, registry_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(handmade(tmp_path / "ok.onnx").read_bytes()[:-37])
    assert "not a valid ONNX model" in refusal(tmp_path, registry_path, corrupt)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf \xff\x00\x13")
    assert "not a valid ONNX model" in refusal(tmp_path, registry_path, garbage)

    complex_input = one_op(tmp_path / "complex.onnx", TensorProto.COMPLEX64, TensorProto.COMPLEX64,
                           ["N", 2])
    assert "COMPLEX64" in refusal(tmp_path, registry_path, complex_input)
    bfloat16_output = one_op(tmp_path / "bf16.onnx", TensorProto.FLOAT, TensorProto.BFLOAT16,
                             ["N", 2], cast=True)
    assert "BFLOAT16" in refusal(tmp_path, registry_path, bfloat16_output)
    unknown_rank = one_op(tmp_path / "rank.onnx", TensorProto.FLOAT, TensorProto.FLOAT)
    assert "rank" in refusal(tmp_path, registry_path, unknown_rank)
    scalar = one_op(tmp_path / "scalar.onnx", TensorProto.FLOAT, TensorProto.FLOAT, in_shape=[])
    assert "batch dimension" in refusal(tmp_path, registry_path, scalar)

    x = np.random.default_rng(0).normal(size=(20, 2)).astype(np.float32)
    zipmap = tmp_path / "zipmap.onnx"  # skl2onnx's default: probabilities as a sequence of maps
    zipmap.write_bytes(to_onnx(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), x[:1],
                               target_opset=18).SerializeToString())
    assert "zipmap=False" in refusal(tmp_path, registry_path, zipmap)


def test_names_versions_and_labels_that_cannot_be_served_are_refused(
        tmp_path: Path, registry_path: Path) -> None:
    source = handmade(tmp_path / "ok.onnx")
    assert "lower-case" in refusal(tmp_path, registry_path, source, name="My_Model")
    assert "seed model" in refusal(tmp_path, registry_path, source, name="breast-cancer-mlp")
    assert "seed model" in refusal(tmp_path, registry_path, source, name="digits-cnn")
    assert "version" in refusal(tmp_path, registry_path, source, version="../1")
    assert "distinct" in refusal(tmp_path, registry_path, source, labels=["a", "a"])
    assert "cannot read" in refusal(tmp_path, registry_path, tmp_path / "missing.onnx")
    add("mine", source, registry_path=registry_path, models_dir=tmp_path / "models")
    other = handmade(tmp_path / "other.onnx", scale=5.0)
    assert "different file" in refusal(tmp_path, registry_path, other, version="1")


def test_a_file_under_build_is_refused_because_make_clean_deletes_it(
        registry_path: Path) -> None:
    with pytest.raises(AddError, match="under build/"):
        add_model.recorded_path(ROOT / "build" / "models" / "x.onnx")
    assert add_model.recorded_path(ROOT / "models" / "x.onnx") == "models/x.onnx"


def test_make_models_reimports_added_versions_and_refuses_a_changed_file(
        tmp_path: Path, registry_path: Path) -> None:
    source = handmade(tmp_path / "scorer.onnx")
    entry = add("scorer", source, labels=["a", "b", "c"], registry_path=registry_path,
                models_dir=tmp_path / "first")
    clean = tmp_path / "clean"
    assert reimport(entry, clean) == ["1"]
    assert reimport(entry, clean) == []  # unchanged: left alone
    first = json.loads((tmp_path / "first" / "scorer" / "1" / "manifest.json").read_text())
    assert json.loads((clean / "scorer" / "1" / "manifest.json").read_text()) == first
    handmade(source, scale=9.0)
    (clean / "scorer" / "1" / "model.onnx").unlink()
    with pytest.raises(AddError, match="changed since it was added"):
        reimport(entry, clean)


def test_the_command_line_says_why_it_refuses(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01")
    assert add_model.main(["--name", "breast-cancer-mlp", "--onnx", str(garbage)]) == 2
    assert "add-model refused: breast-cancer-mlp is a seed model" in capsys.readouterr().err
