"""The one inference pipeline (model_api.pipeline): its hook points, in order, on the API's and
the batch runner's paths; a failing hook never changes an answer; the ClassCounts hook counts
rows per model and class as the PredictedRows metric on both paths. Real exported models."""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
from collections import Counter
from typing import Any

import msgspec
import numpy as np
import pytest
from model_api.aws.class_counts import (
    FEW_ROWS,
    MAX_CLASSES,
    ClassCounts,
    class_counts,
    row_classes,
)
from model_api.limits import API_REQUEST, BATCH_RECORD
from model_api.model import LoadedModel
from model_api.pipeline import Exchange, Hook, Pipeline

from batch.jsonl import line_records
from batch.microbatch import BatchSizeTuner, MicroBatcher
from tests.conftest import EVENTS_DIR, MODELS_DIR, ROOT, LambdaContext

MODEL = "breast-cancer-mlp"
EVENT = json.loads((EVENTS_DIR / MODEL / "infer.json").read_text())
BODY = base64.b64decode(EVENT["body"]) if EVENT.get("isBase64Encoded") else EVENT["body"].encode()
LABELS = ("malignant", "benign")


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return LoadedModel.load(MODELS_DIR / MODEL / "1")


class Recorder(Hook):
    """Writes down each hook point it sees, with what the exchange holds there."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def before_model(self, exchange: Exchange) -> None:
        self.seen.append(("before", (exchange.path, exchange.rows, sorted(exchange.results))))

    def after_model(self, exchange: Exchange) -> None:
        self.seen.append(("after", (exchange.explain, sorted(exchange.results))))

    def flush(self) -> None:
        self.seen.append(("flush", None))


class Broken(Hook):
    name = "broken"

    def before_model(self, exchange: Exchange) -> None:
        raise RuntimeError(f"leaks {exchange.request.inputs}")

    def after_model(self, exchange: Exchange) -> None:
        exchange.results["label"][0] = 7  # read-only: ValueError, and the answer unchanged


def metric_lines(text: str) -> list[dict[str, Any]]:
    """The PredictedRows documents in the embedded metric format among printed lines (a
    metric's values are a list there)."""
    documents = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [d for d in documents if "PredictedRows" in d]


def test_the_hook_points_come_in_order_on_infer_and_explain(model: LoadedModel) -> None:
    recorder = Recorder()
    pipeline = Pipeline(API_REQUEST, [recorder], path="api")
    pipeline.handle(model, BODY, {})
    pipeline.handle(model, BODY, {}, explain=True)
    rows = json.loads(BODY)["inputs"][0]["shape"][0]
    assert recorder.seen == [
        ("before", ("api", rows, [])), ("after", (False, ["label", "probabilities"])),
        ("flush", None),
        ("before", ("api", rows, [])),
        ("after", (True, ["attributions", "base_value", "label", "probabilities", "target"])),
        ("flush", None)]


def test_a_failing_hook_is_logged_by_name_and_the_answer_stays_the_same(
        model: LoadedModel, caplog: pytest.LogCaptureFixture) -> None:
    plain = Pipeline(API_REQUEST).handle(model, BODY, {})
    # The broken hook fails before the model, and tries to change a result after it
    hooked = Pipeline(API_REQUEST, [Broken()]).handle(model, BODY, {})
    assert hooked.body == plain.body
    assert "hook broken failed at before_model (RuntimeError)" in caplog.text
    assert "hook broken failed at after_model (ValueError)" in caplog.text
    assert "leaks" not in caplog.text  # the log names the hook, never the data


def test_class_counts_names_each_row_by_the_model_labels(model: LoadedModel) -> None:
    exchange = Pipeline(API_REQUEST).predict(Pipeline(API_REQUEST).decode(model, BODY, {}))
    classes = row_classes(exchange)
    expected = [LABELS[i] for i in exchange.results["label"].tolist()]
    assert classes == expected and set(classes) <= set(LABELS)


@pytest.mark.parametrize("results", [
    {"label": np.array([1, 0, 1, 7, -1, 1])},  # an integer class, labels and beyond
    {"probabilities": np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.5, 0.4],
                                [0.0, 1.0], [0.6, 0.1]], dtype=np.float32)},  # the best score
    {"label": np.array(["b", "a", "b" * 80, "b" * 81, "a", "b"], dtype=object)},  # clipped
    {"label": np.array([b"x", b"y", b"x", b"x", b"y", b"z"])},
    {"label": np.array(["x", None, 3, "x", None, "x"], dtype=object)},  # unsortable objects
    {"value": np.zeros((6, 1), dtype=np.float32)}])  # a regression: one class
def test_class_counts_count_on_the_arrays_what_row_classes_names_row_by_row(
        model: LoadedModel, results: dict[str, np.ndarray]) -> None:
    many = FEW_ROWS + 1  # rows, so that class_counts counts on the arrays
    exchange = Pipeline(BATCH_RECORD).from_arrays(model, {"features": np.zeros((many, 30),
                                                                               np.float32)})
    exchange.results = {name: np.resize(array, (many, *array.shape[1:]))
                        for name, array in results.items()}
    assert class_counts(exchange) == Counter(row_classes(exchange))


def test_class_counts_for_a_regression_is_one_class_and_classes_are_bounded() -> None:
    regression = LoadedModel.load(MODELS_DIR / "diabetes-linear" / "1")
    body = (EVENTS_DIR / "diabetes-linear" / "infer.json").read_text()
    event = json.loads(body)
    request = base64.b64decode(event["body"]) if event.get("isBase64Encoded") \
        else event["body"].encode()
    exchange = Pipeline(API_REQUEST).predict(Pipeline(API_REQUEST).decode(regression,
                                                                           request, {}))
    assert set(row_classes(exchange)) == {"-"}
    many = msgspec.structs.replace(exchange.request, rows=FEW_ROWS + 1)  # counted without a list
    assert class_counts(msgspec.structs.replace(exchange, request=many)) == Counter(
        {"-": FEW_ROWS + 1})
    hook = ClassCounts("Test")
    for n in range(MAX_CLASSES + 5):
        exchange.results = {"label": np.array([n]), "probabilities": np.zeros((1, 2))}
        exchange.manifest = LoadedModel.load(MODELS_DIR / MODEL / "1").manifest
        exchange.request = type(exchange.request)(None, {}, (), {}, 1)
        hook.after_model(exchange)
    names = {name for (_, name) in hook.counts}
    assert len(names) == MAX_CLASSES + 1 and hook.counts[MODEL, "other"] == 5


def test_the_api_function_emits_predicted_rows_per_class(
        monkeypatch: pytest.MonkeyPatch, lambda_context: LambdaContext,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MODELS_DIR", str(MODELS_DIR))
    monkeypatch.setenv("MODEL_NAME", MODEL)
    monkeypatch.setenv("MODEL_VERSION", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Test")
    spec = importlib.util.spec_from_file_location(
        "inference_app_hooks", ROOT / "functions" / "inference" / "app.py")
    assert spec and spec.loader
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    answer = app.lambda_handler(EVENT, lambda_context)
    assert answer["statusCode"] == 200
    body = answer["body"]
    labels = json.loads(base64.b64decode(body) if answer.get("isBase64Encoded")
                        else body)["outputs"][0]["data"]
    counted = {(d["model"], d["class"]): sum(d["PredictedRows"])
               for d in metric_lines(capsys.readouterr().out)}
    want: dict[tuple[str, str], int] = {}
    for label in labels:
        want[MODEL, LABELS[label]] = want.get((MODEL, LABELS[label]), 0) + 1
    assert counted == want


def test_the_batch_path_emits_predicted_rows_per_class_once_per_chunk(
        model: LoadedModel, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    pipeline = Pipeline(BATCH_RECORD, [ClassCounts("Test")], path="batch")
    document = json.loads(BODY)
    lines = [json.dumps({**document, "id": f"r{n}"}).encode() for n in range(3)]
    records, errors = line_records(pipeline, lines, 1, model, None,
                                   MicroBatcher(model, BatchSizeTuner((256,), 256)).run)
    assert errors == 0
    assert metric_lines(capsys.readouterr().out) == []  # nothing before the chunk ends
    pipeline.flush()
    counted = {d["class"]: sum(d["PredictedRows"])
               for d in metric_lines(capsys.readouterr().out)}
    labels = [label for record in records
              for label in json.loads(record)["outputs"][0]["data"]]
    assert sum(counted.values()) == len(labels) == 3 * document["inputs"][0]["shape"][0]
    assert counted == {LABELS[i]: labels.count(i) for i in set(labels)}


@pytest.mark.parametrize("service", [None, "model-api"])
def test_predicted_rows_lines_are_those_of_powertools_single_metric(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        service: str | None) -> None:
    """The flush writes each line from a template that Powertools made once: the same lines
    (but their time) as one single_metric per class, with or without a service name."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    if service is None:
        monkeypatch.delenv("POWERTOOLS_SERVICE_NAME", raising=False)
    else:
        monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", service)
    hook = ClassCounts("Test")
    counts = {(MODEL, "benign"): 3, (MODEL, "malignant"): 1,
              ("other-model", "\u00e9t\u00e9"): 2}
    for _ in range(2):  # the template is made on the first flush, reused on the next
        hook.counts.update(counts)
        hook.flush()
        ours = capsys.readouterr().out.splitlines()
        for (model, name), rows in sorted(counts.items()):
            with single_metric(name="PredictedRows", unit=MetricUnit.Count, value=rows,
                               namespace="Test",
                               default_dimensions={"model": model, "class": name}):
                pass
        theirs = capsys.readouterr().out.splitlines()
        assert len(ours) == len(theirs) == len(counts)
        for mine, powertools in zip(ours, theirs, strict=True):
            mine_doc, their_doc = json.loads(mine), json.loads(powertools)
            assert abs(mine_doc["_aws"].pop("Timestamp")
                       - their_doc["_aws"].pop("Timestamp")) < 5_000
            assert mine_doc == their_doc and list(mine_doc) == list(their_doc)


def test_a_hook_failing_on_one_exchange_of_a_batch_costs_only_that_exchange(
        model: LoadedModel) -> None:
    # A batch job's micro-batch: Hook's after_model_many calls after_model on each exchange;
    # one that raises is logged and the others are still seen.
    seen: list[int] = []

    class Picky(Hook):
        name = "picky"

        def after_model(self, exchange: Exchange) -> None:
            if not seen:
                seen.append(-1)
                raise RuntimeError("the first one")
            seen.append(exchange.rows)

    pipeline = Pipeline(API_REQUEST, [Picky()])
    body = (EVENTS_DIR / MODEL / "infer.json").read_text()
    event = json.loads(body)
    request = base64.b64decode(event["body"]) if event.get("isBase64Encoded") \
        else event["body"].encode()
    exchanges = [pipeline.decode(model, request, {}) for _ in range(3)]
    for exchange in exchanges:
        pipeline.predict(exchange)
    seen.clear()
    pipeline._call_many(exchanges)
    assert seen == [-1, exchanges[1].rows, exchanges[2].rows]
