"""`make optimize`: candidates measured against their parent, the gate both ways, and a passing
candidate published as a new version whose manifest carries the figures that were measured.

Timing uses two short passes here (seconds in all); the gate's speed rules are switched off
where a test needs a fixed verdict, so no verdict hangs on this machine's timing noise: the
size, metric and agreement figures those tests check are deterministic.
"""

from __future__ import annotations

import io
import json
import math
import shutil
from itertools import pairwise
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from model_api.integrity import sha256_of
from onnx import TensorProto, helper, numpy_helper

from model_export.artifact import read_intact
from model_registry import add, registry
from model_registry.optimize.data import OptimizeError
from model_registry.optimize.gate import Gate, judge
from model_registry.optimize.result import Result
from model_registry.optimize.step import optimize
from model_registry.optimize.timing import Timing
from model_registry.registry import Project
from tests.datasets import whole_dataset
from tests.model_registry.test_add_model import served

FAST = Timing(passes=2, pass_seconds=0.002)
SIZE_ONLY = Gate(min_speedup=math.inf, max_slowdown=math.inf)  # verdicts from size and metric


def dense_classifier(path: Path, sizes: tuple[int, ...], seed: int = 0,
                     weights: list[np.ndarray] | None = None) -> Path:
    """A ReLU MLP with random normal weights (He-scaled), built with onnx.helper: features FP32
    [n, sizes[0]] -> label INT64 [n], probabilities FP32 [n, sizes[-1]]."""
    generator = np.random.default_rng(seed)
    weights = weights or [
        (generator.standard_normal((a, b)) * np.sqrt(2 / a)).astype(np.float32)
        for a, b in pairwise(sizes)]
    nodes, initializers, current = [], [], "features"
    for number, matrix in enumerate(weights):
        initializers += [numpy_helper.from_array(matrix, f"w{number}"),
                         numpy_helper.from_array(np.zeros(matrix.shape[1], np.float32),
                                                 f"b{number}")]
        nodes += [helper.make_node("MatMul", [current, f"w{number}"], [f"m{number}"]),
                  helper.make_node("Add", [f"m{number}", f"b{number}"], [f"a{number}"])]
        current = f"a{number}"
        if number < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"r{number}"]))
            current = f"r{number}"
    nodes += [helper.make_node("Softmax", [current], ["probabilities"], axis=1),
              helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0)]
    graph = helper.make_graph(
        nodes, "dense",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                       ["batch", sizes[-1]])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


def labels_of(model: Path | bytes, rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model),
                                   providers=["CPUExecutionProvider"])
    return session.run(["label"], {"features": rows})[0]


def added(tmp_path: Path, project: Project, model: Path, rows: np.ndarray,
          targets: np.ndarray) -> Path:
    """Add `model` as `dense` version 1 (a classifier) and write its rows file; the file."""
    add.add("dense", model, labels=[f"c{i}" for i in range(int(targets.max()) + 1)],
            project=project)
    np.savez(tmp_path / "rows.npz", features=rows, targets=targets)
    return tmp_path / "rows.npz"


def test_a_passing_candidate_is_published_with_the_figures_that_were_measured(
        tmp_path: Path, project: Project) -> None:
    # Given an added 32-256-256-4 MLP and rows labelled by the model itself
    rows = np.random.default_rng(1).standard_normal((300, 32)).astype(np.float32)
    parent = dense_classifier(tmp_path / "dense.onnx", (32, 256, 256, 4))
    rows_file = added(tmp_path, project, parent, rows, labels_of(parent, rows))
    models, table = project.models_dir, io.StringIO()
    # When it is optimised with dynamic int8 (4x smaller weights)
    outcome = optimize("dense", rows=rows_file, methods=("dynamic-int8",), timing=FAST,
                       gate=SIZE_ONLY, project=project, out=table)
    # Then version 2 is published beside version 1, not current
    assert outcome.published == "2", table.getvalue()
    entry = next(e for e in registry.load(project.registry) if e.name == "dense")
    assert entry.versions == ["1", "2"] and entry.current == "1"
    assert entry.files["2"]["path"] == "model_store/dense/2/model.onnx"
    assert entry.files["2"]["fields"] == "model_store/dense/2/fields.json"
    assert "| dynamic-int8" in table.getvalue() and "PASS" in table.getvalue()
    # and its manifest's figures are the ones measured here again, independently
    manifest = read_intact(models / "dense" / "2")
    assert manifest is not None
    child = (models / "dense" / "2" / "model.onnx").read_bytes()
    optimization = manifest.extra["optimization"]
    assert optimization["method"] == "dynamic-int8"
    assert optimization["parent_version"] == "1"
    assert optimization["parent_sha256"] == sha256_of(parent.read_bytes())
    assert optimization["size_ratio"] == pytest.approx(len(parent.read_bytes()) / len(child),
                                                       abs=1e-4)
    assert optimization["size_ratio"] > 3
    targets = labels_of(parent, rows)
    accuracy = float(np.mean(labels_of(child, rows) == targets))
    assert manifest.metrics["test"] == {"accuracy": accuracy, "rows": 300}
    assert optimization["metric_delta"] == {"test": {"accuracy": accuracy - 1.0}}
    assert accuracy >= 0.995
    best = outcome.best
    assert best is not None
    assert optimization["latency_ratio_1"] == round(best.latency_ratio(1), 4) > 0
    assert optimization["latency_ratio_1024"] == round(best.latency_ratio(1024), 4) > 0
    assert {"control_ratio_1", "control_ratio_1024", "load_average"} <= set(
        optimization["measured"])
    assert manifest.labels == ("c0", "c1", "c2", "c3") and manifest.task == "classification"
    # and a clean clone's `make models` imports the same bytes with the same manifest
    before = (models / "dense" / "2" / "manifest.json").read_text()
    shutil.rmtree(models / "dense" / "2")
    assert add.reimport(entry, models, project.root) == ["2"]
    assert (models / "dense" / "2" / "manifest.json").read_text() == before


def test_the_published_version_keeps_what_its_parent_is_served_with(
        tmp_path: Path, project: Project) -> None:
    # Given a classifier added without LABELS (no task), with background rows (Kernel SHAP),
    # feature names, examples and baseline rows
    rows = np.random.default_rng(1).standard_normal((300, 32)).astype(np.float32)
    parent = dense_classifier(tmp_path / "dense.onnx", (32, 256, 256, 4))
    np.save(tmp_path / "background.npy", rows[:20])
    np.save(tmp_path / "baseline.npy", rows[:200])
    np.savez(tmp_path / "examples.npz", features=rows[:3])
    names = [f"f{i}" for i in range(32)]
    add.add("dense", parent, background_path=tmp_path / "background.npy",
            baseline_path=tmp_path / "baseline.npy", examples_path=tmp_path / "examples.npz",
            feature_names=names, project=project)
    np.savez(tmp_path / "rows.npz", features=rows, targets=labels_of(parent, rows))
    # When it is optimised without a task: refused, naming TASK; with one, published
    with pytest.raises(OptimizeError, match="TASK=classification"):
        optimize("dense", rows=tmp_path / "rows.npz", methods=("dynamic-int8",), timing=FAST,
                 gate=SIZE_ONLY, project=project, out=io.StringIO())
    outcome = optimize("dense", rows=tmp_path / "rows.npz", methods=("dynamic-int8",),
                       timing=FAST, gate=SIZE_ONLY, task="classification", project=project,
                       out=io.StringIO())
    assert outcome.published == "2"
    # Then version 2 is explained, named, shown and monitored as version 1 is
    one, two = (project.models_dir / "dense" / v for v in ("1", "2"))
    first, second = read_intact(one), read_intact(two)
    assert first is not None and second is not None
    assert second.task == "classification" and second.metrics["test"]["accuracy"] >= 0.99
    assert second.extra["feature_names"] == first.extra["feature_names"] == {"features": names}
    assert second.extra["explanation"]["method"] == first.extra["explanation"]["method"] \
        == "kernel_shap"
    assert (two / "examples.json").read_text() == (one / "examples.json").read_text()
    assert json.loads((two / "baseline.json").read_text())["rows"] == json.loads(
        (one / "baseline.json").read_text())["rows"] == 200


def test_a_candidate_that_loses_accuracy_is_refused_and_nothing_is_published(
        tmp_path: Path, project: Project) -> None:
    # Given a linear classifier and rows a hair's breadth from its decision boundary, so that
    # int8's rounding flips many of them
    generator = np.random.default_rng(2)
    weights = generator.standard_normal((64, 2)).astype(np.float32)
    direction = weights[:, 0] - weights[:, 1]
    rows = generator.standard_normal((400, 64))
    rows -= np.outer(rows @ direction / (direction @ direction), direction)
    rows += np.outer(generator.choice([-1e-3, 1e-3], 400), direction)
    rows = rows.astype(np.float32)
    parent = dense_classifier(tmp_path / "edge.onnx", (64, 2), weights=[weights])
    rows_file = added(tmp_path, project, parent, rows, labels_of(parent, rows))
    before, table = project.registry.read_text(), io.StringIO()
    # When it is optimised
    outcome = optimize("dense", rows=rows_file, methods=("dynamic-int8", "static-int8-qdq"),
                       timing=FAST, gate=SIZE_ONLY, project=project, out=table)
    # Then every candidate fails the metric rule, the table says so, and nothing is recorded
    assert outcome.published is None and outcome.best is None
    for result in outcome.results:
        assert result.metric_delta["test"]["accuracy"] < -0.005, table.getvalue()
        assert any(f.startswith("metric: accuracy") for f in result.failures)
    assert "FAIL metric: accuracy" in table.getvalue()
    assert "nothing published" in table.getvalue()
    assert project.registry.read_text() == before
    assert not (project.root / "model_store" / "dense" / "2").exists()
    assert not (project.models_dir / "dense" / "2").exists()


def test_a_seed_model_is_optimised_and_its_published_version_served_with_its_metric(
        tmp_path: Path, project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the exported breast-cancer-mlp (make models) in a project copy of the test's own
    models = project.models_dir
    parent = read_intact(models / "breast-cancer-mlp" / "1")
    assert parent is not None
    # (whatever versions the registry already has: the published one is the next)
    before = next(e for e in registry.load(project.registry) if e.name == "breast-cancer-mlp")
    new = add.next_version(before)
    table = io.StringIO()
    # When it is optimised with dynamic int8 (3.3x smaller) and fp16 (1.6x smaller)
    outcome = optimize("breast-cancer-mlp", methods=("dynamic-int8", "fp16"), timing=FAST,
                       gate=SIZE_ONLY, project=project, out=table)
    # Then int8 passes and is published as a new version; fp16 is refused for too little
    # benefit
    results = {r.method: r for r in outcome.results}
    assert outcome.published == new, table.getvalue()
    assert results["dynamic-int8"].passed
    assert [f.split(":")[0] for f in results["fp16"].failures] == ["benefit"], table.getvalue()
    entry = next(e for e in registry.load(project.registry) if e.name == "breast-cancer-mlp")
    assert entry.source == "seed" and entry.versions == [*before.versions, new]
    assert entry.current == before.current
    manifest = read_intact(models / "breast-cancer-mlp" / new)
    assert manifest is not None
    # explained and named as its parent (Kernel SHAP on its background; the dataset's names)
    assert manifest.extra["explanation"]["method"] == parent.extra["explanation"]["method"]
    assert manifest.extra["feature_names"] == parent.extra["feature_names"]
    # and its metric deltas are against the parent's manifest metrics, held-back and whole
    for split in ("test", "full_dataset"):
        assert manifest.extra["optimization"]["metric_delta"][split]["accuracy"] == (
            pytest.approx(manifest.metrics[split]["accuracy"]
                          - parent.metrics[split]["accuracy"], abs=1e-12))
    # and served by the real handler beside version 1, its whole-dataset accuracy is its
    # manifest's
    inputs, targets = whole_dataset("breast-cancer-mlp")
    answer = served(models, entry, f"/v2/models/breast-cancer-mlp/versions/{new}/infer",
                    inputs, monkeypatch)
    accuracy = float(np.mean(answer["label"] == targets))
    assert accuracy == manifest.metrics["full_dataset"]["accuracy"]
    # and `make models` on a clean clone imports the new version from its file, trains version 1
    shutil.rmtree(models / "breast-cancer-mlp" / new)
    assert add.reimport(entry, models, project.root) == [new]
    # and the new version can be optimised in turn, measured on its parent's recipe rows
    again = optimize("breast-cancer-mlp", new, methods=("onnxslim",), timing=FAST,
                     publish=False, project=project,
                     out=io.StringIO())
    assert set(again.results[0].metrics) == {"test", "full_dataset"}


def test_a_larger_dense_model_quantises_to_a_quarter_of_its_size(
        tmp_path: Path, project: Project) -> None:
    """Four dense layers of 512 units with random weights (timing and size only: labels are the
    float model's own, so the metric is agreement with it)."""
    rows = np.random.default_rng(3).standard_normal((256, 256)).astype(np.float32)
    parent = dense_classifier(tmp_path / "big.onnx", (256, 512, 512, 512, 512, 10))
    rows_file = added(tmp_path, project, parent, rows, labels_of(parent, rows))
    outcome = optimize("dense", rows=rows_file, methods=("dynamic-int8", "static-int8-qdq"),
                       timing=FAST, publish=False, project=project, out=io.StringIO())
    for result in outcome.results:
        assert result.error is None and result.size_ratio > 3.5
        assert result.agreement["label_agreement"] > 0.9


@pytest.mark.parametrize(("accuracy_delta", "size_ratio", "speedups", "failed"), [
    (0.0, 2.0, (1.0, 1.0), []),
    (-0.004, 2.0, (1.0, 1.0), []),  # 0.4 pp lost: allowed
    (-0.006, 2.0, (1.0, 1.0), ["metric"]),
    (0.0, 1.5, (1.0, 1.0), ["benefit"]),
    (0.0, 1.0, (1.0, 1.25), []),  # faster at 1,024 rows only: enough
    (0.0, 3.0, (0.5, 0.3), ["slower", "slower"]),  # 3x smaller but 2x and 3.3x slower
    (0.0, 3.0, (0.85, 1.3), []),
])
def test_the_gate(accuracy_delta: float, size_ratio: float, speedups: tuple[float, float],
                  failed: list[str]) -> None:
    result = Result("m", size_ratio=size_ratio,
                    latency_ms={1: (1.0, 1.0 / speedups[0]), 1024: (1.0, 1.0 / speedups[1])})
    result.metrics = {"test": {"accuracy": 0.9 + accuracy_delta, "rows": 100}}
    result.parent_metrics = {"test": {"accuracy": 0.9, "rows": 100}}
    assert [f.split(":")[0] for f in judge(result, "classification", Gate())] == failed


def test_a_speed_up_counts_only_where_the_parent_times_steadily_against_itself() -> None:
    result = Result("m", size_ratio=1.0, latency_ms={1: (1.0, 1.0), 1024: (1.0, 0.75)})
    result.metrics = result.parent_metrics = {"test": {"accuracy": 0.9, "rows": 100}}
    assert judge(result, "classification", Gate(), {1: 1.0, 1024: 1.05}) == []
    (failure,) = judge(result, "classification", Gate(), {1: 1.0, 1024: 0.8})
    assert failure.startswith("benefit: 1.00x/1.33x faster") and "timed 0.80x" in failure
    result.size_ratio = 2.5  # smaller is measured exactly: it counts however noisy the timing
    assert judge(result, "classification", Gate(), {1: 1.0, 1024: 0.8}) == []


def test_the_gate_for_regression_is_relative() -> None:
    result = Result("m", size_ratio=2.0, latency_ms={1: (1.0, 1.0), 1024: (1.0, 1.0)})
    result.metrics = {"test": {"r2": 0.496, "mae": 40.5, "rows": 10}}  # R² -0.8 %, MAE +1.25 %
    result.parent_metrics = {"test": {"r2": 0.5, "mae": 40.0, "rows": 10}}
    assert judge(result, "regression", Gate()) == [
        "metric: mae +1.2% worse on test (> 1%)"]


def test_no_targets_means_nothing_is_published(tmp_path: Path, project: Project) -> None:
    parent = dense_classifier(tmp_path / "dense.onnx", (8, 64, 3))
    add.add("dense", parent, project=project)
    outcome = optimize("dense", methods=("dynamic-int8",), timing=FAST,
                       project=project, out=io.StringIO())
    (result,) = outcome.results
    assert outcome.published is None
    assert result.failures[0].startswith("metric: not measured")


def test_rows_whose_targets_are_named_otherwise_are_refused(tmp_path: Path) -> None:
    # An .npz of X and y (scikit-learn's names) for a model whose input is X: y would be
    # left out and the gate would measure no metric; it is refused, naming `targets`
    from model_api.manifest import Manifest, TensorSpec

    from model_registry.optimize.data import file_dataset

    manifest = Manifest(name="m", version="1", platform="onnxruntime_onnx",
                        model_file="model.onnx", sha256="0" * 64,
                        inputs=(TensorSpec("X", "FP32", (-1, 4)),),
                        outputs=(TensorSpec("label", "INT64", (-1,)),))
    rows = tmp_path / "rows.npz"
    np.savez(rows, X=np.zeros((3, 4), np.float32), y=np.zeros(3, np.int64))
    with pytest.raises(OptimizeError, match=r"\['y'\] that are neither an input.*'targets'"):
        file_dataset(rows, manifest)
    np.savez(rows, X=np.zeros((3, 4), np.float32), targets=np.zeros(3, np.int64))
    dataset = file_dataset(rows, manifest)
    assert dataset.test.targets is not None and len(dataset.test) == 3


def test_a_graph_that_imports_its_opset_twice_is_quantised(tmp_path: Path) -> None:
    # skl2onnx writes the default domain twice for a LogisticRegression; onnxruntime's
    # quantiser refused it ("Failed to find proper ai.onnx domain"): every candidate builds
    from model_api.manifest import Manifest, TensorSpec
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    from model_registry.optimize.candidates import METHODS, build
    from model_registry.optimize.data import random_dataset

    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    graph = to_onnx(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), x[:1],
                    options={"zipmap": False}, target_opset=18)
    domains = [entry.domain for entry in graph.opset_import]
    assert len(domains) > len(set(domains))  # (as skl2onnx writes it: the case itself)
    manifest = Manifest(name="m", version="1", platform="onnxruntime_onnx",
                        model_file="model.onnx", sha256="0" * 64,
                        inputs=(TensorSpec("X", "FP32", (-1, 8)),),
                        outputs=(TensorSpec("label", "INT64", (-1,)),))
    data = random_dataset(manifest)
    for method in METHODS:
        result = build(method, graph.SerializeToString(), data)
        assert result.error is None and result.model_bytes, (method, result.error)
        session = ort.InferenceSession(result.model_bytes, providers=["CPUExecutionProvider"])
        assert session.run(None, {"X": x})[0].shape == (64,)


def test_targets_the_metric_cannot_take_are_said_to_be_the_targets_fault(
        tmp_path: Path, project: Project) -> None:
    # Class names as targets of a model whose label output is a class index: the parent runs
    # on the rows; its metric cannot be measured, and the refusal says so
    rows = np.random.default_rng(2).standard_normal((50, 8)).astype(np.float32)
    parent = dense_classifier(tmp_path / "dense.onnx", (8, 16, 3))
    rows_file = added(tmp_path, project, parent, rows, labels_of(parent, rows))
    np.savez(rows_file, features=rows, targets=np.array(["cat", "dog"] * 25))
    with pytest.raises(OptimizeError, match="metric cannot be measured on the rows' targets"):
        optimize("dense", rows=rows_file, methods=("onnxslim",), timing=FAST, publish=False,
                 project=project, out=io.StringIO())


def test_unknown_model_version_and_method_are_refused(project: Project,
                                                      tmp_path: Path) -> None:
    with pytest.raises(OptimizeError, match="no model 'nope'"):
        optimize("nope", project=project)
    with pytest.raises(OptimizeError, match="no version '7'"):
        optimize("breast-cancer-mlp", "7", project=project)
    with pytest.raises(OptimizeError, match="unknown methods"):
        optimize("breast-cancer-mlp", methods=("magic",), project=project,
                 out=io.StringIO())


def test_a_fields_file_sets_only_the_fields_a_graph_cannot_tell(
        tmp_path: Path, project: Project) -> None:
    source = dense_classifier(tmp_path / "dense.onnx", (30, 2))
    fields = tmp_path / "fields.json"
    fields.write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(add.AddError, match="keys among"):
        add.add("other", source, project=project,
                fields=fields)


def test_a_seed_model_lists_files_only_for_versions_it_lists() -> None:
    entry = registry.ModelEntry("breast-cancer-mlp", "seed", ["1", "2"], "1",
                                files={"2": {"path": "model_store/x/2/model.onnx",
                                             "sha256": "0" * 64}})
    assert registry.check(entry) is entry
    with pytest.raises(registry.RegistryError, match="versions it does not list"):
        registry.check(registry.ModelEntry("breast-cancer-mlp", "seed", ["1"], "1",
                                           files=entry.files))
