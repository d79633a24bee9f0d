"""Every way a request can be wrong, with the status it must get, against the local API over
real HTTP: always the expected 4xx with exactly {"error": <message>}, never a 5xx, and the
server keeps serving. Requests exactly at a limit are served.

The one case HTTP cannot carry (a body that is not valid base64: API Gateway always sends valid
base64 for our `*/*` binary media type) goes through the real handler with an event.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from model_api.limits import (
    MAX_BYTES_ELEMENT,
    MAX_EXPLAIN_ROWS,
    MAX_EXPLAIN_TOKENS,
    MAX_JSON_DEPTH,
    MAX_REQUEST_BYTES,
    MAX_ROWS,
    MAX_SHAP_SAMPLES,
)

from tests.conftest import EVENTS_DIR, MODELS_DIR, ROOT, load_event
from tests.hostile.conftest import assert_error_answer

MLP = "/v2/models/breast-cancer-mlp"  # features: FP32 [-1, 30]; outputs label, probabilities
CNN = "/v2/models/digits-cnn"  # image: FP32 [-1, 8, 8]; explained by occlusion
LINEAR = "/v2/models/diabetes-linear"  # features: FP32 [-1, 10]; output prediction
TEXT = "/v2/models/text-topics"  # text: BYTES [-1]
JSON_TYPE = {"Content-Type": "application/json"}
MB = 1_000_000


def dumps(document: Any) -> bytes:
    return json.dumps(document).encode()


def features(rows: int = 1, value: Any = 0.5, width: int = 30, **extra: Any) -> dict[str, Any]:
    """An MLP (or, width 10, linear) input of `rows` rows, every element `value`."""
    return {"name": "features", "shape": [rows, width], "datatype": "FP32",
            "data": [value] * (rows * width), **extra}


def request(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return dumps({"inputs": list(inputs or [features()]), **extra})


def arrays(depth: int) -> list[Any]:
    """`depth` nested empty arrays."""
    nested: list[Any] = []
    for _ in range(depth - 1):
        nested = [nested]
    return nested


def binary(header: dict[str, Any], tail: bytes, length: int | str | None = None) -> Case:
    """A binary-extension request whose header length may lie (`length`)."""
    head = dumps(header)
    return Case("", "POST", f"{MLP}/infer", head + tail, 400, {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head) if length is None else length)})


def binary_input(size: int | Any) -> dict[str, Any]:
    return {"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32",
                        "parameters": {"binary_data_size": size}}]}


ROW = struct.pack("<30f", *([0.5] * 30))


@dataclass
class Case:
    id: str
    method: str
    path: str
    body: bytes
    status: int
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON_TYPE))
    says: str = ""  # over a limit: the message names the limit


def named(case: Case, name: str, status: int | None = None) -> Case:
    case.id = name
    case.status = status or case.status
    return case


def infer(name: str, body: bytes, status: int = 400, path: str = f"{MLP}/infer",
          says: str = "") -> Case:
    return Case(name, "POST", path, body, status, says=says)


ROWS_LIMIT = f"the limit is {MAX_ROWS} rows"
DEPTH_LIMIT = f"the limit is {MAX_JSON_DEPTH}"
GATEWAY_LIMITS = "at most 10 MB, and the model functions at most 4 MiB"


CASES = [
    # Malformed JSON and wrong content
    infer("malformed-json", b'{"inputs": [{"name": "features",'),
    infer("trailing-garbage", request() + b" }"),
    infer("empty-body", b""),
    infer("json-array-not-object", b"[]"),
    infer("json-string-not-object", b'"inputs"'),
    infer("json-null", b"null"),
    infer("duplicate-keys", b'{"inputs": [], "inputs": []}'),
    Case("form-urlencoded-body", "POST", f"{MLP}/infer", b"inputs=1&shape=2", 400,
         {"Content-Type": "application/x-www-form-urlencoded"}),
    Case("raw-floats-without-binary-header", "POST", f"{MLP}/infer", ROW, 400,
         {"Content-Type": "application/octet-stream"}),
    infer("invalid-utf8", b'{"inputs": [{"name": "\xff\xfe"}]}'),
    infer("utf16-json", request().decode().encode("utf-16")),
    # Missing and extra fields
    infer("missing-inputs", dumps({"id": "1"})),
    infer("empty-inputs", dumps({"inputs": []})),
    infer("inputs-not-a-list", dumps({"inputs": {"features": [0.5] * 30}})),
    infer("input-not-an-object", dumps({"inputs": ["features"]})),
    infer("missing-shape", request({k: v for k, v in features().items() if k != "shape"})),
    infer("missing-datatype", request({k: v for k, v in features().items() if k != "datatype"})),
    infer("missing-name", request({k: v for k, v in features().items() if k != "name"})),
    infer("missing-data", request({k: v for k, v in features().items() if k != "data"})),
    infer("extra-request-field", request(bogus=1)),
    infer("extra-input-field", request(features(contents="x"))),
    infer("unknown-input-name", request(features(name="feature"))),
    infer("input-twice", request(features(), features())),
    infer("id-not-a-string", request(id=42)),
    infer("parameters-not-an-object", request(parameters=[1])),
    infer("binary-data-output-not-a-bool", request(parameters={"binary_data_output": "yes"})),
    infer("outputs-not-a-list", request(outputs="label")),
    infer("output-without-name", request(outputs=[{"parameters": {}}])),
    infer("output-twice", request(outputs=[{"name": "label"}, {"name": "label"}])),
    # Datatypes
    infer("unknown-datatype", request(features(datatype="FP128"))),
    infer("datatype-not-a-string", request(features(datatype=32))),
    infer("datatype-the-model-does-not-take", request(features(datatype="INT32", value=1))),
    # Data that does not match the shape or the datatype
    infer("too-few-elements", request(features() | {"data": [0.5] * 29})),
    infer("too-many-elements", request(features() | {"data": [0.5] * 31})),
    infer("nested-unlike-shape", request(features() | {"data": [[0.5] * 15, [0.5] * 15]})),
    infer("ragged-nesting", request(features(2) | {"data": [[0.5] * 30, [0.5] * 29]})),
    infer("data-not-a-list", request(features() | {"data": 0.5})),
    infer("data-object", request(features() | {"data": {"0": 0.5}})),
    infer("strings-where-numbers-belong", request(features(value="0.5"))),
    infer("booleans-where-numbers-belong", request(features(value=True))),
    infer("nulls-where-numbers-belong", request(features(value=None))),
    infer("numbers-where-strings-belong", dumps(
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [1]}]}),
        path=f"{TEXT}/infer"),
    infer("lone-surrogate-string", b'{"inputs": [{"name": "text", "shape": [1], '
                                   b'"datatype": "BYTES", "data": ["\\ud800"]}]}',
          path=f"{TEXT}/infer"),
    # Shapes: negative, zero, wrong rank, absurd
    infer("negative-rows", request(features() | {"shape": [-1, 30]})),
    infer("zero-rows", request(features() | {"shape": [0, 30], "data": []})),
    infer("wrong-width", request(features() | {"shape": [1, 29]})),
    infer("wrong-rank", request(features() | {"shape": [1, 30, 1]})),
    infer("shape-of-strings", request(features() | {"shape": ["1", "30"]})),
    infer("shape-of-floats", request(features() | {"shape": [1.0, 30.0]})),
    infer("shape-not-a-list", request(features() | {"shape": 30})),
    infer("absurd-rows", request(features() | {"shape": [10**12, 30]}), 413, says=ROWS_LIMIT),
    infer("rows-beyond-int64", request(features() | {"shape": [2**70, 30]}), 413,
          says=ROWS_LIMIT),
    infer("shape-beyond-float", b'{"inputs": [{"name": "features", "shape": [1e999, 30], '
                                b'"datatype": "FP32", "data": [0.5]}]}'),
    # NaN, Infinity, huge numbers
    infer("nan-literal", request().replace(b"0.5", b"NaN", 1)),
    infer("infinity-literal", request().replace(b"0.5", b"-Infinity", 1)),
    infer("float-overflowing-to-inf", request().replace(b"0.5", b"1e999", 1)),
    infer("float-beyond-fp32", request().replace(b"0.5", b"1e39", 1)),
    infer("integer-beyond-any-float", request().replace(b"0.5", b"1" + b"0" * 400, 1)),
    infer("integer-of-5000-digits", request().replace(b"0.5", b"9" * 5000, 1)),
    # Finite inputs whose outputs overflow to NaN/inf: the client's doing, so a 400 (a 5xx would
    # count as a server error and roll a deployment back)
    infer("huge-finite-inputs-overflowing-the-model", request(features(value=3e38))),
    infer("huge-finite-inputs-overflowing-a-linear-model",
          request(features(value=3e38, width=10)), path=f"{LINEAR}/infer"),
    # Deep nesting (the parser recurses per level)
    infer("deeply-nested-data", request(features() | {"data": "X"}).replace(
        b'"X"', b"[" * 100_000 + b"]" * 100_000), says=DEPTH_LIMIT),
    infer("unterminated-nesting", b'{"inputs": ' + b"[" * 1_000_000, says=DEPTH_LIMIT),
    # request object, parameters object, then arrays: one level over MAX_JSON_DEPTH
    infer("nesting-one-over-the-limit", request(parameters={"p": arrays(MAX_JSON_DEPTH - 1)}),
          says=DEPTH_LIMIT),
    # Binary tensors whose sizes lie
    named(binary(binary_input(120), ROW, length=10_000), "header-length-beyond-body"),
    named(binary(binary_input(120), ROW, length=-1), "header-length-negative"),
    named(binary(binary_input(120), ROW, length="abc"), "header-length-not-a-number"),
    named(binary(binary_input(120), ROW, length="9" * 40), "header-length-40-digits"),
    # 0 is a raw binary request (the whole body is the input): a JSON header plus a row is
    # not a whole number of rows of 30 FP32
    named(binary(binary_input(120), ROW, length=0), "header-length-zero-on-a-json-body"),
    named(binary(binary_input(120), ROW, length=10), "header-length-inside-the-json"),
    named(binary(binary_input(240), ROW), "binary-size-beyond-the-bytes-sent"),
    named(binary(binary_input(60), ROW), "binary-size-leaving-bytes-over"),
    named(binary(binary_input(118), ROW[:118]), "binary-size-not-a-multiple-of-fp32"),
    named(binary(binary_input(-120), ROW), "binary-size-negative"),
    named(binary(binary_input("120"), ROW), "binary-size-a-string"),
    named(binary(binary_input(120), struct.pack("<30f", *([float("nan")] * 30))),
          "binary-nan"),
    infer("binary-size-without-header", dumps(binary_input(120))),
    # Unknown model, version, output, route
    infer("unknown-model", request(), 404, "/v2/models/no-such-model/infer"),
    infer("unknown-version", request(), 404, f"{MLP}/versions/7/infer"),
    infer("traversal-version", request(), 404, f"{MLP}/versions/..%2F..%2Fetc/infer"),
    infer("unknown-output", request(outputs=[{"name": "logits"}]), 404),
    Case("unknown-version-metadata", "GET", f"{MLP}/versions/0", b"", 404),
    Case("unknown-version-ready", "GET", f"{MLP}/versions/latest/ready", b"", 404),
    Case("method-not-served", "DELETE", f"{MLP}/infer", b"", 404),
    Case("newline-in-path", "GET", f"{MLP}/versions/%0A1", b"", 404),
    Case("newline-beyond-the-routes", "GET", f"{MLP}/%0A/infer", b"", 404),
    Case("unknown-method", "PROPFIND", f"{MLP}", b"", 404),
    Case("malformed-batch-job-id", "GET", "/v2/batch/jobs/not-a-job", b"", 404),
    Case("control-character-in-batch-job-id", "GET", "/v2/batch/jobs/%03U", b"", 404),
    Case("get-on-infer", "GET", f"{MLP}/infer", b"", 404),
    # Sizes: over the function's 4 MiB, over Lambda's 6 MB event, over API Gateway's 10 MB
    infer("body-one-byte-over-4-MiB", request() + b" " * (MAX_REQUEST_BYTES + 1 - len(request())),
          413, says=f"the limit is {MAX_REQUEST_BYTES} bytes"),
    infer("body-over-lambdas-6-MB-event", request() + b" " * (5 * MB), 413, says=GATEWAY_LIMITS),
    infer("body-over-api-gateways-10-MB", request() + b" " * (11 * MB), 413,
          says=GATEWAY_LIMITS),
    infer("rows-one-over-the-limit", request(features(MAX_ROWS + 1, value=0)), 413,
          says=ROWS_LIMIT),
    # Explanations (/explain): the same body as infer, plus parameters target and samples
    infer("explain-malformed-json", b'{"inputs": [', path=f"{MLP}/explain"),
    infer("explain-nan-literal", request().replace(b"0.5", b"NaN", 1), path=f"{MLP}/explain"),
    infer("explain-wrong-width", request(features() | {"shape": [1, 29]}),
          path=f"{MLP}/explain"),
    infer("explain-unknown-model", request(), 404, "/v2/models/no-such-model/explain"),
    infer("explain-unknown-version", request(), 404, f"{MLP}/versions/7/explain"),
    infer("explain-unknown-output", request(outputs=[{"name": "saliency"}]), 404,
          f"{MLP}/explain"),
    infer("explain-output-on-infer", request(outputs=[{"name": "attributions"}]), 404),
    infer("explain-target-a-string", request(parameters={"target": "1"}), path=f"{MLP}/explain"),
    infer("explain-target-negative", request(parameters={"target": -1}), path=f"{MLP}/explain"),
    infer("explain-target-a-float", request(parameters={"target": 1.0}), path=f"{MLP}/explain"),
    infer("explain-target-a-bool", request(parameters={"target": True}), path=f"{MLP}/explain"),
    infer("explain-target-beyond-the-classes", request(parameters={"target": 2}),
          path=f"{MLP}/explain"),
    infer("explain-target-beyond-int64", request(parameters={"target": 2**70}),
          path=f"{MLP}/explain"),
    infer("explain-samples-zero", request(parameters={"samples": 0}), path=f"{MLP}/explain"),
    infer("explain-samples-over-the-limit",
          request(parameters={"samples": MAX_SHAP_SAMPLES + 1}), path=f"{MLP}/explain"),
    infer("explain-samples-too-few-for-30-features", request(parameters={"samples": 59}),
          path=f"{MLP}/explain"),
    infer("explain-samples-a-string", request(parameters={"samples": "many"}),
          path=f"{MLP}/explain"),
    infer("explain-samples-on-occlusion", dumps({"parameters": {"samples": 100}, "inputs": [
        {"name": "image", "shape": [1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]}),
        path=f"{CNN}/explain"),
    infer("explain-huge-finite-inputs", request(features(value=3e38)), path=f"{MLP}/explain"),
    infer("explain-huge-finite-inputs-linear", request(features(value=3e38, width=10)),
          path=f"{LINEAR}/explain"),
    infer("explain-rows-one-over-the-limit", request(features(MAX_EXPLAIN_ROWS + 1)), 413,
          f"{MLP}/explain", says=f"the limit is {MAX_EXPLAIN_ROWS} rows"),
    infer("explain-tokens-one-over-the-limit", dumps({"inputs": [
        {"name": "text", "shape": [1], "datatype": "BYTES",
         "data": ["ab " * (MAX_EXPLAIN_TOKENS + 1)]}]}), 413, f"{TEXT}/explain",
          says=f"at most {MAX_EXPLAIN_TOKENS}"),
    Case("get-on-explain", "GET", f"{MLP}/explain", b"", 404),
    infer("bytes-element-one-over-the-limit", dumps({"inputs": [
        {"name": "text", "shape": [1], "datatype": "BYTES",
         "data": ["a" * (MAX_BYTES_ELEMENT + 1)]}]}), 413, f"{TEXT}/infer",
          says=f"the limit is {MAX_BYTES_ELEMENT} bytes"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_hostile_request_gets_its_4xx_in_the_error_format(
        local_api: httpx.Client, case: Case) -> None:
    response = local_api.request(case.method, case.path, content=case.body, headers=case.headers)
    assert_error_answer(response, case.status, case.id)
    assert case.says in response.json()["error"], case.id
    assert local_api.get("/v2/health/live").status_code == 200


def test_every_case_is_distinct_and_expects_a_4xx() -> None:
    assert len({case.id for case in CASES}) == len(CASES)
    assert all(400 <= case.status < 500 for case in CASES)
    assert all(case.says for case in CASES if case.status == 413), "a 413 names its limit"


# --- at the limits: served ------------------------------------------------------------------

def test_a_body_of_exactly_4_MiB_is_served(local_api: httpx.Client) -> None:
    body = request()
    body += b" " * (MAX_REQUEST_BYTES - len(body))
    assert len(body) == MAX_REQUEST_BYTES
    response = local_api.post(f"{MLP}/infer", content=body, headers=JSON_TYPE)
    assert response.status_code == 200, response.text[:500]


def test_max_rows_are_served(local_api: httpx.Client) -> None:
    response = local_api.post(f"{MLP}/infer", content=request(features(MAX_ROWS, value=0)),
                              headers=JSON_TYPE)
    assert response.status_code == 200, response.text[:500]
    label = next(o for o in response.json()["outputs"] if o["name"] == "label")
    assert label["shape"] == [MAX_ROWS]


def test_explain_at_its_row_and_token_limits_is_served(local_api: httpx.Client) -> None:
    response = local_api.post(f"{LINEAR}/explain", headers=JSON_TYPE,
                              content=request(features(MAX_EXPLAIN_ROWS, width=10)))
    assert response.status_code == 200, response.text[:500]
    body = dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                              "data": ["ab " * MAX_EXPLAIN_TOKENS]}]})
    response = local_api.post(f"{TEXT}/explain", content=body, headers=JSON_TYPE)
    assert response.status_code == 200, response.text[:500]
    tokens = next(o for o in response.json()["outputs"] if o["name"] == "tokens")
    assert tokens["shape"] == [1, MAX_EXPLAIN_TOKENS]


def test_a_bytes_element_of_exactly_the_limit_is_served(local_api: httpx.Client) -> None:
    body = dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                              "data": ["a" * MAX_BYTES_ELEMENT]}]})
    response = local_api.post(f"{TEXT}/infer", content=body, headers=JSON_TYPE)
    assert response.status_code == 200, response.text[:500]


def test_nesting_exactly_at_the_limit_is_parsed(local_api: httpx.Client) -> None:
    # request object, parameters object, then MAX_JSON_DEPTH - 2 nested arrays: the parser
    # takes it, and the refusal is the parameter's kind (bool, number or string only), not
    # the depth (one level more is DEPTH_LIMIT, in the cases above)
    deep = arrays(MAX_JSON_DEPTH - 2)
    response = local_api.post(f"{MLP}/infer", content=request(parameters={"p": deep}),
                              headers=JSON_TYPE)
    assert response.status_code == 400, response.text[:500]
    error = response.json()["error"]
    assert "parameter 'p' is an array" in error and DEPTH_LIMIT not in error


def test_the_content_type_does_not_decide_the_decoding(local_api: httpx.Client) -> None:
    """API Gateway base64s every body (`*/*`); the binary header, not Content-Type, decides."""
    response = local_api.post(f"{MLP}/infer", content=request(),
                              headers={"Content-Type": "text/plain"})
    assert response.status_code == 200, response.text[:500]


# --- event level: what API Gateway itself never sends ----------------------------------------

@pytest.fixture(scope="module")
def mlp_handler() -> Any:
    """functions/inference/app.py as the breast-cancer-mlp function's container imports it."""
    with pytest.MonkeyPatch.context() as patch:
        manifest = json.loads(next((MODELS_DIR / "breast-cancer-mlp").glob("*/manifest.json"))
                              .read_text())
        patch.setenv("MODELS_DIR", str(MODELS_DIR))
        patch.setenv("MODEL_NAME", "breast-cancer-mlp")
        patch.setenv("MODEL_VERSION", manifest["version"])
        spec = importlib.util.spec_from_file_location(
            "hostile_mlp_handler", ROOT / "functions" / "inference" / "app.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("body", ["%%% not base64 %%%", "eyJpbnB1dHMiOiBbXX0",
                                  base64.b64encode(request()).decode() + "é"],
                         ids=["not-base64", "missing-padding", "non-ascii"])
def test_a_body_that_is_not_base64_is_a_400(mlp_handler: Any, lambda_context: Any,
                                            body: str) -> None:
    event = load_event(EVENTS_DIR / "breast-cancer-mlp" / "infer.json")
    event.update(body=body, isBase64Encoded=True)
    answer = mlp_handler.lambda_handler(event, lambda_context)
    assert answer["statusCode"] == 400, answer
    assert set(json.loads(answer["body"])) == {"error"}


def _gzip(data: bytes) -> bytes:
    import gzip
    return gzip.compress(data, compresslevel=9)


@pytest.mark.parametrize(("encoding", "body", "status", "says"), [
    # A coding API Gateway does not decode, and bodies that are not what the header says.
    ("br", request(), 415, "Content-Encoding"),
    ("gzip", request(), 415, "Content-Encoding"),
    ("deflate", b"\x78\x9c" + b"\x00" * 40, 415, "Content-Encoding"),
    ("gzip", _gzip(request())[:-9], 415, "Content-Encoding"),           # truncated
    ("gzip", _gzip(request()) + b"trailing", 415, "Content-Encoding"),   # bytes after the end
    ("gzip, br", _gzip(request()), 415, "Content-Encoding"),
    # A decompression bomb: 60 KB that would be 60 MB; refused at API Gateway's 10 MB.
    ("gzip", _gzip(b" " * (60 * MB)), 413, "10 MB"),
    # Decoded, the function's own limit applies to what it gets (4 MiB).
    ("gzip", _gzip(request(features(value=0.5)) + b" " * MAX_REQUEST_BYTES), 413, "4194304"),
], ids=["br", "plain-labelled-gzip", "bad-deflate", "truncated", "trailing", "gzip-then-br",
        "bomb", "decoded-over-4MiB"])
def test_content_codings_api_gateway_does_not_decode_are_415_and_bombs_413(
        local_api: httpx.Client, encoding: str, body: bytes, status: int, says: str) -> None:
    response = local_api.post(f"{MLP}/infer", content=body,
                              headers={**JSON_TYPE, "Content-Encoding": encoding})
    assert_error_answer(response, status, encoding)
    assert says in response.json()["error"] or status == 413, response.json()
    assert local_api.get("/v2/health/live").status_code == 200


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "identity", "GZIP", "gzip, identity"])
def test_every_coding_api_gateway_decodes_is_served(local_api: httpx.Client,
                                                    encoding: str) -> None:
    import zlib
    plain = request(features(rows=3))
    encoded = plain
    for coding in (part.strip().lower() for part in encoding.split(",")):
        if coding == "gzip":
            encoded = _gzip(encoded)
        elif coding == "deflate":
            encoded = zlib.compress(encoded)
    response = local_api.post(f"{MLP}/infer", content=encoded,
                              headers={**JSON_TYPE, "Content-Encoding": encoding})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"][0] == 3
