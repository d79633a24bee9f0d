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
from model_registry import registry, template
from model_registry.add import AddError, add, reimport
from model_registry.registry import ModelEntry, Project
from tests.conftest import ROOT, LambdaContext
from tests.model_registry.conftest import snapshot

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
        tmp_path: Path, project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    source = handmade(tmp_path / "scorer.onnx")
    models = project.models_dir
    entry = add("hand-scorer", source, labels=["red", "green", "blue"],
                project=project)

    manifest = load_manifest(models / "hand-scorer" / "1" / "manifest.json")
    assert (models / "hand-scorer" / "1" / "model.onnx").read_bytes() == source.read_bytes()
    assert manifest.sha256 == entry.files["1"]["sha256"]
    assert [(s.name, s.datatype, s.shape) for s in manifest.inputs] == [("x", "FP32", (-1, -1))]
    assert [(s.name, s.datatype, s.shape) for s in manifest.outputs] == [
        ("class", "INT64", (-1,)), ("scores", "FP32", (-1, -1))]
    assert manifest.labels == ("red", "green", "blue")
    assert manifest.platform == "onnxruntime_onnx"
    assert sorted(p.name for p in (models / "hand-scorer" / "1").iterdir()) == [
        "examples.json", "manifest.json", "model.onnx"]

    saved = registry.load(project.registry)
    assert project.registry.read_text().startswith("# The registry of served models")
    assert [e.name for e in saved][-1] == "hand-scorer" and saved[-1] == entry
    assert (entry.source, entry.versions, entry.current) == ("onnx", ["1"], "1")
    # The file is kept in the repository, recorded by a path relative to it.
    assert entry.files["1"]["path"] == "model_store/hand-scorer/1/model.onnx"
    assert (project.root / entry.files["1"]["path"]).read_bytes() == source.read_bytes()
    assert entry.group == 0  # the first group with room
    assert "/v2/models/hand-scorer/infer" in (project.root / template.group_file(0)).read_text()
    assert (project.events / "hand-scorer" / "version-infer.json").exists()
    # Added without background rows, it has no explanations: no explain events to try
    assert not list((project.events / "hand-scorer").glob("*explain*"))
    assert_same(served(models, entry, "/v2/models/hand-scorer/infer", ROWS, monkeypatch),
                direct(source, ROWS))


def logistic_regression(tmp_path: Path) -> tuple[np.ndarray, LogisticRegression, Path]:
    """A scikit-learn logistic regression on 3 features, its training rows and its ONNX file
    (skl2onnx, zipmap=False)."""
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    classifier = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    source = tmp_path / "logreg.onnx"
    source.write_bytes(to_onnx(classifier, x[:1], options={"zipmap": False},
                               target_opset=18).SerializeToString())
    return x, classifier, source


def test_an_sklearn_model_converted_without_zipmap_is_served_with_its_own_names(
        tmp_path: Path, project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    _, classifier, source = logistic_regression(tmp_path)
    entry = add("logreg", source, project=project)
    manifest = load_manifest(project.models_dir / "logreg" / "1" / "manifest.json")
    assert [(s.name, s.datatype) for s in manifest.outputs] == [
        ("label", "INT64"), ("probabilities", "FP32")]
    assert manifest.inputs[0].shape == (-1, 3)
    outputs = served(project.models_dir, entry, "/v2/models/logreg/infer", ROWS, monkeypatch)
    np.testing.assert_array_equal(outputs["label"], classifier.predict(ROWS))
    np.testing.assert_allclose(outputs["probabilities"], classifier.predict_proba(ROWS), atol=1e-5)


def test_a_tabular_model_is_explained_with_the_background_it_was_added_with(
        tmp_path: Path, project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    x, classifier, source = logistic_regression(tmp_path)
    models = project.models_dir
    # Given no background rows: served, but /explain says how to enable explanations
    entry = add("logreg", source, project=project)
    refused = served(models, entry, "/v2/models/logreg/explain", ROWS, monkeypatch, status=404)
    assert "BACKGROUND=rows.npy" in refused["error"]
    # When it is added again with BACKGROUND (float64 rows: cast to the input's FP32)
    background = tmp_path / "rows.npy"
    np.save(background, x[:10].astype(np.float64))
    entry = add("logreg", source, version="2", make_current=True, project=project,
                background_path=background)
    record = entry.files["2"]
    assert record["background"] == "model_store/logreg/2/background.npy"
    assert len(record["background_sha256"]) == 64
    outputs = served(models, entry, "/v2/models/logreg/explain", ROWS, monkeypatch)
    # Then Kernel SHAP (3 features: every coalition, exact) adds up to each row's probability
    probabilities = classifier.predict_proba(ROWS)
    target = outputs["target"]
    np.testing.assert_array_equal(target, probabilities.argmax(axis=1))
    np.testing.assert_allclose(outputs["base_value"] + outputs["attributions"].sum(axis=1),
                               probabilities[np.arange(len(ROWS)), target], atol=1e-5)
    # and `make models` imports it again, background included, from what models.yaml records
    added = next(e for e in registry.load(project.registry) if e.name == "logreg")
    assert reimport(added, tmp_path / "again", project.root) == ["1", "2"]
    assert (tmp_path / "again" / "logreg" / "2" / "background.npz").exists()
    # The same file added again to version 1 with the rows: recorded for version 1 (never
    # reported added and then lost), and served with explanations from the next import
    entry = add("logreg", source, version="1", project=project, background_path=background)
    assert entry.files["1"]["background"] == "model_store/logreg/1/background.npy"
    added = next(e for e in registry.load(project.registry) if e.name == "logreg")
    assert added.files["1"]["background_sha256"] == record["background_sha256"]
    assert reimport(added, tmp_path / "again-1", project.root) == ["1", "2"]
    assert (tmp_path / "again-1" / "logreg" / "1" / "background.npz").exists()
    # A background that does not fit the input is refused before anything is recorded
    np.save(background, np.zeros((5, 4)))
    message = refusal(project, source, name="logreg", version="3", background_path=background)
    assert "background" in message and "[5, 4]" in message


def test_a_second_version_is_served_beside_the_first_and_can_become_current(
        tmp_path: Path, project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    models = project.models_dir
    add("scorer", handmade(tmp_path / "v1.onnx"), project=project)
    entry = add("scorer", handmade(tmp_path / "v2.onnx", scale=3.0),
                project=project)
    assert (entry.versions, entry.current) == (["1", "2"], "1")
    assert {p.name for p in (models / "scorer").iterdir()} == {"1", "2"}
    base = "/v2/models/scorer"
    assert_same(served(models, entry, f"{base}/infer", ROWS, monkeypatch),
                direct(tmp_path / "v1.onnx", ROWS))
    assert_same(served(models, entry, f"{base}/versions/2/infer", ROWS, monkeypatch),
                direct(tmp_path / "v2.onnx", ROWS))
    entry = add("scorer", handmade(tmp_path / "v3.onnx", scale=4.0), version="2024-06",
                make_current=True, project=project)
    assert (entry.versions, entry.current) == (["1", "2", "2024-06"], "2024-06")
    assert_same(served(models, entry, f"{base}/infer", ROWS, monkeypatch),
                direct(tmp_path / "v3.onnx", ROWS))
    # Adding the same file again under its version changes nothing.
    again = add("scorer", tmp_path / "v2.onnx", version="2", project=project)
    assert again.versions == entry.versions
    # The same command run twice (no VERSION) adds no copy of a version as the next one
    before = project.registry.read_text()
    with pytest.raises(AddError, match=r"is scorer version 2 already \(the same sha256\)"):
        add("scorer", tmp_path / "v2.onnx", project=project)
    assert project.registry.read_text() == before


def test_a_tabular_models_feature_names_name_its_explanations_and_stay_with_its_version(
        tmp_path: Path, project: Project) -> None:
    from model_api.service import InferenceService

    x, _, source = logistic_regression(tmp_path)
    background = tmp_path / "rows.npy"
    np.save(background, x[:10])
    # A count that is not the input's width, and repeated names, are refused up front
    assert "gives 2 names; input 'X' has 3 columns" in refusal(
        project, source, feature_names=["age", "bmi"])
    assert "distinct" in refusal(project, source, feature_names=["age", "age", "bp"])
    add("logreg", source, project=project, background_path=background,
        feature_names=["age", "bmi", "bp"])
    service = InferenceService.from_directory(project.models_dir, "logreg", "1")
    assert service.model_metadata("logreg")["parameters"]["feature_names"] == {
        "X": ["age", "bmi", "bp"]}
    body = json.dumps({"inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP32",
                                   "data": [3.0, 0.0, 0.0]}]}).encode()
    summary = json.loads(service.explain("logreg", None, body, {}).body)["parameters"]["summary"]
    assert "because of age" in summary and "X[" not in summary, summary
    # and the monitoring baseline (drift reports) names its features so
    baseline = json.loads((project.models_dir / "logreg" / "1" / "baseline.json").read_text())
    assert sorted(baseline["features"]) == ["age", "bmi", "bp"]
    # `make models` on a fresh clone imports it again with them (its fields file)
    added = next(e for e in registry.load(project.registry) if e.name == "logreg")
    assert added.files["1"]["fields"] == "model_store/logreg/1/fields.json"
    assert reimport(added, tmp_path / "again", project.root) == ["1"]
    again = json.loads((tmp_path / "again" / "logreg" / "1" / "manifest.json").read_text())
    assert again["feature_names"] == {"X": ["age", "bmi", "bp"]}
    # Given no EXAMPLES, its example inputs are the background's first rows, not made-up values
    examples = json.loads((project.models_dir / "logreg" / "1" / "examples.json").read_text())
    np.testing.assert_allclose(examples["inputs"]["X"], x[:2], rtol=1e-6)


def served(models: Path, entry: ModelEntry, path: str, rows: np.ndarray,
           monkeypatch: pytest.MonkeyPatch, status: int = 200) -> dict[str, Any]:
    """Outputs of an infer request for `rows` POSTed to `path` through the real inference handler
    (module init included), run as the added model's function runs: its environment, its models,
    an API Gateway event of events/ given this route and body. For another `status` than 200,
    the answer's JSON body."""
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
    assert answer["statusCode"] == status, answer["body"]
    if status != 200:
        refused: dict[str, Any] = json.loads(answer["body"])
        return refused
    document = json.loads(base64.b64decode(answer["body"]) if answer["isBase64Encoded"]
                          else answer["body"])
    assert document["id"] == "byo" and document["model_name"] == entry.name
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in document["outputs"]}


def refusal(project: Project, source: Path, name: str = "mine", **kwargs: Any) -> str:
    before = snapshot(project)
    with pytest.raises(AddError) as error:
        add(name, source, project=project, **kwargs)
    assert snapshot(project) == before, "a refused model must leave every file as it was"
    return str(error.value)


def test_files_the_api_cannot_serve_are_refused_with_the_reason(
        tmp_path: Path, project: Project) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(handmade(tmp_path / "ok.onnx").read_bytes()[:-37])
    assert "not a valid ONNX model" in refusal(project, corrupt)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf \xff\x00\x13")
    assert "not a valid ONNX model" in refusal(project, garbage)

    complex_input = one_op(tmp_path / "complex.onnx", TensorProto.COMPLEX64, TensorProto.COMPLEX64,
                           ["N", 2])
    assert "COMPLEX64" in refusal(project, complex_input)
    bfloat16_output = one_op(tmp_path / "bf16.onnx", TensorProto.FLOAT, TensorProto.BFLOAT16,
                             ["N", 2], cast=True)
    assert "BFLOAT16" in refusal(project, bfloat16_output)
    unknown_rank = one_op(tmp_path / "rank.onnx", TensorProto.FLOAT, TensorProto.FLOAT)
    assert "rank" in refusal(project, unknown_rank)
    scalar = one_op(tmp_path / "scalar.onnx", TensorProto.FLOAT, TensorProto.FLOAT, in_shape=[])
    assert "batch dimension" in refusal(project, scalar)

    x = np.random.default_rng(0).normal(size=(20, 2)).astype(np.float32)
    zipmap = tmp_path / "zipmap.onnx"  # skl2onnx's default: probabilities as a sequence of maps
    zipmap.write_bytes(to_onnx(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), x[:1],
                               target_opset=18).SerializeToString())
    assert "zipmap=False" in refusal(project, zipmap)


def test_names_versions_and_labels_that_cannot_be_served_are_refused(
        tmp_path: Path, project: Project) -> None:
    source = handmade(tmp_path / "ok.onnx")
    assert "lower-case" in refusal(project, source, name="My_Model")
    # A seed's recipe version is not replaced by a file; a new version of a seed may be added.
    assert "its recipe" in refusal(project, source, name="breast-cancer-mlp", version="1")
    assert "version" in refusal(project, source, version="../1")
    assert "distinct" in refusal(project, source, labels=["a", "a"])
    assert "cannot read" in refusal(project, tmp_path / "missing.onnx")
    add("mine", source, project=project)
    other = handmade(tmp_path / "other.onnx", scale=5.0)
    assert "different file" in refusal(project, other, version="1")


def test_models_yaml_records_no_machine_specific_path(project: Project) -> None:
    entry = ModelEntry("mine", "onnx", ["1"], "1",
                       files={"1": {"path": "/home/me/model.onnx", "sha256": "0" * 64}})
    with pytest.raises(registry.RegistryError, match="model_store/"):
        registry.check(entry)
    assert add_model.stored_path("mine", "2") == "model_store/mine/2/model.onnx"


def test_make_models_reimports_added_versions_and_refuses_a_changed_file(
        tmp_path: Path, project: Project) -> None:
    source = handmade(tmp_path / "scorer.onnx")
    entry = add("scorer", source, labels=["a", "b", "c"], project=project)
    clean = tmp_path / "clean"
    # A fresh clone: build/models is empty, model_store/ and models.yaml are there.
    assert reimport(entry, clean, project.root) == ["1"]
    assert reimport(entry, clean, project.root) == []  # unchanged: left alone
    first = json.loads((project.models_dir / "scorer" / "1" / "manifest.json").read_text())
    assert json.loads((clean / "scorer" / "1" / "manifest.json").read_text()) == first
    handmade(project.root / entry.files["1"]["path"], scale=9.0)
    (clean / "scorer" / "1" / "model.onnx").unlink()
    with pytest.raises(AddError, match="changed since it was added"):
        reimport(entry, clean, project.root)


def test_the_command_line_says_why_it_refuses(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01")
    assert add_model.main(["--name", "a-new-model", "--onnx", str(garbage)]) == 2
    assert "add-model refused: " in capsys.readouterr().err
    assert add_model.main(["--name", "digits-cnn", "--onnx", str(garbage), "--version", "1"]) == 2
    assert "add-model refused: digits-cnn version 1 already exists" in capsys.readouterr().err


def test_a_model_of_two_inputs_gets_attributions_per_input(
        tmp_path: Path, project: Project) -> None:
    """Kernel SHAP over both inputs' features together; the answer names each input's part."""
    weights_a = helper.make_tensor("wa", TensorProto.FLOAT, [2, 2], [1.0, -1.0, 0.5, 2.0])
    weights_b = helper.make_tensor("wb", TensorProto.FLOAT, [3, 2], [0.3, 0.0, -1.0, 1.0, 2.0, 0.1])
    source = save_model(tmp_path / "two.onnx", helper.make_graph(
        [helper.make_node("MatMul", ["a", "wa"], ["za"]),
         helper.make_node("MatMul", ["b", "wb"], ["zb"]),
         helper.make_node("Add", ["za", "zb"], ["z"]),
         helper.make_node("Softmax", ["z"], ["probabilities"], axis=1)],
        "two_inputs",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 2]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        [weights_a, weights_b]))
    rng = np.random.default_rng(3)
    background = tmp_path / "rows.npz"
    np.savez(background, a=rng.normal(size=(6, 2)), b=rng.normal(size=(6, 3)))
    models = project.models_dir
    entry = add("two-inputs", source, project=project, background_path=background)
    assert entry.files["1"]["background"] == "model_store/two-inputs/1/background.npz"
    assert (project.root / entry.files["1"]["background"]).read_bytes() == background.read_bytes()
    from model_api.model import LoadedModel

    model = LoadedModel.load(models / "two-inputs" / "1")
    inputs = {"a": rng.normal(size=(4, 2)).astype(np.float32),
              "b": rng.normal(size=(4, 3)).astype(np.float32)}
    names = ["probabilities", "attributions_a", "attributions_b", "base_value", "target"]
    outputs, parameters = model.explain(inputs, names, {})
    assert parameters["method"] == "kernel_shap"
    assert outputs["attributions_a"].shape == (4, 2) and outputs["attributions_b"].shape == (4, 3)
    target = outputs["target"]
    total = (outputs["base_value"] + outputs["attributions_a"].sum(axis=1)
             + outputs["attributions_b"].sum(axis=1))
    np.testing.assert_allclose(total, outputs["probabilities"][np.arange(4), target], atol=1e-5)


def text_model(path: Path, stopwords: list[str]) -> Path:
    """A text model: lower-cased text [N] -> [N] (a StringNormalizer, with `stopwords`)."""
    attributes: dict[str, Any] = {"case_change_action": "LOWER", "locale": "C.UTF-8"}
    if stopwords:
        attributes["stopwords"] = stopwords
    model = helper.make_model(helper.make_graph(
        [helper.make_node("StringNormalizer", ["text"], ["lowered"], **attributes)], "text",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("lowered", TensorProto.STRING, ["N"])]),
        opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


def test_a_text_model_must_answer_one_row_per_text_beyond_ascii(
        tmp_path: Path, project: Project) -> None:
    # A text model answering every text (accents, Chinese, emoji, stop words alone, empty)
    entry = add("lowered", text_model(tmp_path / "ok.onnx", []), project=project)
    assert entry.versions == ["1"]
    # One that drops a text made of stop words only (a StringNormalizer's stop words act on
    # whole strings) is refused, and nothing is written
    before = snapshot(project)
    with pytest.raises(AddError, match="one row per text"):
        add("dropping", text_model(tmp_path / "drops.onnx", ["the"]), project=project)
    assert snapshot(project) == before


def test_a_baseline_travels_with_an_added_model_and_is_checked_by_its_sha256(
        tmp_path: Path, project: Project) -> None:
    """make add-model ... BASELINE=rows.npy: the monitoring baseline (model_api.monitoring)
    summarises those rows and the model's predictions on them, beside the manifest, recorded
    in models.yaml with its sha256 and rebuilt by `make models`; altered, it is refused."""
    from model_api.monitoring import baseline as baselines

    _, classifier, source = logistic_regression(tmp_path)
    rows = tmp_path / "train.npy"
    np.save(rows, np.random.default_rng(2).normal(size=(300, 3)))
    # Given an add without any rows: no baseline (never one of made-up rows)
    entry = add("logreg", source, project=project)
    folder = project.models_dir / "logreg" / "1"
    assert baselines.read(load_manifest(folder / "manifest.json"), folder) is None
    # When version 2 is added with BASELINE rows
    entry = add("logreg", source, version="2", project=project, baseline_path=rows)
    assert entry.files["2"]["baseline"] == "model_store/logreg/2/baseline.npy"
    folder = project.models_dir / "logreg" / "2"
    manifest = load_manifest(folder / "manifest.json")
    document = baselines.read(manifest, folder)
    # Then every input column has its decile bins, and the predictions their class shares
    assert document["rows"] == 300
    assert list(document["features"]) == [f"{manifest.inputs[0].name}[{j}]" for j in range(3)]
    first = next(iter(document["features"].values()))
    assert first["kind"] == "number" and len(first["edges"]) == 9 and sum(first["counts"]) == 300
    expected = np.bincount(classifier.predict(np.load(rows).astype(np.float32)), minlength=2)
    shares = dict(zip(document["prediction"]["categories"], document["prediction"]["counts"],
                      strict=True))
    assert [shares.get("0", 0), shares.get("1", 0)] == expected.tolist()
    # and `make models` rebuilds it from what models.yaml records
    added = next(e for e in registry.load(project.registry) if e.name == "logreg")
    assert "2" in reimport(added, tmp_path / "again", project.root)
    assert (tmp_path / "again" / "logreg" / "2" / "baseline.json").read_bytes() == \
        (folder / "baseline.json").read_bytes()
    # An altered baseline file is refused on read, as an altered model is
    (folder / "baseline.json").write_text((folder / "baseline.json").read_text()
                                          .replace('"rows":300', '"rows":301'))
    with pytest.raises(baselines.BaselineError, match="sha256"):
        baselines.read(manifest, folder)


def test_background_rows_for_a_model_no_method_explains_say_why_it_cannot_be(
        tmp_path: Path, project: Project) -> None:
    """BACKGROUND= for inputs Kernel SHAP cannot take (FP64 [N, 2, 3] beside INT32 [N, 1]):
    refused with the reason no method explains the model, and nothing is written."""
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    path = save_model(tmp_path / "odd.onnx", helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["summed"], keepdims=0),
         helper.make_node("Cast", ["k"], ["scale"], to=TensorProto.DOUBLE),
         helper.make_node("Mul", ["summed", "scale"], ["y"])], "odd",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", 2, 3]),
         helper.make_tensor_value_info("k", TensorProto.INT32, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["N", 3])], [axes]))
    rng = np.random.default_rng(1)
    background = tmp_path / "rows.npz"
    np.savez(background, x=rng.normal(size=(5, 2, 3)),
             k=rng.integers(0, 3, size=(5, 1)).astype(np.int32))
    before = snapshot(project)
    with pytest.raises(AddError, match=r"cannot be explained: no explanation method fits its "
                                       r"inputs .*\(background rows are for tabular models"):
        add("odd-pair", path, background_path=background, project=project)
    assert snapshot(project) == before
