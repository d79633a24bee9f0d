"""model_api.examples: example inputs for any signature, checked, and the requests they make."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from model_api import examples
from model_api.codec import decode_request
from model_api.datatypes import DATATYPES
from model_api.manifest import Manifest, TensorSpec

SPECS = tuple(TensorSpec(f"in_{d.lower()}", d, (-1, 2, -1)) for d in DATATYPES)
MANIFEST = Manifest("every-type", "1", "onnxruntime_onnx", "model.onnx", "0" * 64, SPECS,
                    (TensorSpec("y", "FP32", (-1,)),))


def test_every_datatype_gets_rows_the_codec_reads_back_as_json_and_binary() -> None:
    built = examples.from_signature(SPECS, rows=3)
    assert {name: array.shape for name, array in built.items()} == {
        spec.name: (3, 2, 1) for spec in SPECS}
    binary, header_length = examples.binary_request(MANIFEST, built)
    for body, headers in [(examples.json_request(MANIFEST, built), {}),
                          (binary, {"Inference-Header-Content-Length": str(header_length)})]:
        request = decode_request(body, headers, MANIFEST)
        for spec in SPECS:
            np.testing.assert_array_equal(request.inputs[spec.name], built[spec.name])


def test_examples_that_do_not_fit_are_refused_with_the_reason() -> None:
    spec = (TensorSpec("x", "FP32", (-1, 3)),)
    with pytest.raises(examples.ExamplesError, match="give inputs"):
        examples.check({"y": np.zeros((1, 3))}, spec)
    with pytest.raises(examples.ExamplesError, match=r"shape \[1, 4\]"):
        examples.check({"x": np.zeros((1, 4))}, spec)
    with pytest.raises(examples.ExamplesError, match="not FP32"):
        examples.check({"x": np.array([["a", "b", "c"]])}, spec)
    two = (TensorSpec("a", "INT8", (-1,)), TensorSpec("b", "INT8", (-1,)))
    with pytest.raises(examples.ExamplesError, match="same number of rows"):
        examples.check({"a": np.zeros(2), "b": np.zeros(3)}, two)


def test_written_examples_load_back_in_their_dtypes_with_short_floats(tmp_path: Path) -> None:
    values = {"in_fp32": np.array([[[17.99], [0.1]]], np.float32)}
    spec = (TensorSpec("in_fp32", "FP32", (-1, 2, 1)),)
    manifest = Manifest("m", "1", "p", "model.onnx", "0" * 64, spec, spec)
    examples.write(tmp_path, values)
    assert json.loads((tmp_path / examples.EXAMPLES_FILE).read_text()) == {
        "inputs": {"in_fp32": [[[17.99], [0.1]]]}}
    loaded = examples.load(tmp_path, manifest)
    assert loaded["in_fp32"].dtype == np.float32
    np.testing.assert_array_equal(loaded["in_fp32"], values["in_fp32"])
