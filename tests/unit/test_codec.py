"""codec: requests parsed and checked against a manifest, responses encoded, in JSON and binary."""

from __future__ import annotations

import json
import struct
import sys
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from model_api import limits
from model_api.binary import HEADER_LENGTH, encode_tensor
from model_api.codec import (
    InferRequest,
    RequestedOutput,
    decode_request,
    encode_response,
    json_depth,
    parse_json,
)
from model_api.datatypes import DATATYPES, NUMPY_DTYPES
from model_api.errors import ModelAPIError

from tests.unit.tiny_models import manifest_of

FEATURES = manifest_of(("x", "FP32", (-1, 3)),
                       outputs=[("label", "INT64", (-1,)), ("scores", "FP32", (-1, 2))])

# Two rows of values per datatype, as JSON sends them.
SAMPLES: dict[str, list[Any]] = {
    "BOOL": [[True, False, True], [False, False, True]],
    "UINT8": [[0, 1, 255], [7, 8, 9]],
    "UINT16": [[0, 1, 65535], [7, 8, 9]],
    "UINT32": [[0, 1, 2**32 - 1], [7, 8, 9]],
    "UINT64": [[0, 1, 2**64 - 1], [7, 8, 9]],
    "INT8": [[-128, 0, 127], [7, 8, 9]],
    "INT16": [[-(2**15), 0, 2**15 - 1], [7, 8, 9]],
    "INT32": [[-(2**31), 0, 2**31 - 1], [7, 8, 9]],
    "INT64": [[-(2**63), 0, 2**63 - 1], [7, 8, 9]],
    "FP16": [[0.5, -2, 65504.0], [1e-3, 0, 3]],
    "FP32": [[0.1, -2, 3.4e38], [1e-30, 0, 3]],
    "FP64": [[0.1, -2, 1.7e308], [5e-324, 0, 3]],
    "BYTES": [["a", "", "naïve ☃"], ["x" * 10, "1", "true"]],
}


def body(*inputs: dict[str, Any], **fields: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **fields}).encode()


def tensor(data: Any, shape: list[int] | None = None, name: str = "x", datatype: str = "FP32",
           **fields: Any) -> dict[str, Any]:
    shape = shape if shape is not None else list(np.shape(data))
    return {"name": name, "shape": shape, "datatype": datatype, "data": data, **fields}


def decode(raw: bytes, manifest: Any = FEATURES, headers: dict[str, str] | None = None) -> Any:
    return decode_request(raw, headers or {}, manifest)


def refused(raw: bytes, manifest: Any = FEATURES,
            headers: dict[str, str] | None = None) -> ModelAPIError:
    with pytest.raises(ModelAPIError) as caught:
        decode(raw, manifest, headers)
    return caught.value


def binary_body(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), {HEADER_LENGTH: str(len(text))}


# --- parsing --------------------------------------------------------------------------------


def test_a_json_request_becomes_arrays_of_the_manifests_dtype() -> None:
    request = decode(body(tensor([[1, 2, 3.5], [4, 5, 6]]), id="r1", parameters={"p": 1}))
    assert request.id == "r1" and request.parameters == {"p": 1} and request.rows == 2
    array = request.inputs["x"]
    assert array.dtype == np.float32 and array.shape == (2, 3)
    assert array.tolist() == [[1, 2, 3.5], [4, 5, 6]]
    assert request.outputs == (RequestedOutput("label", False), RequestedOutput("scores", False))


def test_flat_and_nested_data_are_the_same_tensor() -> None:
    nested = decode(body(tensor([[1, 2, 3], [4, 5, 6]]))).inputs["x"]
    flat = decode(body(tensor([1, 2, 3, 4, 5, 6], shape=[2, 3]))).inputs["x"]
    assert np.array_equal(nested, flat) and flat.shape == (2, 3)


def test_outputs_are_chosen_in_order_with_their_binary_flags() -> None:
    request = decode(body(tensor([[1, 2, 3]]),
                          outputs=[{"name": "scores", "parameters": {"binary_data": True}},
                                   {"name": "label"}]))
    assert request.outputs == (RequestedOutput("scores", True), RequestedOutput("label", False))


def test_binary_data_output_makes_every_output_binary_unless_one_says_otherwise() -> None:
    request = decode(body(tensor([[1, 2, 3]]), parameters={"binary_data_output": True},
                          outputs=[{"name": "label", "parameters": {"binary_data": False}},
                                   {"name": "scores"}]))
    assert request.outputs == (RequestedOutput("label", False), RequestedOutput("scores", True))
    everything = decode(body(tensor([[1, 2, 3]]), parameters={"binary_data_output": True}))
    assert all(output.binary for output in everything.outputs)


def test_headers_are_matched_case_insensitively() -> None:
    rows = np.ones((1, 3), dtype="<f4")
    raw, headers = binary_body({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                                            "parameters": {"binary_data_size": 12}}]},
                               rows.tobytes())
    request = decode(raw, headers={HEADER_LENGTH.lower(): headers[HEADER_LENGTH]})
    assert request.inputs["x"].tolist() == [[1, 1, 1]]


@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_round_trips_through_json(datatype: str) -> None:
    manifest = manifest_of(("x", datatype, (-1, 3)), outputs=[("y", datatype, (-1, 3))])
    request = decode(body(tensor(SAMPLES[datatype], datatype=datatype)), manifest)
    array = request.inputs["x"]
    assert array.dtype == NUMPY_DTYPES[datatype] and array.shape == (2, 3)
    answer = json.loads(encode_response(manifest, request, {"y": array}).body)
    (output,) = answer["outputs"]
    assert output["datatype"] == datatype and output["shape"] == [2, 3]
    # The answer's numbers read back as the same values of the datatype.
    expected = np.array(SAMPLES[datatype], dtype=NUMPY_DTYPES[datatype]).ravel()
    assert np.array_equal(np.array(output["data"], dtype=NUMPY_DTYPES[datatype]), expected)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_round_trips_through_binary_tensors(datatype: str) -> None:
    manifest = manifest_of(("x", datatype, (-1, 3)), outputs=[("y", datatype, (-1, 3))])
    array = np.array(SAMPLES[datatype], dtype=NUMPY_DTYPES[datatype])
    blob = encode_tensor(array, datatype)
    raw, headers = binary_body(
        {"inputs": [{"name": "x", "shape": [2, 3], "datatype": datatype,
                     "parameters": {"binary_data_size": len(blob)}}],
         "parameters": {"binary_data_output": True}}, blob)
    request = decode(raw, manifest, headers)
    assert np.array_equal(request.inputs["x"], array)
    result = encode_response(manifest, request, {"y": request.inputs["x"]})
    assert result.headers["Content-Type"] == "application/octet-stream"
    length = int(result.headers[HEADER_LENGTH])
    header = json.loads(result.body[:length])
    assert header["outputs"] == [{"name": "y", "datatype": datatype, "shape": [2, 3],
                                  "parameters": {"binary_data_size": len(blob)}}]
    assert result.body[length:] == blob


def test_two_binary_inputs_are_read_in_the_order_of_inputs() -> None:
    manifest = manifest_of(("a", "FP32", (-1, 2)), ("b", "INT8", (-1, 2)))
    a, b = np.array([[1.5, 2.5]], "<f4"), np.array([[-1, 1]], "i1")
    raw, headers = binary_body({"inputs": [
        {"name": "b", "shape": [1, 2], "datatype": "INT8", "parameters": {"binary_data_size": 2}},
        {"name": "a", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
    ]}, b.tobytes(), a.tobytes())
    request = decode(raw, manifest, headers)
    assert np.array_equal(request.inputs["a"], a) and np.array_equal(request.inputs["b"], b)


def test_json_and_binary_inputs_mix_in_one_request() -> None:
    manifest = manifest_of(("a", "FP32", (-1, 2)), ("b", "BYTES", (-1,)))
    raw, headers = binary_body({"inputs": [
        {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]},
        {"name": "b", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}},
    ]}, struct.pack("<I", 2) + b"hi")
    request = decode(raw, manifest, headers)
    assert request.inputs["b"].tolist() == ["hi"] and request.rows == 1


def test_fp32_answers_read_back_as_the_same_float32() -> None:
    values = np.array([0.1, 1 / 3, 3.4028235e38, 1.4e-45, -0.0], dtype=np.float32)
    manifest = manifest_of(("x", "FP32", (-1,)), outputs=[("y", "FP32", (-1,))])
    request = decode(body(tensor([0.0] * 5)), manifest)
    document = json.loads(encode_response(manifest, request, {"y": values}).body)
    assert np.array_equal(np.array(document["outputs"][0]["data"], dtype=np.float32), values)


def test_a_batch_record_answer_names_the_model_and_echoes_the_id() -> None:
    request = decode(body(tensor([[1, 2, 3]]), id="abc",
                          outputs=[{"name": "label", "parameters": {"binary_data": True}}]))
    result = encode_response(FEATURES, request, {"label": np.array([1], dtype=np.int64)},
                             limits=limits.BATCH_RECORD)
    # A batch record's answer always carries data inline: the batch runner writes it as JSON.
    assert result.headers == {"Content-Type": "application/json"}
    document = json.loads(result.body)
    assert document == {"model_name": "m", "model_version": "1", "id": "abc",
                        "outputs": [{"name": "label", "datatype": "INT64", "shape": [1],
                                     "data": [1]}]}


def test_a_json_answer_has_no_binary_header_and_an_id_even_when_none_was_sent() -> None:
    """KServe's response model requires `id`: "" here, the caller's id through the pipeline."""
    request = decode(body(tensor([[1, 2, 3]]), outputs=[{"name": "label"}]))
    result = encode_response(FEATURES, request, {"label": np.array([0], dtype=np.int64)})
    assert result.headers == {"Content-Type": "application/json"} and result.rows == 1
    assert json.loads(result.body) == {"model_name": "m", "model_version": "1", "id": "",
                                       "outputs": [{"name": "label", "datatype": "INT64",
                                                    "shape": [1], "data": [0]}]}


def test_a_nan_in_a_json_answer_is_refused_as_the_requests_doing_but_binary_carries_it() -> None:
    scores = {"scores": np.array([[np.inf, 1]], dtype=np.float32)}
    request = decode(body(tensor([[1, 2, 3]]), outputs=[{"name": "scores"}]))
    with pytest.raises(ModelAPIError) as caught:
        encode_response(FEATURES, request, scores)
    assert caught.value.status == 400 and "binary_data: true" in caught.value.message
    binary = decode(body(tensor([[1, 2, 3]]), parameters={"binary_data_output": True},
                         outputs=[{"name": "scores"}]))
    result = encode_response(FEATURES, binary, scores)
    tail = result.body[int(result.headers[HEADER_LENGTH]):]
    assert np.frombuffer(tail, dtype="<f4").tolist() == [np.inf, 1]


# --- validation errors ------------------------------------------------------------------------


def many(n: int) -> list[float]:
    return [0.0] * n


@pytest.mark.parametrize(("raw", "status", "fragment"), [
    (b"\xff{}", 400, "UTF-8"),
    (b"{not json", 400, "not valid JSON"),
    (b"", 400, "not valid JSON"),
    (b'{"inputs": [], "inputs": []}', 400, "'inputs' twice"),
    (b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [NaN, 1, 2]}]}',
     400, "NaN is not a JSON number"),
    (b"[1, 2]", 400, "JSON object"),
    (b"{}", 400, "missing 'inputs'"),
    (body(tensor([[1, 2, 3]]), extra=1, more=2), 400, "unknown field(s) 'extra', 'more'"),
    (body(tensor([[1, 2, 3]]), id=7), 400, "'id' must be a string"),
    (body(tensor([[1, 2, 3]]), parameters=[]), 400, "'parameters' must be an object"),
    (body(tensor([[1, 2, 3]]), parameters={"binary_data_output": "yes"}), 400, "true or false"),
    (json.dumps({"inputs": {}}).encode(), 400, "'inputs' must be a list"),
    (body(), 400, "missing input(s) 'x'"),
    (body(["x"]), 400, "inputs[0] must be an object"),
    (body({"name": "x", "shape": [1, 3]}), 400, "inputs[0] is missing 'datatype'"),
    (body(tensor([[1, 2, 3]], color="red")), 400, "unknown field(s) 'color'"),
    (body(tensor([[1, 2, 3]], name="z")), 400, "unknown input 'z'; model 'm' takes 'x' (FP32"),
    (body(tensor([[1, 2, 3]], name=3)), 400, "name must be a string"),
    (body(tensor([[1, 2, 3]]), tensor([[1, 2, 3]])), 400, "'x' appears twice"),
    (body(tensor([[1, 2, 3]], datatype="FP64")), 400,
     """input 'x' has datatype "FP64"; the model takes FP32"""),
    (body(tensor([[1, 2, 3]], datatype="FLOAT")), 400, "the model takes FP32"),
    (body(tensor([1, 2, 3], shape=[3])), 400, "the model takes [-1, 3]"),
    (body(tensor([[1, 2]])), 400, "shape [1, 2]"),
    (body(tensor([], shape=[0, 3])), 400, "-1: any positive size"),
    (body(tensor([[1, 2, 3]], shape=[-1, 3])), 400, "each dimension counts elements, at least 1"),
    (body(tensor([[1, 2, 3]], shape=[1, "3"])), 400, "shape must be a list of integers"),
    (body(tensor([[1, 2, 3]], shape=[True, 3])), 400, "shape must be a list of integers"),
    (body({**tensor([[1, 2, 3]]), "shape": None}), 400, "shape must be a list of integers"),
    (body(tensor("1,2,3", shape=[1, 3])), 400, "data must be a JSON array"),
    (body(tensor([1, 2, 3, 4], shape=[1, 3])), 400, "4 data elements but shape [1, 3] holds 3"),
    (body(tensor([[1, 2, 3], [4, 5]], shape=[2, 3])), 400, "nested exactly like shape [2, 3]"),
    (body(tensor([[1, 2, 3], 4, 5, 6], shape=[2, 3])), 400, "nested exactly like shape"),
    (body(tensor([[[1], [2], [3]]], shape=[1, 3])), 400, "nested exactly like shape"),
    (body(tensor([[1, 2, 3, 4, 5, 6]], shape=[2, 3])), 400, "nested exactly like shape"),
    (body(tensor([1, [2], 3], shape=[1, 3])), 400, "nested exactly like shape"),
    (body(tensor([[1, "2", 3]])), 400, "element 1 is the string \"2\"; FP32 takes numbers"),
    (body(tensor([[1, 2, True]])), 400, "element 2 is true; FP32 takes numbers"),
    (body(tensor([[1, None, 3]])), 400, "element 1 is null"),
    (body(tensor([[1, {}, 3]])), 400, "element 1 is an object"),
    (body(tensor([[1, 2, 1e39]])), 400, "element 2 is 1e+39; FP32 takes finite numbers"),
    (b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 1e400]}]}',
     400, "element 2 is inf"),
    (body(tensor([[1, 2, 3]]), outputs=[{"name": "nope"}]), 404,
     "unknown output 'nope'; model 'm' returns 'label', 'scores'"),
    (body(tensor([[1, 2, 3]]), outputs={"name": "label"}), 400, "'outputs' must be a list"),
    (body(tensor([[1, 2, 3]]), outputs=["label"]), 400, "outputs[0] must be an object"),
    (body(tensor([[1, 2, 3]]), outputs=[{"name": "label"}, {"name": "label"}]), 400,
     "asked for twice"),
    (body(tensor([[1, 2, 3]]), outputs=[{"name": "label", "binary": True}]), 400,
     "unknown field(s) 'binary'"),
    (body(tensor([[1, 2, 3]]), outputs=[{"name": "label", "parameters": {"classification": 2}}]),
     400, "classification extension is not supported"),
    (body(tensor([[1, 2, 3]]), outputs=[{"name": "label", "parameters": {"binary_data": 1}}]),
     400, "'binary_data' must be true or false"),
])
def test_invalid_requests_are_refused_with_what_to_fix(raw: bytes, status: int,
                                                       fragment: str) -> None:
    error = refused(raw)
    assert error.status == status
    assert fragment in error.message


@pytest.mark.parametrize(("datatype", "value", "fragment"), [
    ("UINT8", 256, "outside UINT8's range 0..255"),
    ("UINT8", -1, "outside UINT8's range"),
    ("INT8", -129, "outside INT8's range -128..127"),
    ("INT64", 2**63, "outside INT64's range"),
    ("UINT64", 2**64, "outside UINT64's range"),
    ("INT32", 1.5, "is 1.5; INT32 takes integers"),
    ("INT32", 2.0, "is 2.0; INT32 takes integers"),
    ("INT16", True, "is true; INT16 takes integers"),
    ("BOOL", 1, "is 1; BOOL takes true or false"),
    ("BOOL", "true", "BOOL takes true or false"),
    ("FP16", 70000, "FP16 takes finite numbers"),
    ("FP64", 10**400, "FP64 takes finite numbers"),
    ("FP64", "1.5", "FP64 takes numbers"),
    ("BYTES", 1, "is 1; BYTES elements are strings"),
    ("BYTES", None, "is null; BYTES elements are strings"),
    ("BYTES", ["a"], "is an array; BYTES elements are strings"),
])
def test_each_element_must_be_of_the_datatypes_kind(datatype: str, value: Any,
                                                     fragment: str) -> None:
    manifest = manifest_of(("x", datatype, (-1, 2)))
    good = SAMPLES[datatype][0][0]
    error = refused(body(tensor([[good, value]], shape=[1, 2], datatype=datatype)), manifest)
    assert error.status == 400 and fragment in error.message


def test_an_object_where_a_nested_array_belongs_is_a_400() -> None:
    """Nested data is flattened level by level before numpy sees it: an object inside the
    nesting (numpy raised a TypeError on it, a 500) is told as a nesting error."""
    manifest = manifest_of(("x", "FP32", (-1, 1, 1, 3)))
    error = refused(body(tensor([[{}]], shape=[1, 1, 1, 3])), manifest)
    assert error.status == 400 and "nested exactly like shape [1, 1, 1, 3]" in error.message
    # Errors keep their order: an element out of range before lists of the wrong lengths.
    error = refused(body(tensor([[1, 1e39]], shape=[1, 3])))
    assert "element 1 is 1e+39" in error.message


def test_a_lone_surrogate_is_not_a_string_the_model_can_take() -> None:
    manifest = manifest_of(("x", "BYTES", (-1,)))
    error = refused(b'{"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", '
                    b'"data": ["\\ud800"]}]}', manifest)
    assert error.status == 400 and "not valid Unicode" in error.message


def test_inputs_must_share_the_batch_dimension() -> None:
    manifest = manifest_of(("a", "FP32", (-1, 2)), ("b", "FP32", (-1, 2)))
    error = refused(body(tensor([[1, 2]], name="a"), tensor([[1, 2], [3, 4]], name="b")), manifest)
    assert error.status == 400 and "same batch" in error.message and "'b': 2" in error.message


def test_a_missing_input_is_named_with_the_signature() -> None:
    manifest = manifest_of(("a", "FP32", (-1, 2)), ("b", "INT64", (-1, 2)))
    error = refused(body(tensor([[1, 2]], name="a")), manifest)
    assert error.status == 400
    assert error.message == ("missing input(s) 'b'; model 'm' takes 'a' (FP32 [-1, 2]), "
                             "'b' (INT64 [-1, 2])")


# --- binary errors ----------------------------------------------------------------------------


def binary_input(size: Any, **fields: Any) -> dict[str, Any]:
    return {"name": "x", "shape": [1, 3], "datatype": "FP32",
            "parameters": {"binary_data_size": size}, **fields}


@pytest.mark.parametrize(("header", "tail", "fragment"), [
    ({"inputs": [binary_input(12)]}, b"\0" * 11, "only 11 bytes of binary data are left"),
    ({"inputs": [binary_input(12)]}, b"\0" * 13, "1 bytes after the JSON header belong to no"),
    ({"inputs": [binary_input(8)]}, b"\0" * 8, "binary_data_size 8, but shape [1, 3]"),
    ({"inputs": [binary_input(-1)]}, b"", "binary_data_size must be a byte count"),
    ({"inputs": [binary_input(True)]}, b"", "binary_data_size must be a byte count"),
    ({"inputs": [binary_input(12, data=[1, 2, 3])]}, b"\0" * 12, "both 'data' and"),
    ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32"}]}, b"", "neither 'data' nor"),
    ({"inputs": [binary_input(12)]}, np.array([1, np.inf, 2], "<f4").tobytes(), "NaN or infinite"),
])
def test_binary_requests_must_account_for_every_byte(header: dict[str, Any], tail: bytes,
                                                     fragment: str) -> None:
    raw, headers = binary_body(header, tail)
    error = refused(raw, headers=headers)
    assert error.status == 400 and fragment in error.message


def test_binary_data_without_the_header_length_is_refused() -> None:
    error = refused(body(binary_input(12)))
    assert error.status == 400 and HEADER_LENGTH in error.message


@pytest.mark.parametrize("length", ["abc", "-3", "999", "1" * 5000, "١٢"])
def test_a_bad_header_length_is_refused(length: str) -> None:
    error = refused(body(tensor([[1, 2, 3]])), headers={HEADER_LENGTH: length})
    assert error.status == 400 and HEADER_LENGTH in error.message


# --- limits: at the limit is served, over it is refused with the limit in the message ---------


def test_request_bytes_at_and_over_the_limit() -> None:
    text = body(tensor([[1, 2, 3]]))
    at_limit = text + b" " * (limits.MAX_REQUEST_BYTES - len(text))
    assert decode(at_limit).rows == 1
    error = refused(at_limit + b" ")
    assert error.status == 413 and str(limits.MAX_REQUEST_BYTES) in error.message


def test_rows_at_and_over_the_limit() -> None:
    manifest = manifest_of(("x", "UINT8", (-1,)))
    at_limit = [0] * limits.MAX_ROWS
    assert decode(body(tensor(at_limit, datatype="UINT8")), manifest).rows == limits.MAX_ROWS
    error = refused(body(tensor([*at_limit, 0], datatype="UINT8")), manifest)
    assert error.status == 413 and f"limit is {limits.MAX_ROWS} rows" in error.message


def test_tensor_elements_at_and_over_the_limit() -> None:
    columns = limits.MAX_TENSOR_ELEMENTS // 1024
    manifest = manifest_of(("x", "UINT8", (-1, columns)))
    array = np.zeros((1024, columns), dtype=np.uint8)
    raw, headers = binary_body({"inputs": [{"name": "x", "shape": [1024, columns],
                                            "datatype": "UINT8",
                                            "parameters": {"binary_data_size": array.size}}]},
                               array.tobytes())
    assert decode(raw, manifest, headers).inputs["x"].shape == (1024, columns)
    over, _ = binary_body({"inputs": [{"name": "x", "shape": [1025, columns],
                                       "datatype": "UINT8", "data": []}]})
    error = refused(over, manifest)
    assert error.status == 413 and str(limits.MAX_TENSOR_ELEMENTS) in error.message


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_bytes_elements_at_and_over_the_limit(binary: bool) -> None:
    manifest = manifest_of(("x", "BYTES", (-1,)))

    def request(text: str) -> tuple[bytes, dict[str, str]]:
        if not binary:
            return body(tensor([text], datatype="BYTES")), {}
        blob = encode_tensor(np.array([text], dtype=object), "BYTES")
        return binary_body({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES",
                                        "parameters": {"binary_data_size": len(blob)}}]}, blob)

    # "é" is two bytes in UTF-8: the limit counts bytes, not characters.
    at_limit = "é" * (limits.MAX_BYTES_ELEMENT // 2)
    assert decode(*request(at_limit)[:1], manifest, request(at_limit)[1]).inputs["x"][0] == at_limit
    error = refused(*request(at_limit + "a")[:1], manifest, request(at_limit + "a")[1])
    assert error.status == 413 and str(limits.MAX_BYTES_ELEMENT) in error.message


def nested(depth: int) -> bytes:
    """A request whose JSON nests `depth` levels (request + inputs list + input + data)."""
    data = "[" * (depth - 3) + "1" + "]" * (depth - 3)
    return ('{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": '
            + data + "}]}").encode()


def test_json_depth_at_and_over_the_limit() -> None:
    manifest = manifest_of(("x", "FP32", (-1,)))
    assert json_depth(nested(limits.MAX_JSON_DEPTH)) == limits.MAX_JSON_DEPTH
    # At the limit the document is parsed (and then refused for its nesting, not its depth).
    assert "nested exactly like" in refused(nested(limits.MAX_JSON_DEPTH), manifest).message
    error = refused(nested(limits.MAX_JSON_DEPTH + 1), manifest)
    assert error.status == 400 and f"the limit is {limits.MAX_JSON_DEPTH}" in error.message


def test_hostile_nesting_is_refused_before_parsing() -> None:
    error = refused(b"[" * 1_000_000)
    assert error.status == 400 and "1000000 levels deep" in error.message


def test_an_integer_of_more_digits_than_python_converts_is_a_400_in_the_clients_terms() -> None:
    error = refused(body(tensor([0.5])).replace(b"0.5", b"9" * 5000))
    assert error.status == 400 and f"{sys.get_int_max_str_digits()} digits" in error.message
    assert "sys." not in error.message


@pytest.mark.parametrize("tail", [b'"' + b'\\"' * 1_000_000, b'"' * 2_000_000,
                                  b'"a\\' * 1_000_000])
def test_unterminated_strings_cannot_make_the_depth_scan_slow(tail: bytes) -> None:
    started = time.perf_counter()
    error = refused(b"[" * 40 + tail)
    assert error.status == 400 and "40 levels deep" in error.message
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize(("text", "depth"), [
    (b"{}", 1), (b"1", 0), (b'{"a": [1, {"b": []}]}', 4),
    (b'{"a": "[[[[{{{{", "b": ["]]]]"]}', 2),
    (b'{"a": "\\"[[[", "b": "\\\\", "c": [[]]}', 3),
    (b'{"a\\n[": "\\u005b\\t[", "b": [1]}', 2),
])
def test_json_depth_ignores_brackets_inside_strings(text: bytes, depth: int) -> None:
    assert json.loads(text) is not None
    assert json_depth(text) == depth


def test_an_answer_over_the_response_limit_is_refused() -> None:
    manifest = manifest_of(("x", "UINT8", (-1,)), outputs=[("y", "FP64", (-1,))])
    rows = limits.MAX_RESPONSE_BYTES // 8
    request = InferRequest(None, {}, (RequestedOutput("y", True),), {}, rows)
    with pytest.raises(ModelAPIError) as caught:
        encode_response(manifest, request, {"y": np.zeros(rows + 1)})
    assert caught.value.status == 413 and str(limits.MAX_RESPONSE_BYTES) in caught.value.message


@pytest.mark.parametrize("raw", [
    json.dumps({"inputs": [], **{f"k{i}": 0 for i in range(100_000)}}).encode(),
    b'{"inputs": [], ' + b", ".join(b'"k%d": 0' % i for i in range(100_000)) + b', "k1": 1}',
    body(tensor([[1, 2, 3]], name="z" * 1_000_000)),
    body(tensor([[1, 2, 3]], shape=[1] * 100_000)),
])
def test_hostile_requests_get_a_short_message_quickly(raw: bytes) -> None:
    started = time.perf_counter()
    error = refused(raw)
    assert error.status == 400 and len(error.message) < 1000
    assert time.perf_counter() - started < 1


# --- properties -------------------------------------------------------------------------------

NUMERIC = [datatype for datatype in DATATYPES if datatype != "BYTES"]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), datatype=st.sampled_from(NUMERIC), binary=st.booleans())
def test_any_answer_read_back_as_a_request_gives_the_same_tensor(data: st.DataObject,
                                                                 datatype: str,
                                                                 binary: bool) -> None:
    # Given any finite tensor of the datatype, answered as JSON or binary
    dtype = NUMPY_DTYPES[datatype]
    array = data.draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=3, max_side=4),
                                 elements=hnp.from_dtype(dtype, allow_nan=False,
                                                         allow_infinity=False)))
    shape = (-1,) * array.ndim
    manifest = manifest_of(("x", datatype, shape), outputs=[("x", datatype, shape)])
    request = InferRequest(None, {}, (RequestedOutput("x", binary),), {}, array.shape[0])
    result = encode_response(manifest, request, {"x": array})
    # When the answer is sent back as a request
    if binary:
        length = int(result.headers[HEADER_LENGTH])
        outputs = json.loads(result.body[:length])["outputs"]
        raw, headers = binary_body({"inputs": outputs}, result.body[length:])
    else:
        raw, headers = body(*json.loads(result.body)["outputs"]), {}
    # Then it decodes to the very same values
    decoded = decode(raw, manifest, headers).inputs["x"]
    assert decoded.dtype == dtype and decoded.shape == array.shape
    assert np.array_equal(decoded, array)


# --- raw binary requests (Inference-Header-Content-Length 0): the body is the one input -----

RAW = {HEADER_LENGTH: "0"}


@pytest.mark.parametrize("rows", [1, 4])
def test_a_raw_binary_request_is_the_one_input_its_rows_deduced_from_its_size(rows: int) -> None:
    values = np.arange(rows * 3, dtype="<f4").reshape(rows, 3)
    request = decode(values.tobytes(), headers=RAW)
    assert request.inputs["x"].shape == (rows, 3) and request.rows == rows
    assert np.array_equal(request.inputs["x"], values) and request.id is None
    # Triton answers every output of a raw binary request as binary tensor data
    assert request.outputs == (RequestedOutput("label", True), RequestedOutput("scores", True))


@pytest.mark.parametrize("datatype", DATATYPES)
def test_a_raw_binary_request_of_every_datatype(datatype: str) -> None:
    manifest = manifest_of(("x", datatype, (-1, 3)), outputs=[("y", "FP32", (-1,))])
    array = decode(body(tensor(SAMPLES[datatype], datatype=datatype)), manifest).inputs["x"]
    if datatype == "BYTES":  # one element: the body is its UTF-8 bytes
        manifest = manifest_of(("x", datatype, (-1, 1)), outputs=[("y", "FP32", (-1,))])
        request = decode("naïve ☃".encode(), manifest, RAW)
        assert request.inputs["x"].tolist() == [["naïve ☃"]]
        return
    request = decode(encode_tensor(array, datatype), manifest, RAW)
    assert np.array_equal(request.inputs["x"], array) and request.inputs["x"].shape == (2, 3)


@pytest.mark.parametrize(("spec", "raw", "fragment"), [
    (("x", "FP32", (-1, 3)), b"\0" * 13, "positive multiple of 12 bytes"),
    (("x", "FP32", (-1, 3)), b"", "positive multiple of 12 bytes"),
    (("x", "FP32", (2, 3)), b"\0" * 12, "takes 24 bytes"),
    (("x", "FP32", (-1, -1)), b"\0" * 12, "2 variable dimensions"),
    (("x", "BYTES", (-1, 2)), b"ab", "carries one element"),
    (("x", "BYTES", (-1, 1)), b"\xff", "not valid UTF-8"),
    (("x", "BOOL", (-1, 3)), b"\x00\x01\x02", "byte 0 or 1"),
    (("x", "FP32", (-1, 1)), np.array([np.nan], "<f4").tobytes(), "NaN or infinite"),
])
def test_a_raw_binary_request_that_does_not_fit_is_refused(spec: Any, raw: bytes,
                                                           fragment: str) -> None:
    error = refused(raw, manifest_of(spec, outputs=[("y", "FP32", (-1,))]), RAW)
    assert error.status == 400 and fragment in error.message


def test_a_raw_binary_request_needs_a_model_with_one_input_and_the_api_path() -> None:
    two = manifest_of(("a", "FP32", (-1, 1)), ("b", "FP32", (-1, 1)),
                      outputs=[("y", "FP32", (-1,))])
    error = refused(b"\0" * 4, two, RAW)
    assert error.status == 400 and "one input" in error.message and "'a'" in error.message
    with pytest.raises(ModelAPIError) as caught:
        decode_request(b"\0" * 12, RAW, FEATURES, limits.BATCH_RECORD)
    assert caught.value.status == 400 and "no raw binary request" in caught.value.message


def test_a_raw_binary_request_meets_the_row_limit() -> None:
    over = np.zeros((limits.API_REQUEST.max_rows + 1, 1), dtype="<f4").tobytes()
    manifest = manifest_of(("x", "FP32", (-1, 1)), outputs=[("y", "FP32", (-1,))])
    assert refused(over, manifest, RAW).status == 413


# --- parameters: the protocol allows bool, number and string values only -------------------


@pytest.mark.parametrize("value", [{"a": 1}, [1, 2], None])
@pytest.mark.parametrize("where", ["request", "input", "output"])
def test_a_parameter_that_is_an_object_an_array_or_null_is_refused(value: Any,
                                                                   where: str) -> None:
    parameters = {"fine": 1, "odd": value}
    if where == "request":
        raw = body(tensor([[1, 2, 3]]), parameters=parameters)
    elif where == "input":
        raw = body(tensor([[1, 2, 3]], parameters=parameters))
    else:
        raw = body(tensor([[1, 2, 3]]), outputs=[{"name": "label", "parameters": parameters}])
    error = refused(raw)
    assert error.status == 400 and "'odd'" in error.message
    assert "bool, a number or a string" in error.message


def test_bool_number_and_string_parameters_are_kept() -> None:
    parameters = {"b": True, "i": -3, "f": 0.5, "s": "x", "explain": False}
    assert decode(body(tensor([[1, 2, 3]]), parameters=parameters)).parameters == parameters


# parse_json reads with orjson and checks its keys against the text's skeleton; any document
# the two readers could see differently goes to the standard library's strict parse.
@pytest.mark.parametrize("text", [
    b'{"inputs": [{"name": "x", "data": [1, 2.5, -0.0, 1e-7]}], "parameters": {"a": {"b": []}}}',
    b'{"p": [[1, {"hidden": 1}], 3]}',            # an object inside a list of numbers
    b'{"p": [1, 2, {"k": 1, "k2": {"x": ":"}}]}',  # colons and braces inside strings
    b'[{"a": 1}, {"b": "{\\"c\\": 1}"}]',
    b'{"big": 18446744073709551615, "neg": -9223372036854775808}',
    b'{}', b'[]', b'"just a string"', b'3',
])
def test_parse_json_reads_what_the_standard_library_reads(text: bytes) -> None:
    assert parse_json(text) == json.loads(text)


@pytest.mark.parametrize("text", [
    b'{"p": [1, 2, {"k": 1, "k": 2}]}',           # behind a list of numbers
    b'{"inputs": [{"name": "x", "name": "y"}]}',
    b'{"a": {"b": {"c": 1, "c": 1}}}',
])
def test_a_repeated_key_anywhere_is_refused_by_name(text: bytes) -> None:
    with pytest.raises(ModelAPIError, match="twice in one object"):
        parse_json(text)


JSON_VALUES = st.recursive(
    # Integers beyond 64 bits orjson reads as floats: the codec tells them as out of range.
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=30)


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES)
def test_parse_json_agrees_with_the_standard_library_on_any_document(value: Any) -> None:
    text = json.dumps(value).encode()
    if json_depth(text) <= limits.MAX_JSON_DEPTH:
        assert parse_json(text) == json.loads(text)
