"""A JSON Lines record meets the batch path's own limits (model_api.limits.BATCH_RECORD), and
every refusal names the way out on that path: never "use the batch runner" inside it, never
binary outputs that a JSON line cannot carry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import model_api.pipeline
import numpy as np
import pytest
from model_api.codec import decode_request
from model_api.errors import ModelAPIError
from model_api.limits import (
    API_REQUEST,
    BATCH_MAX_ROWS,
    BATCH_RECORD,
    MAX_REQUEST_BYTES,
    MAX_ROWS,
)
from model_api.model import LoadedModel
from model_api.pipeline import Pipeline

from batch.jsonl import line_records
from batch.microbatch import BatchSizeTuner, MicroBatcher
from tests.batch.conftest import FEATURES, MODEL, expected, request_line


@pytest.fixture(scope="module")
def model(models_dir: Path) -> LoadedModel:
    return LoadedModel.load(models_dir / MODEL / "1")


def process_lines(lines: list[bytes], model: LoadedModel) -> tuple[list[bytes], int]:
    """The records and error count the runner writes for `lines`, as the first of a job."""
    return line_records(Pipeline(BATCH_RECORD, path="batch"), lines, 1, model, None,
                        MicroBatcher(model, BatchSizeTuner((256,), 256)).run)


def answer(model: LoadedModel, line: str) -> dict[str, Any]:
    """The one record the runner writes for `line`."""
    records, _ = process_lines([line.encode()], model)
    [record] = records
    return dict(json.loads(record))


def test_a_record_larger_than_an_api_request_is_served(model: LoadedModel) -> None:
    rows = np.random.default_rng(3).normal(size=(6 * MAX_ROWS, FEATURES))
    line = request_line("big", rows)
    assert len(line) > MAX_REQUEST_BYTES  # and 6 times the rows: over both API limits
    with pytest.raises(ModelAPIError, match=r"^the request body is \d+ bytes"):
        decode_request(line.encode(), {}, model.manifest, API_REQUEST)
    with pytest.raises(ModelAPIError,
                       match=r"\(split it, or send it as an asynchronous job: POST \.\.\./jobs\)$"):
        decode_request(request_line("big", rows[:MAX_ROWS + 1]).encode(), {}, model.manifest,
                       API_REQUEST)
    record = answer(model, line)
    labels = next(o for o in record["outputs"] if o["name"] == "label")
    assert labels["data"] == expected(rows)[0].tolist()


def test_too_many_rows_for_one_record_says_to_split_it_over_lines(model: LoadedModel) -> None:
    line = json.dumps({"id": "huge", "inputs": [{"name": "features", "datatype": "FP32",
                                                 "shape": [BATCH_MAX_ROWS + 1, FEATURES],
                                                 "data": []}]})
    record = answer(model, line)
    assert record["id"] == "huge"
    assert record["error"] == (
        f"input 'features' has {BATCH_MAX_ROWS + 1} rows; the limit is {BATCH_MAX_ROWS} rows "
        "per JSON Lines record (split it over several lines)")


@pytest.mark.parametrize("flags", [{"parameters": {"binary_data_output": True}},
                                   {"outputs": [{"name": "label"},
                                                {"name": "probabilities",
                                                 "parameters": {"binary_data": True}}]}],
                         ids=["binary_data_output", "binary_data"])
def test_binary_outputs_are_refused_not_ignored(model: LoadedModel,
                                                flags: dict[str, object]) -> None:
    record = answer(model, request_line("bin", np.ones((1, FEATURES)), **flags))
    assert record["id"] == "bin" and "outputs" not in record
    wanted = "'probabilities'" if "outputs" in flags else "'label', 'probabilities'"
    assert record["error"] == (
        f"output(s) {wanted} asked for as binary data (binary_data_output or binary_data): the "
        "answer to a JSON Lines record is JSON, so drop the flag (a .npy input gives .npy "
        "outputs)")
    plain = answer(model, request_line("plain", np.ones((1, FEATURES)),
                                       parameters={"binary_data_output": False}))
    assert "outputs" in plain


def test_binary_inputs_are_refused_saying_what_a_record_carries(model: LoadedModel) -> None:
    line = json.dumps({"id": "b", "inputs": [{"name": "features", "datatype": "FP32",
                                              "shape": [1, FEATURES],
                                              "parameters": {"binary_data_size": 16}}]})
    assert answer(model, line)["error"] == (
        "input 'features' has binary_data_size, but a JSON Lines record carries no binary "
        "tensor data: send its values as 'data' (or upload a .npy input)")


def test_outputs_json_cannot_carry_point_to_npy_not_to_binary_outputs(
        model: LoadedModel) -> None:
    record = answer(model, request_line("inf", np.full((1, FEATURES), 3e38)))
    error = str(record["error"])
    assert "JSON cannot carry them: a .npy input gives .npy outputs" in error
    assert "binary_data" not in error


def test_an_unforeseen_error_costs_its_line_only_and_logs_no_payload(
        model: LoadedModel, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    real = model_api.pipeline.decode_request

    def flawed(body: bytes, *args: Any) -> Any:  # a codec defect that one line trips
        if b"trip" in body:
            raise ValueError(f"cannot convert {body[:30]!r}")
        return real(body, *args)

    monkeypatch.setattr(model_api.pipeline, "decode_request", flawed)
    lines = [request_line(name, np.ones((1, FEATURES))).encode() for name in ("a", "trip", "c")]
    records, errors = process_lines(lines, model)
    first, broken, last = (json.loads(record) for record in records)
    assert errors == 1 and "outputs" in first and "outputs" in last
    assert broken == {"id": "trip", "line": 2,
                      "error": "the line could not be decoded (ValueError)"}
    # The log says where (the traceback's frames), never what the line held
    assert "ValueError while it was decoded" in caplog.text and "in flawed" in caplog.text
    assert '"id": "trip"' not in caplog.text
