"""End to end: `python -m local_api serve` on the built template, called over real HTTP on
127.0.0.1, as a user would after `make serve`."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import mean_absolute_error, r2_score

from tests.conftest import local_api_server
from tests.datasets import whole_dataset

MODEL = "breast-cancer-mlp"
SEED_MODELS = ("breast-cancer-mlp", "diabetes-linear", "text-topics", "digits-cnn")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    log = tmp_path_factory.mktemp("local-api") / "server.log"
    with local_api_server(log) as (client, port):
        yield client
    # Ctrl-C stopped it cleanly (no traceback); it printed its URL when it started.
    assert f"http://127.0.0.1:{port}" in log.read_text(), "the server prints its URL"


def infer_body(rows: np.ndarray) -> dict[str, Any]:
    return {
        "id": "all-rows",
        "inputs": [
            {
                "name": "features",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.tolist(),
            }
        ],
    }


@pytest.mark.parametrize("name", SEED_MODELS)
def test_metrics_over_the_whole_dataset_are_what_the_manifest_reports(
    api: httpx.Client, manifests: dict[str, Any], name: str
) -> None:
    """Issue 3's promise: every seed model, all of its dataset in one request, through the API."""
    inputs, targets = whole_dataset(name)
    (signature,) = manifests[name]["inputs"]
    data = inputs.tolist()
    body = {"id": "all-rows", "inputs": [{"name": signature["name"], "shape": list(inputs.shape),
                                          "datatype": signature["datatype"], "data": data}]}
    response = api.post(f"/v2/models/{name}/infer", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] == "all-rows" and answer["model_name"] == name
    outputs = {o["name"]: o for o in answer["outputs"]}
    expected = manifests[name]["metrics"]["full_dataset"]
    assert expected["rows"] == len(targets)
    if "accuracy" in expected:
        labels = outputs["label"]
        assert labels["shape"] == [len(targets)]
        accuracy = float(np.mean(np.array(labels["data"], dtype=targets.dtype) == targets))
        assert accuracy == pytest.approx(expected["accuracy"], abs=1e-9)
    else:
        prediction = np.array(outputs["prediction"]["data"], dtype=np.float32)
        assert prediction.shape == targets.shape
        assert float(r2_score(targets, prediction)) == pytest.approx(expected["r2"], rel=1e-6)
        assert float(mean_absolute_error(targets, prediction)) == pytest.approx(
            expected["mae"], rel=1e-6)


def test_nested_and_flat_data_give_the_same_answer(api: httpx.Client) -> None:
    rows = load_breast_cancer().data[:3]
    nested = api.post(f"/v2/models/{MODEL}/infer", json=infer_body(rows)).json()
    flat_body = infer_body(rows)
    flat_body["inputs"][0]["data"] = rows.ravel().tolist()
    flat = api.post(f"/v2/models/{MODEL}/versions/1/infer", json=flat_body).json()
    assert nested["outputs"] == flat["outputs"]


def test_binary_tensors_in_and_out(api: httpx.Client) -> None:
    rows = load_breast_cancer().data[:4].astype("<f4")
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": [4, 30],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    response = api.post(
        f"/v2/models/{MODEL}/infer",
        content=header + rows.tobytes(),
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    answer = json.loads(response.content[:length])
    (output,) = answer["outputs"]
    probabilities = np.frombuffer(response.content[length:], dtype="<f4").reshape(output["shape"])
    assert probabilities.shape == (4, 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_a_raw_binary_request_over_http(api: httpx.Client) -> None:
    """Triton's raw binary request (Inference-Header-Content-Length 0, the body is the one
    input's bytes) through the local API: every output as binary tensor data, the answer's
    `id` the request id the client got as x-amzn-RequestId, the JSON request's values."""
    rows = load_breast_cancer().data[:4].astype("<f4")
    response = api.post(f"/v2/models/{MODEL}/infer", content=rows.tobytes(), headers={
        "Inference-Header-Content-Length": "0", "Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    answer = json.loads(response.content[:length])
    assert answer["id"] == response.headers["x-amzn-requestid"]
    assert [(o["name"], o["shape"]) for o in answer["outputs"]] == [
        ("label", [4]), ("probabilities", [4, 2])]
    labels = np.frombuffer(response.content[length:length + 32], dtype="<i8").tolist()
    as_json = api.post(f"/v2/models/{MODEL}/infer", json=infer_body(rows)).json()
    assert labels == as_json["outputs"][0]["data"]
    short = api.post(f"/v2/models/{MODEL}/infer", content=rows.tobytes()[:-4], headers={
        "Inference-Header-Content-Length": "0", "Content-Type": "application/octet-stream"})
    assert short.status_code == 400 and "multiple of 120 bytes" in short.json()["error"]


def test_metadata_ready_and_server_routes(api: httpx.Client) -> None:
    metadata = api.get(f"/v2/models/{MODEL}").json()
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 30]}]
    assert api.get(f"/v2/models/{MODEL}/ready").json()["ready"] is True
    assert api.get(f"/v2/models/{MODEL}/versions/1/ready").status_code == 200
    assert "binary_tensor_data" in api.get("/v2").json()["extensions"]
    assert api.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "content", "status"),
    [
        ("POST", f"/v2/models/{MODEL}/infer", b"{not json", 400),
        ("POST", f"/v2/models/{MODEL}/infer", json.dumps({"inputs": []}).encode(), 400),
        (
            "POST",
            f"/v2/models/{MODEL}/infer",
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "features",
                            "shape": [1, 30],
                            "datatype": "FP32",
                            "data": ["x"] * 30,
                        }
                    ]
                }
            ).encode(),
            400,
        ),
        ("POST", f"/v2/models/{MODEL}/versions/7/infer", json.dumps({"inputs": []}).encode(), 404),
        ("GET", "/v2/models/no-such-model", b"", 404),
        ("DELETE", f"/v2/models/{MODEL}", b"", 404),
        ("POST", f"/v2/models/{MODEL}/infer", struct.pack("<f", 1.0), 400),
    ],
)
def test_bad_requests_get_4xx_in_the_error_format_and_the_server_stays_up(
    api: httpx.Client, method: str, path: str, content: bytes, status: int
) -> None:
    response = api.request(
        method, path, content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert api.get("/v2/health/live").status_code == 200


@pytest.mark.parametrize("binary", [True, False], ids=["binary-tensors", "json-tensors"])
def test_tritons_stock_http_client_works_unchanged(api: httpx.Client, binary: bool) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=str(api.base_url).removeprefix("http://"))
    assert client.is_server_live() and client.is_model_ready(MODEL)
    assert client.get_model_metadata(MODEL)["inputs"][0]["name"] == "features"
    rows = load_breast_cancer().data[:5].astype(np.float32)
    features = triton.InferInput("features", list(rows.shape), "FP32")
    features.set_data_from_numpy(rows, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput(name, binary_data=binary) for name in ("label", "probabilities")
    ]
    result = client.infer(MODEL, [features], outputs=outputs, request_id="triton-1")
    assert result.get_response()["id"] == "triton-1"
    assert result.as_numpy("label").tolist() == [0, 0, 0, 0, 0]
    assert result.as_numpy("probabilities").shape == (5, 2)


def test_a_refusal_quoting_client_text_is_logged_whatever_it_holds(tmp_path: Any) -> None:
    # Given a JSON key holding a lone surrogate (a valid JSON escape, not valid UTF-8 text)
    body = b'{"\\ud800": 1, "inputs": []}'
    log = tmp_path / "server.log"
    # (--function-logs all: the function's INFO records are on the output, not only in its file)
    with local_api_server(log, extra=("--function-logs", "all")) as (client, _):
        # When it is posted
        response = client.post(f"/v2/models/{MODEL}/infer", content=body,
                               headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and set(response.json()) == {"error"}
    # Then the function's refusal record is written, JSON-safe, with no traceback
    records = [json.loads(line[line.index("{"):]) for line in log.read_text().splitlines()
               if '"request refused"' in line]
    assert any("\ud800" in record["reason"] for record in records), log.read_text()[-3000:]
    assert "Logging error" not in log.read_text() and "UnicodeEncodeError" not in log.read_text()


@pytest.mark.parametrize("path", [
    "/v2/models/breast%2Dcancer-mlp/ready", "/v2/models/breast-cancer-mlp/versions/%31/ready",
    "/v2/models/%62reast-cancer-mlp/versions/1/ready"])
def test_percent_encoded_path_parameters_name_the_same_model(api: httpx.Client, path: str) -> None:
    """A REST API decodes path parameters: the escapes name the same model and version."""
    response = api.get(path)
    assert response.status_code == 200, response.text
    assert response.json()["ready"] is True


def test_an_escaped_version_infers(api: httpx.Client) -> None:
    rows = load_breast_cancer().data[:2]
    response = api.post(f"/v2/models/{MODEL}/versions/%31/infer", json=infer_body(rows))
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "1"


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritons_client_compresses_its_request_and_reads_a_compressed_answer(
        api: httpx.Client, algorithm: str) -> None:
    """tritonclient.http's own request and response compression, unchanged: the gateway
    decodes the body (Content-Encoding) and compresses the answer it accepts."""
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=str(api.base_url).removeprefix("http://"))
    rows = load_breast_cancer().data[:50].astype(np.float32)
    features = triton.InferInput("features", list(rows.shape), "FP32")
    features.set_data_from_numpy(rows, binary_data=False)
    result = client.infer(MODEL, [features], request_id="zipped",
                          request_compression_algorithm=algorithm,
                          response_compression_algorithm=algorithm)
    assert result.get_response()["id"] == "zipped"
    assert result.as_numpy("probabilities").shape == (50, 2)


def test_large_answers_are_compressed_for_clients_that_accept_it(api: httpx.Client) -> None:
    """As API Gateway with MinimumCompressionSize (1 KiB in template.yaml): a large answer is
    gzip-encoded when the client asks for it, a small one and an unasked one never are."""
    body = infer_body(load_breast_cancer().data[:200])
    asked = api.post(f"/v2/models/{MODEL}/infer", json=body,
                     headers={"Accept-Encoding": "gzip"})
    assert asked.status_code == 200 and asked.headers["content-encoding"] == "gzip"
    assert int(asked.headers["content-length"]) < len(asked.content)  # httpx decoded it
    unasked = api.post(f"/v2/models/{MODEL}/infer", json=body,
                       headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in unasked.headers and unasked.json() == asked.json()
    small = api.get("/v2/health/live", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers and small.json() == {"live": True}


def test_the_model_repository_index_lists_every_registered_version(api: httpx.Client) -> None:
    # Triton's model repository extension, from the registry and each model's own readiness:
    # the server function asks every model function (Lambda Invoke, here the local API's).
    import tritonclient.http as triton

    from model_registry import registry

    assert "model_repository" in api.get("/v2").json()["extensions"]
    wanted = [{"name": e.name, "version": v, "state": "READY", "reason": ""}
              for e in sorted(registry.load(), key=lambda e: e.name) for v in e.versions]
    assert api.post("/v2/repository/index").json() == wanted
    assert api.post("/v2/repository/index", json={"ready": True}).json() == wanted
    client = triton.InferenceServerClient(url=str(api.base_url).removeprefix("http://"))
    assert client.get_model_repository_index() == wanted
    assert client.is_server_ready()
    for action in ("load", "unload"):
        refused = api.post(f"/v2/repository/models/{MODEL}/{action}")
        assert refused.status_code == 400 and "deployed with the stack" in refused.json()["error"]
    with pytest.raises(triton.InferenceServerException, match="deployed with the stack"):
        client.load_model(MODEL)


def test_only_the_functions_themselves_may_use_the_local_lambda_endpoint(
        api: httpx.Client) -> None:
    # The Invoke API the server function uses: a caller without the per-process key (a client
    # of the API) cannot invoke a function directly, past the API key.
    path = "/2015-03-31/functions/BreastCancerMlpFunction/invocations"
    refused = api.post(path, json={})
    assert refused.status_code == 403
    assert refused.headers["x-amzn-ErrorType"] == "UnrecognizedClientException"
    forged = api.post(path, json={}, headers={
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAGUESS/20260101/us-east-1/lambda/"})
    assert forged.status_code == 403


def test_the_console_and_docs_are_served_with_their_vendored_libraries(
        api: httpx.Client) -> None:
    page = api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("console.js", "console.css", "chart.umd.min.js", "swagger-ui-bundle.js",
                  "swagger-ui.css", "docs.js"):
        served = api.get(f"/static/{asset}", headers={"Accept-Encoding": "gzip"})
        assert served.status_code == 200 and served.headers["content-encoding"] == "gzip", asset
    assert api.get("/static/..%2Ftemplate.yaml").status_code == 404
    assert api.get("/static/nope.js").json()["error"].startswith("no static file")
    from model_registry.openapi import OUTPUT

    assert api.get("/openapi.json").json() == json.loads(OUTPUT.read_text())
    assert "swagger-ui-bundle.js" in api.get("/docs").text
EXPLAINED = {  # model -> (method, explained output, attributions' shape for one row)
    "breast-cancer-mlp": ("kernel_shap", "probabilities", [1, 30]),
    "diabetes-linear": ("linear", "prediction", [1, 10]),
    "digits-cnn": ("occlusion", "probabilities", [1, 8, 8]),
    "text-topics": ("token_ablation", "probabilities", None),
}


@pytest.mark.parametrize("name", SEED_MODELS)
def test_explain_one_row_of_every_model(api: httpx.Client, manifests: dict[str, Any],
                                        name: str) -> None:
    """Issue 12's promise: `POST /v2/models/<model>/explain` with one row returns its
    attributions in the input's shape; the additive methods' add up to the explained output."""
    inputs, _ = whole_dataset(name)
    (signature,) = manifests[name]["inputs"]
    body = {"id": "why", "inputs": [{"name": signature["name"], "datatype": signature["datatype"],
                                     "shape": [1, *inputs.shape[1:]],
                                     "data": inputs[:1].tolist()}]}
    response = api.post(f"/v2/models/{name}/explain", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    method, explained, shape = EXPLAINED[name]
    summary = answer["parameters"].pop("summary")
    assert answer["parameters"] == {"method": method, "explained_output": explained}
    assert summary.startswith("Predicted ") and "\n" not in summary  # one row, one sentence
    outputs = {o["name"]: o for o in answer["outputs"]}
    own = [o["name"] for o in manifests[name]["outputs"]]
    assert list(outputs) == [*own, "attributions", *(["tokens"] if shape is None else []),
                             "base_value", "target"]
    assert outputs["base_value"]["datatype"] == "FP32" and outputs["target"]["datatype"] == "INT64"
    attributions = np.array(outputs["attributions"]["data"]).reshape(
        outputs["attributions"]["shape"])
    if shape is None:
        assert outputs["tokens"]["shape"] == outputs["attributions"]["shape"]
        assert outputs["tokens"]["datatype"] == "BYTES"
    else:
        assert outputs["attributions"]["shape"] == shape
    target = outputs["target"]["data"][0]
    scores = np.array(outputs[explained]["data"]).reshape(1, -1)
    if explained == "probabilities":
        assert target == int(scores.argmax())
    if method in ("kernel_shap", "linear"):
        total = outputs["base_value"]["data"][0] + attributions.sum()
        assert total == pytest.approx(scores[0, target], abs=1e-4)
    versioned = api.post(f"/v2/models/{name}/versions/1/explain", json=body)
    assert versioned.json()["outputs"] == answer["outputs"]
