"""model_api.catalog (the deployment's models, read from the catalog layer's file) and
model_api.aws.router (the root API's model routes, forwarded to each model's function). The
"Lambda invoke" here runs the real resolver of a model function in-process with the event the
server forwards; tests/local_api/test_groups.py does it over HTTP through the local API."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from model_api.aws.lambda_adapter import create_app
from model_api.aws.router import ModelRouter
from model_api.catalog import Catalog, CatalogError, CatalogModel
from model_api.service import InferenceService

from tests.conftest import LambdaContext
from tests.unit.test_repository import REQUEST, invoker, model_function
from tests.unit.tiny_models import add_version

PREFIX = "model-0123abcd-"


def test_the_catalog_file_lists_models_versions_and_groups(tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": [
        {"name": "add", "versions": ["1", "2"], "current": "2", "group": 0}]}))
    catalog = Catalog.from_environment({"MODEL_CATALOG": str(path),
                                        "MODEL_FUNCTION_PREFIX": PREFIX})
    assert catalog == Catalog((CatalogModel("add", ("1", "2"), "2", 0),), PREFIX)
    assert catalog.function_name("add") == PREFIX + "add"
    assert Catalog.parse(json.dumps(catalog.document()), PREFIX) == catalog
    assert Catalog.from_environment({}) is None
    # a version that takes JSON Lines jobs only carries its reason, and reads back the same
    text = Catalog((CatalogModel("t", ("1", "2"), "2", 0, (("1", "a BYTES input"),)),))
    assert Catalog.parse(json.dumps(text.document())) == text
    assert text.models[0].npy_refusal("1") == "a BYTES input"
    assert text.models[0].npy_refusal("2") is None
    with pytest.raises(CatalogError, match="jsonl_only"):
        Catalog.parse(json.dumps({"models": [{**text.document()["models"][0],
                                              "jsonl_only": ["1"]}]}))
    with pytest.raises(CatalogError, match="MODEL_CATALOG must name"):
        Catalog.required({})
    with pytest.raises(CatalogError, match="cannot be read"):
        Catalog.load(tmp_path / "missing.json")
    for bad in ("[]", "{", '{"models": [{"name": "a", "versions": [1], "current": "1", '
                '"group": 0}]}', '{"models": [{"name": "a", "versions": []}]}'):
        with pytest.raises(CatalogError):
            Catalog.parse(bad)


def test_an_unknown_model_is_named_with_the_models_or_where_to_find_them() -> None:
    few = Catalog(tuple(CatalogModel(f"m{i}", ("1",), "1", 0) for i in range(3)))
    assert few.unknown("x") == "unknown model 'x'; this deployment serves m0, m1, m2"
    many = Catalog(tuple(CatalogModel(f"m{i}", ("1",), "1", i // 20) for i in range(200)))
    message = many.unknown("x")
    assert "200 models, listed by POST /v2/repository/index" in message and "m1" not in message


@pytest.fixture
def server(tmp_path: Path) -> Any:
    """The server function's app with a router over one model function, `add` (versions 1, 2),
    served in-process as its own Lambda function would be."""
    add_version(tmp_path / "add" / "1")
    add_version(tmp_path / "add" / "2")
    functions = {PREFIX + "add": model_function(tmp_path, "add", "1")}
    calls: list[str] = []
    catalog = Catalog((CatalogModel("add", ("1", "2"), "1", 0),), PREFIX)
    app = create_app(InferenceService(), router=ModelRouter(catalog, invoker(functions, calls)))
    return app, functions[PREFIX + "add"], calls


def root_event(method: str, path: str, resource: str, parameters: dict[str, str],
               body: bytes | None = None, headers: dict[str, str] | None = None
               ) -> dict[str, Any]:
    """An event of the root API's model routes: the model is a path parameter."""
    headers = headers or {}
    return {"resource": resource, "path": path, "httpMethod": method, "headers": headers,
            "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "queryStringParameters": None, "pathParameters": parameters,
            "stageVariables": None,
            "requestContext": {"requestId": "r-1", "stage": "v1", "httpMethod": method,
                               "path": f"/v1{path}", "resourcePath": resource},
            "body": base64.b64encode(body).decode() if body is not None else None,
            "isBase64Encoded": body is not None}


def test_a_model_route_of_the_root_api_answers_what_the_model_function_answers(
        server: Any) -> None:
    app, service, calls = server
    direct = create_app(service)
    for method, path, resource, parameters, body in [
            ("POST", "/v2/models/add/infer", "/v2/models/{model}/infer", {"model": "add"},
             REQUEST),
            ("POST", "/v2/models/add/versions/2/infer",
             "/v2/models/{model}/versions/{version}/infer", {"model": "add", "version": "2"},
             REQUEST),
            ("GET", "/v2/models/add", "/v2/models/{model}", {"model": "add"}, None),
            ("GET", "/v2/models/add/ready", "/v2/models/{model}/ready", {"model": "add"}, None)]:
        event = root_event(method, path, resource, parameters, body,
                           {"Content-Type": "application/json"})
        routed = app.resolve(event, LambdaContext())
        own = direct.resolve(event, LambdaContext())
        assert routed["statusCode"] == own["statusCode"] == 200, routed
        assert json.loads(routed["body"]) == json.loads(own["body"])
    assert calls == [PREFIX + "add"] * 4


def test_a_binary_answer_and_an_error_pass_through_unchanged(server: Any) -> None:
    app, service, _ = server
    binary = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
    header = json.dumps({"inputs": [
        {"name": "a", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
        {"name": "b", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}],
        "outputs": [{"name": "sum", "parameters": {"binary_data": True}}]}).encode()
    import numpy as np
    body = header + np.array([1, 2], "<f4").tobytes() + np.array([3, 4], "<f4").tobytes()
    binary["Inference-Header-Content-Length"] = str(len(header))
    event = root_event("POST", "/v2/models/add/infer", "/v2/models/{model}/infer",
                       {"model": "add"}, body, binary)
    routed = app.resolve(event, LambdaContext())
    own = create_app(service).resolve(event, LambdaContext())
    assert routed["statusCode"] == 200 and routed["isBase64Encoded"]
    assert base64.b64decode(routed["body"]) == base64.b64decode(own["body"])
    assert (routed["multiValueHeaders"]["Inference-Header-Content-Length"]
            == own["multiValueHeaders"]["Inference-Header-Content-Length"])
    bad = root_event("POST", "/v2/models/add/infer", "/v2/models/{model}/infer",
                     {"model": "add"}, b"{not json", {"Content-Type": "application/json"})
    answer = app.resolve(bad, LambdaContext())
    assert answer["statusCode"] == 400 and set(json.loads(answer["body"])) == {"error"}


def test_unknown_models_and_failing_functions_are_clear_errors(tmp_path: Path) -> None:
    catalog = Catalog((CatalogModel("add", ("1",), "1", 0),), PREFIX)

    def answers(outcome: Any) -> dict[str, Any]:
        def invoke(function: str, event: dict[str, Any]) -> dict[str, Any]:
            if isinstance(outcome, Exception):
                raise outcome
            return dict(outcome)
        app = create_app(InferenceService(), router=ModelRouter(catalog, invoke))
        model = "nope" if outcome is None else "add"
        answer: dict[str, Any] = app.resolve(root_event(
            "POST", f"/v2/models/{model}/infer", "/v2/models/{model}/infer", {"model": model},
            REQUEST), LambdaContext())
        retry = (answer.get("multiValueHeaders") or {}).get("Retry-After") or \
            [(answer.get("headers") or {}).get("Retry-After")]
        return {"status": answer["statusCode"], "retry_after": retry[0],
                **json.loads(answer["body"])}

    unknown = answers(None)
    assert unknown["status"] == 404 and "unknown model 'nope'" in unknown["error"]
    too_large = ClientError({"Error": {"Code": "RequestTooLargeException", "Message": "big"}},
                            "Invoke")
    assert answers(too_large)["status"] == 413
    throttled = answers(ClientError({"Error": {"Code": "TooManyRequestsException",
                                               "Message": "Rate Exceeded."}}, "Invoke"))
    assert throttled["status"] == 503 and throttled["retry_after"] == "1"  # not a fault: retry
    assert "concurrency limit" in throttled["error"]
    failed = answers(RuntimeError("Runtime.ExitError: killed"))
    assert failed["status"] == 502 and "killed" in failed["error"]
    assert answers({"not": "a response"})["status"] == 502
