"""The real handler (functions/inference/app.py) on every event in events/, in-process.

Each model function is the same handler with its own environment, so a handler module is
imported once per function folder of events/ with that function's MODEL_NAME, as Lambda's
module-scope init would run it in that function's container.
"""

from __future__ import annotations

import base64
import gzip
import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from model_api.explainers import output_specs
from model_api.manifest import parse_manifest
from model_api.routes import MODEL, SERVER, routes_of
from sklearn.datasets import load_breast_cancer

from model_registry import registry
from tests.conftest import EVENTS_DIR, MODELS_DIR, ROOT, load_event

HANDLER = ROOT / "functions" / "inference" / "app.py"
# The console layer as `sam build` made it (make test builds first).
CONSOLE_DIR = ROOT / ".aws-sam" / "build" / "ConsoleLayer" / "console"
# The inference handler's events: the server's and each exported model's (events/ also holds
# other functions' events, e.g. the batch functions').
EVENT_FILES = sorted(
    p
    for p in EVENTS_DIR.glob("*/*.json")
    if p.parent.name == "server" or (MODELS_DIR / p.parent.name).is_dir()
)
_handlers: dict[str, ModuleType] = {}


def handler_for(function: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The handler module as the function `function` (a folder of events/) runs it."""
    if function not in _handlers:
        monkeypatch.setenv("MODELS_DIR", str(MODELS_DIR))
        if function == "server":
            monkeypatch.delenv("MODEL_NAME", raising=False)
            monkeypatch.delenv("MODEL_VERSION", raising=False)
            monkeypatch.setenv("CONSOLE_DIR", str(CONSOLE_DIR))
        else:
            # The function serves its registry entry's current version (not its highest)
            monkeypatch.setenv("MODEL_NAME", function)
            monkeypatch.setenv("MODEL_VERSION", current_version(function))
        spec = importlib.util.spec_from_file_location(
            f"handler_{function.replace('-', '_')}", HANDLER
        )
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _handlers[function] = module
    return _handlers[function]


def invoke(
    function: str, event: dict[str, Any], context: Any, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    return handler_for(function, monkeypatch).lambda_handler(event, context)


def decode_binary_response(response: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    body = (
        base64.b64decode(response["body"])
        if response["isBase64Encoded"]
        else response["body"].encode()
    )
    # Powertools answers REST API events with multiValueHeaders; API Gateway accepts either form.
    headers = {
        **response.get("headers", {}),
        **{k: v[0] for k, v in response.get("multiValueHeaders", {}).items()},
    }
    header_length = int(headers["Inference-Header-Content-Length"])
    return json.loads(body[:header_length]), body[header_length:]


def current_version(model: str) -> str:
    return next(entry.current for entry in registry.load() if entry.name == model)


def test_events_cover_every_route_of_every_model(manifests: dict[str, Any]) -> None:
    # Every route of the table has its event (an inference route of a model a binary twin
    # too); the explain routes where the model's current version explains (model_registry.events)
    for entry in registry.load():
        explains = manifests[entry.name].get("explanation", {}).get("method", "none") != "none"
        routes = [route for route in routes_of(MODEL)
                  if route.request != "explain" or explains]
        model_routes = {route.example for route in routes} | {
            f"{route.example}-binary" for route in routes
            if route.request and "version" not in route.parameters}
        assert {p.stem for p in (EVENTS_DIR / entry.name).glob("*.json")} == model_routes
    assert {p.stem for p in (EVENTS_DIR / "server").glob("*.json")} == {
        route.example for route in routes_of(SERVER)}


@pytest.mark.parametrize("event_path", EVENT_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_event_gets_a_protocol_answer(
    event_path: Path,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
    manifests: dict[str, Any],
) -> None:
    function, route = event_path.parent.name, event_path.stem
    response = invoke(function, load_event(event_path), lambda_context, monkeypatch)

    if route in {"repository-load", "repository-unload"}:  # models are deployed, not loaded
        assert response["statusCode"] == 400, response["body"]
        assert "deployed with the stack" in json.loads(response["body"])["error"]
        return
    if route == "monitoring":  # no drift report was made here: 404 in the error format
        assert response["statusCode"] == 404, response["body"]
        assert set(json.loads(response["body"])) == {"error"}
        return
    assert response["statusCode"] == 200, response["body"]
    if route in {"console", "docs", "console-asset", "open-api"}:  # the console layer's files
        body = base64.b64decode(response["body"]) if response["isBase64Encoded"] else \
            response["body"].encode()
        content_type = response["multiValueHeaders"]["Content-Type"][0]
        if response["multiValueHeaders"].get("Content-Encoding") == ["gzip"]:
            body = gzip.decompress(body)
        # compressed or not, the answer depends on Accept-Encoding: caches must know it
        assert response["multiValueHeaders"]["Vary"] == ["Accept-Encoding"]
        assert body.startswith(b"<!doctype html>") == (content_type.startswith("text/html"))
        assert content_type.split(";")[0] in {"text/html", "text/javascript",
                                              "application/json"}
        return
    if route.endswith("-binary"):
        header, tensors = decode_binary_response(response)
        assert header["id"] == "example-binary"
        sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
        assert sum(sizes) == len(tensors)
        return
    body = json.loads(response["body"])
    if route in {"infer", "version-infer"}:
        manifest = manifests[function]
        current = current_version(function)
        assert body["model_name"] == function and body["model_version"] == current
        assert body["id"] == "example-1"
        assert {o["name"] for o in body["outputs"]} == {o["name"] for o in manifest["outputs"]}
        rows = json.loads(base64.b64decode(load_event(event_path)["body"]))["inputs"][0]["shape"][0]
        assert all(o["shape"][0] == rows for o in body["outputs"])
    elif route in {"explain", "version-explain", "explain-binary"}:
        assert body["id"] == "example-1" and body["parameters"]["method"]
        names = [o["name"] for o in body["outputs"]]
        # attributions (one explained input) or attributions_<input> each, base_value, target
        explained = output_specs(parse_manifest(manifests[function]))
        assert {spec.name for spec in explained} <= set(names)
        assert {"base_value", "target"} <= set(names) and any(
            name.startswith("attributions") for name in names)
        rows = json.loads(base64.b64decode(load_event(event_path)["body"]))["inputs"][0]["shape"][0]
        assert all(o["shape"][0] == rows for o in body["outputs"])
    elif route in {"metadata", "version-metadata"}:
        assert body["name"] == function and body["platform"] == "onnxruntime_onnx"
        assert body["inputs"] == manifests[function]["inputs"]
    elif route in {"ready", "version-ready"}:
        assert body["ready"] is True
    elif route == "server-metadata":
        assert "binary_tensor_data" in body["extensions"]
    elif route == "health-live":
        assert body.get("live", True) is True
    elif route == "health-ready":
        assert body["ready"] is True


def test_breast_cancer_rows_are_classified_as_the_dataset_labels_them(
    lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the example event's rows: held-back rows of the dataset (model_api.examples)
    event = load_event(EVENTS_DIR / "breast-cancer-mlp" / "infer.json")
    rows = np.array(json.loads(base64.b64decode(event["body"]))["inputs"][0]["data"], np.float32)
    dataset = load_breast_cancer()
    found = [np.flatnonzero((dataset.data.astype(np.float32) == row).all(axis=1))[0]
             for row in rows]
    # When the function runs it
    body = json.loads(invoke("breast-cancer-mlp", event, lambda_context, monkeypatch)["body"])
    # Then the labels are the dataset's, and the probabilities are distributions
    outputs = {o["name"]: o for o in body["outputs"]}
    assert set(dataset.target[found]) == {0, 1}
    assert outputs["label"]["data"] == dataset.target[found].tolist()
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(len(rows), 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_binary_response_decodes_to_the_json_answer(
    lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    json_body = json.loads(
        invoke(
            "breast-cancer-mlp",
            load_event(EVENTS_DIR / "breast-cancer-mlp" / "infer.json"),
            lambda_context,
            monkeypatch,
        )["body"]
    )
    header, tensors = decode_binary_response(
        invoke(
            "breast-cancer-mlp",
            load_event(EVENTS_DIR / "breast-cancer-mlp" / "infer-binary.json"),
            lambda_context,
            monkeypatch,
        )
    )
    offset, decoded = 0, {}
    for output in header["outputs"]:
        size = output["parameters"]["binary_data_size"]
        dtype = {"FP32": "<f4", "INT64": "<i8"}[output["datatype"]]
        decoded[output["name"]] = np.frombuffer(
            tensors[offset : offset + size], dtype=dtype
        ).tolist()
        offset += size
    for output in json_body["outputs"]:
        assert np.allclose(decoded[output["name"]], output["data"], atol=1e-6)


def test_a_raw_binary_request_is_answered_as_triton_answers_it(
    lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inference-Header-Content-Length 0: the body is the one input's bytes (its rows from its
    size); every output comes back as binary tensor data, with an `id` (API Gateway's request
    id, as the request had none), and the values are the JSON request's."""
    rows = load_breast_cancer().data[:3].astype("<f4")
    event = load_event(EVENTS_DIR / "breast-cancer-mlp" / "infer-binary.json")
    event["body"] = base64.b64encode(rows.tobytes()).decode()
    event["headers"]["Inference-Header-Content-Length"] = "0"
    event["multiValueHeaders"]["Inference-Header-Content-Length"] = ["0"]
    header, tensors = decode_binary_response(
        invoke("breast-cancer-mlp", event, lambda_context, monkeypatch))
    assert header["id"] == event["requestContext"]["requestId"]
    assert [(o["name"], o["shape"]) for o in header["outputs"]] == [
        ("label", [3]), ("probabilities", [3, 2])]
    labels = np.frombuffer(tensors[:24], dtype="<i8").tolist()
    as_json = load_event(INFER_EVENT)
    as_json["body"] = json.dumps({"inputs": [{"name": "features", "shape": [3, 30],
                                              "datatype": "FP32", "data": rows.tolist()}]})
    as_json["isBase64Encoded"] = False
    answer = json.loads(invoke("breast-cancer-mlp", as_json, lambda_context, monkeypatch)["body"])
    assert labels == answer["outputs"][0]["data"]
    assert answer["id"] == as_json["requestContext"]["requestId"]


@pytest.mark.parametrize("function", ["breast-cancer-mlp", "server"])
def test_a_20000_character_model_name_is_not_echoed_whole(
    function: str, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "m" * 20_000
    event = load_event(EVENTS_DIR / "breast-cancer-mlp" / "metadata.json")
    event.update(path=f"/v2/models/{name}", resource="/v2/models/{model}",
                 pathParameters={"model": name})
    response = invoke(function, event, lambda_context, monkeypatch)
    error = json.loads(response["body"])["error"]
    assert response["statusCode"] == 404 and "unknown model" in error
    assert len(error) < 400 and "(20000 characters)" in error


def bad(event_path: Path, **changes: Any) -> dict[str, Any]:
    event = load_event(event_path)
    event.update(changes)
    return event


INFER_EVENT = EVENTS_DIR / "breast-cancer-mlp" / "infer.json"
VERSION_EVENT = EVENTS_DIR / "breast-cancer-mlp" / "version-infer.json"


@pytest.mark.parametrize(
    ("event", "status", "fragment"),
    [
        (bad(INFER_EVENT, body=base64.b64encode(b"{not json").decode()), 400, "json"),
        (bad(INFER_EVENT, body="%%% not base64 %%%"), 400, "base64"),
        (
            bad(
                INFER_EVENT,
                body=base64.b64encode(
                    json.dumps(
                        {
                            "inputs": [
                                {
                                    "name": "features",
                                    "shape": [1, 29],
                                    "datatype": "FP32",
                                    "data": [0.0] * 29,
                                }
                            ]
                        }
                    ).encode()
                ).decode(),
            ),
            400,
            "shape",
        ),
        (
            bad(
                VERSION_EVENT,
                pathParameters={"version": "999"},
                path="/v2/models/breast-cancer-mlp/versions/999/infer",
            ),
            404,
            "999",
        ),
        # API Gateway sends the resource it matched with the path; the function routes on it.
        (bad(INFER_EVENT, path="/v2/models/no-such-model/infer",
             resource="/v2/models/no-such-model/infer"), 404, "no-such-model"),
        (bad(INFER_EVENT, path="/v2/models/breast-cancer-mlp/generate",
             resource="/v2/models/breast-cancer-mlp/generate"), 404, "No such route"),
        (
            bad(
                INFER_EVENT,
                body=base64.b64encode(struct.pack("<I", 7) + b"\xff").decode(),
                headers={"Inference-Header-Content-Length": "1000"},
            ),
            400,
            "",
        ),
    ],
    ids=[
        "malformed-json",
        "bad-base64",
        "wrong-shape",
        "unknown-version",
        "unknown-model",
        "no-route",
        "lying-binary-header",
    ],
)
def test_bad_requests_get_a_4xx_in_the_protocol_error_format(
    event: dict[str, Any],
    status: int,
    fragment: str,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    response = invoke("breast-cancer-mlp", event, lambda_context, monkeypatch)
    assert response["statusCode"] == status
    body = json.loads(response["body"])
    assert set(body) == {"error"}
    assert fragment.lower() in body["error"].lower()


def test_an_unexpected_error_is_a_500_without_a_stack_trace(
    lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = handler_for("breast-cancer-mlp", monkeypatch)

    def explode(*_: Any) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(module.service, "infer", explode)
    response = module.lambda_handler(load_event(INFER_EVENT), lambda_context)
    assert response["statusCode"] == 500
    assert "secret" not in response["body"] and "Traceback" not in response["body"]
    assert lambda_context.aws_request_id in json.loads(response["body"])["error"]


def test_tabular_metadata_names_the_columns_of_the_dataset(
    lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The console labels the values and the attributions with them (parameters.feature_names)
    body = json.loads(invoke("breast-cancer-mlp", load_event(EVENTS_DIR / "breast-cancer-mlp"
                                                             / "metadata.json"),
                             lambda_context, monkeypatch)["body"])
    names = body["parameters"]["feature_names"]["features"]
    assert names == [str(name) for name in load_breast_cancer().feature_names]
    assert names[0] == "mean radius" and len(names) == 30


def test_the_server_function_imports_neither_numpy_nor_onnxruntime(tmp_path: Path) -> None:
    # It holds no model: its cold start (GET /v2, readiness, the root API's forwarding) pays
    # for neither (docs/performance.md, "Cold start").
    catalog = tmp_path / "models.json"
    catalog.write_text(json.dumps({"models": [{"name": "m", "versions": ["1"], "current": "1",
                                               "group": 0}]}))
    script = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("server_app", {str(HANDLER)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
event = json.load(open({str(EVENTS_DIR / "server" / "server-metadata.json")!r}))
class Context:
    function_name = "server"; aws_request_id = "0"; memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:server"
answer = module.lambda_handler(event, Context())
print(json.dumps({{"status": answer["statusCode"],
                  "imported": sorted(m for m in ("numpy", "onnxruntime") if m in sys.modules)}}))
"""
    env = {**os.environ, "MODEL_CATALOG": str(catalog), "MODEL_FUNCTION_PREFIX": "model-",
           "MODELS_DIR": str(tmp_path)}
    env.pop("MODEL_NAME", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"status": 200, "imported": []}


# What a model function's first /infer never needs, imported by the route or load that does
# (docs/performance.md, "Cold start: what the first /infer does not need").
DEFERRED = ("model_api.catalog", "model_api.console", "model_api.repository", "model_api.store")


def test_a_model_functions_first_infer_imports_only_what_it_needs() -> None:
    # and the Kernel SHAP background (numpy's zipfile reader) is parsed by the first /explain
    model = "breast-cancer-mlp"
    script = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("model_app", {str(HANDLER)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
class Context:
    function_name = "model"; aws_request_id = "0"; memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:model"
explainer = module.service.model({model!r}).explainer
statuses, found = [], []
for route in ("infer", "explain"):
    event = json.load(open({str(EVENTS_DIR / model)!r} + f"/{{route}}.json"))
    statuses.append(module.lambda_handler(event, Context())["statusCode"])
    found.append(sorted(name for name in {DEFERRED!r} if name in sys.modules)
                 + (["background rows"] if "background" in vars(explainer) else []))
print(json.dumps({{"status": statuses, "imported": found}}))
"""
    env = {**os.environ, "MODELS_DIR": str(MODELS_DIR), "MODEL_NAME": model,
           "MODEL_VERSION": current_version(model)}
    env.pop("MODEL_CATALOG", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    # After /infer none of them; after /explain the background's rows, and only those.
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "status": [200, 200], "imported": [[], ["background rows"]]}
