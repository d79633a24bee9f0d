"""lambda_adapter: the protocol's routes on API Gateway REST events, errors as {"error": ...}."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from model_api.aws import lambda_adapter
from model_api.aws.lambda_adapter import (
    RestApiResolver,
    bind_routes,
    create_app,
    path_from_parameters,
)
from model_api.binary import HEADER_LENGTH
from model_api.routes import BATCH_JOBS
from model_api.service import InferenceService
from onnx import helper, numpy_helper

from tests.conftest import LambdaContext
from tests.unit.tiny_models import add_version, graph_model, write_version


def event(method: str, path: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A REST API proxy event as API Gateway sends it for our `*/*` binary media type."""
    return {
        "resource": path, "path": path, "httpMethod": method, "headers": headers or {},
        "multiValueHeaders": {k: [v] for k, v in (headers or {}).items()},
        "queryStringParameters": None, "pathParameters": None, "stageVariables": None,
        "requestContext": {"requestId": "r-1", "stage": "v1", "httpMethod": method,
                           "path": f"/v1{path}"},
        "body": base64.b64encode(body).decode() if body is not None else None,
        "isBase64Encoded": body is not None,
    }


def call(service: InferenceService, *args: Any, **kwargs: Any) -> tuple[int, Any, dict[str, Any]]:
    answer = create_app(service).resolve(event(*args, **kwargs), LambdaContext())
    raw = answer["body"]
    if answer.get("isBase64Encoded"):
        return answer["statusCode"], base64.b64decode(raw), answer["multiValueHeaders"]
    return answer["statusCode"], json.loads(raw), answer["multiValueHeaders"]


def test_the_server_function_answers_the_server_routes(tmp_path: Path) -> None:
    server = InferenceService.from_environment({"MODELS_DIR": str(tmp_path)})
    assert call(server, "GET", "/v2")[1]["extensions"] == ["binary_tensor_data",
                                                           "model_repository"]
    assert call(server, "GET", "/v2/health/live")[:2] == (200, {"live": True})
    assert call(server, "GET", "/v2/health/ready")[:2] == (200, {"ready": True})
    status, body, _ = call(server, "GET", "/v2/models/add")
    assert status == 404 and set(body) == {"error"} and "'add'" in body["error"]


@pytest.fixture
def model_function(tmp_path: Path) -> InferenceService:
    add_version(tmp_path / "add" / "1")
    return InferenceService.from_environment(
        {"MODELS_DIR": str(tmp_path), "MODEL_NAME": "add", "MODEL_VERSION": "1"})


def test_a_binary_answer_goes_back_base64_encoded_with_its_header(
        model_function: InferenceService) -> None:
    request = {"inputs": [{"name": n, "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}
                          for n in ("a", "b")],
               "parameters": {"binary_data_output": True}}
    status, body, headers = call(model_function, "POST", "/v2/models/add/infer",
                                 json.dumps(request).encode())
    assert status == 200 and headers["Content-Type"] == ["application/octet-stream"]
    length = int(headers[HEADER_LENGTH][0])
    assert [o["name"] for o in json.loads(body[:length])["outputs"]] == ["sum", "copy"]


def test_protocol_errors_keep_their_status_and_format(model_function: InferenceService) -> None:
    status, body, _ = call(model_function, "POST", "/v2/models/add/versions/2/infer", b"{}")
    assert status == 404 and body == {"error": "model 'add' has no version '2'; versions: '1'"}
    status, body, _ = call(model_function, "POST", "/v2/models/add/infer", b"[")
    assert status == 400 and body["error"].startswith("the request body is not valid JSON")


def test_a_model_that_failed_to_load_answers_503(tmp_path: Path) -> None:
    folder = add_version(tmp_path / "add" / "1")
    (folder / "model.onnx").write_bytes(b"tampered")
    service = InferenceService.from_environment(
        {"MODELS_DIR": str(tmp_path), "MODEL_NAME": "add", "MODEL_VERSION": "1"})
    status, body, _ = call(service, "GET", "/v2/models/add/ready")
    assert status == 503 and "sha256" in body["error"]


def test_a_function_must_serve_exactly_its_routes_operations() -> None:
    with pytest.raises(ValueError, match="get_job"):
        bind_routes(RestApiResolver(), BATCH_JOBS, {})
    with pytest.raises(ValueError, match="extra"):
        bind_routes(RestApiResolver(), BATCH_JOBS, {"get_job": print, "extra": print})
def test_the_function_serves_what_the_decoded_path_parameters_name() -> None:
    """API Gateway passes the path as sent (percent-encoded) and the parameters decoded: the
    route runs on the parameters (a model and a version written with escapes)."""
    raw = event("GET", "/v2/models/m%2Dx/versions/%31/ready")
    raw.update(resource="/v2/models/{model}/versions/{version}/ready",
               pathParameters={"model": "m-x", "version": "1"})
    rebuilt = path_from_parameters(raw)
    assert rebuilt["path"] == "/v2/models/m-x/versions/1/ready"
    assert rebuilt["requestContext"] == raw["requestContext"] and raw["path"].endswith("%31/ready")
    literal = {**event("GET", "/v2/models/m%2Dx/ready"), "resource": "/v2/models/m-x/ready"}
    assert path_from_parameters(literal)["path"] == "/v2/models/m-x/ready"
    bare = {key: value for key, value in event("GET", "/v2").items() if key != "resource"}
    assert path_from_parameters(bare) is bare  # no resource: the event as it came


def embedding_version(folder: Path) -> Path:
    """out = embedding[ids] * mask: INT64 ids and mask [-1, -1] (one variable axis each, which
    the graph needs equal), an embedding of 10 rows of 4."""
    inputs = [("ids", "INT64", (-1, -1)), ("mask", "INT64", (-1, -1))]
    outputs = [("out", "FP32", (-1, -1, 4))]
    model = graph_model([
        helper.make_node("Gather", ["embedding", "ids"], ["rows"]),
        helper.make_node("Cast", ["mask"], ["weights"], to=onnx.TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["weights", "last"], ["column"]),
        helper.make_node("Mul", ["rows", "column"], ["out"])], inputs, outputs)
    model.graph.initializer.extend([
        numpy_helper.from_array(np.arange(40, dtype=np.float32).reshape(10, 4), "embedding"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "last")])
    return write_version(folder, model, inputs, outputs)


@pytest.mark.parametrize(("ids", "mask", "operator", "reason"), [
    ([[1, 2, 99]], [[1, 1, 1]], "Gather", "indices element out of data bounds, idx=99"),
    ([[1, 2, 3]], [[1, 1]], "Mul", "Attempting to broadcast an axis by a dimension other than 1"),
])
def test_inputs_that_the_models_graph_refuses_get_a_400_saying_why_never_a_500(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ids: list[list[int]],
        mask: list[list[int]], operator: str, reason: str) -> None:
    """Inputs that fit the signature, but whose values or lengths the graph refuses when it
    runs (an added model of several inputs, or of token ids): the caller's to fix, so a 400,
    and no ServerErrors, whose alarm would roll a deployment back."""
    embedding_version(tmp_path / "embed" / "1")
    function = InferenceService.from_environment(
        {"MODELS_DIR": str(tmp_path), "MODEL_NAME": "embed", "MODEL_VERSION": "1"})
    counted: list[int] = []
    monkeypatch.setattr(lambda_adapter, "count_server_error", lambda: counted.append(1))
    request = {"inputs": [
        {"name": "ids", "shape": [1, len(ids[0])], "datatype": "INT64", "data": ids},
        {"name": "mask", "shape": [1, len(mask[0])], "datatype": "INT64", "data": mask}]}
    status, body, _ = call(function, "POST", "/v2/models/embed/infer",
                           json.dumps(request).encode())
    assert status == 400 and counted == [], body
    assert body["error"].startswith(
        f"the model could not run on these inputs (its {operator} operator): {reason}")
    assert "onnxruntime_src" not in body["error"] and "was false" not in body["error"]
    # and inputs it takes still run
    request["inputs"][0]["data"], request["inputs"][1]["data"] = [[1, 2]], [[1, 1]]
    for tensor in request["inputs"]:
        tensor["shape"] = [1, 2]
    status, body, _ = call(function, "POST", "/v2/models/embed/infer",
                           json.dumps(request).encode())
    assert status == 200 and body["outputs"][0]["data"] == [4, 5, 6, 7, 8, 9, 10, 11]
