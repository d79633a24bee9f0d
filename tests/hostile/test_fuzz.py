"""Property-based fuzzing of the local API over real HTTP: no request gets a 5xx, and every
refusal is the protocol's {"error": ...}. Deterministic (derandomized, no example database), so
CI sees the same requests every run, and bounded by example counts (see docs/security.md for
how many and how long).

Two sources of requests:
- schemathesis, from docs/openapi.json: every operation, with data that fits the schema and
  data that breaks it (wrong types, missing fields, odd paths, headers and bodies); each answer
  must also be one the document describes (status, content type, schema);
- a hypothesis strategy of well-formed tensors for each model (JSON or binary, any rows and
  outputs), which reaches past validation into the models: ordinary values must be served,
  extreme ones (outputs overflowing to NaN/inf) refused with a 4xx, never a 5xx.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_api.binary import decode_tensor
from model_api.datatypes import BY_NAME, DATATYPES, LENGTH_PREFIXED, NUMPY_DTYPES
from model_api.limits import MAX_ROWS
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from batch.keys import JOB_ID
from tests.conftest import ROOT, exported_manifests

SCHEMA = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.json")
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
EXAMPLES = 40  # per operation and per model
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                suppress_health_check=list(HealthCheck))
# Answers must be documented: a 5xx never is, and 4xx only those the operation lists.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# Elements a generated tensor holds at most (rows shrink for wide inputs), so that drawing
# them stays cheap: the limits themselves are test_hostile_requests' business.
MAX_ELEMENTS = 512
# Rows per request: an explained row costs hundreds of model rows, so explain requests stay
# small here (MAX_EXPLAIN_ROWS itself is test_hostile_requests' business).
ROWS = {"infer": MAX_ROWS, "explain": 4}


def check_answer(status: int, content: bytes, what: str) -> None:
    """No 5xx; a refusal is exactly {"error": <non-empty str>}."""
    assert status < 500, f"{what}: {status} {content[:300]!r}"
    if status >= 400:
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        assert isinstance(body, dict) and set(body) == {"error"} and isinstance(
            body["error"], str) and body["error"], f"{what}: {status} {content[:300]!r}"


def served_locally(case: Any) -> bool:
    """Leave out well-formed batch job ids: the jobs handler looks those up in DynamoDB, which
    the local API does not have (tests/functions/test_batch_jobs_handler.py covers them over
    moto); every other id, control characters and newlines included, is fuzzed."""
    job_id = (case.path_parameters or {}).get("job_id")
    return not (isinstance(job_id, str) and JOB_ID.fullmatch(job_id))


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_schema_fuzzing_gets_no_server_error(local_api: httpx.Client, operation: Any) -> None:
    strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                         operation.as_strategy(GenerationMode.NEGATIVE)).filter(served_locally)
    base_url = str(local_api.base_url)

    @FUZZ
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        response = case.call(base_url=base_url, timeout=60)
        what = (f"{case.method} {case.formatted_path} headers={case.headers} "
                f"body={str(case.body)[:200]}")
        check_answer(response.status_code, response.content, what)
        case.validate_response(response, checks=CHECKS)

    fuzz()
    assert local_api.get("/v2/health/live").status_code == 200


# --- well-formed tensors -----------------------------------------------------------------------

def elements(datatype: str, magnitude: float) -> st.SearchStrategy[Any]:
    """Valid elements of a datatype (its row in model_api.datatypes: booleans for BOOL,
    integers within the dtype's range, finite floats of its width, text), numbers up to
    `magnitude`, their extremes drawn often (where bugs live)."""
    row = BY_NAME[datatype]
    if row.kind == "string":
        return st.text(max_size=40)
    if row.kind == "bool":
        return st.booleans()
    if row.kind == "integer":
        info = np.iinfo(row.dtype)
        low, high = max(int(info.min), -int(magnitude)), min(int(info.max), int(magnitude))
        return st.one_of(st.integers(low, high), st.sampled_from([low, high]))
    largest = min(magnitude, float(np.finfo(row.dtype).max))
    return st.one_of(st.floats(-largest, largest, allow_nan=False,
                               width=8 * row.dtype.itemsize),
                     st.sampled_from([largest, -largest]))


def packed(datatype: str, values: list[Any]) -> bytes:
    """`values` as binary tensor data (little-endian fixed width; BYTES length-prefixed)."""
    row = BY_NAME[datatype]
    if row.wire == LENGTH_PREFIXED:
        return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
    return np.asarray(values, row.dtype).tobytes()


def route_of(manifest: dict[str, Any], route: str) -> str:
    """The path of `route` for exactly the manifest's version (current or not)."""
    return f"/v2/models/{manifest['name']}/versions/{manifest['version']}/{route}"


def explains(manifest: dict[str, Any]) -> bool:
    return manifest.get("explanation", {}).get("method", "none") != "none"


@st.composite
def well_formed(draw: Callable[..., Any], manifest: dict[str, Any], magnitude: float,
                max_rows: int = MAX_ROWS) -> tuple[bytes, dict[str, str], int]:
    """(body, headers, rows) of a request that fits `manifest`, JSON or binary tensors."""
    row_size = max(int(np.prod(spec["shape"][1:])) for spec in manifest["inputs"])
    rows = draw(st.integers(1, min(max_rows, max(1, MAX_ELEMENTS // row_size))))
    binary = draw(st.booleans())
    header: dict[str, Any] = {"id": draw(st.text(max_size=10)), "inputs": []}
    blobs = []
    for spec in manifest["inputs"]:
        shape = [rows, *spec["shape"][1:]]
        size = int(np.prod(shape))
        values = draw(st.lists(elements(spec["datatype"], magnitude),
                               min_size=size, max_size=size))
        tensor: dict[str, Any] = {"name": spec["name"], "shape": shape,
                                  "datatype": spec["datatype"]}
        if binary:
            blob = packed(spec["datatype"], values)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = values
        header["inputs"].append(tensor)
    names = [o["name"] for o in manifest["outputs"]]
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    header["outputs"] = [{"name": n, "parameters": {"binary_data": draw(st.booleans())}}
                         for n in chosen]
    head = json.dumps(header).encode()
    if not binary:
        return head, {"Content-Type": "application/json"}, rows
    return head + b"".join(blobs), {"Content-Type": "application/octet-stream",
                                    "Inference-Header-Content-Length": str(len(head))}, rows


@pytest.mark.parametrize("datatype", DATATYPES)
def test_the_generator_packs_every_datatype_as_the_codec_reads_it(datatype: str) -> None:
    """well_formed draws valid elements of any datatype a model may take (an added model's
    FP16, BOOL, UINT64 ...) and packs them as binary tensor data the serving codec reads."""
    manifest = {"inputs": [{"name": "x", "datatype": datatype, "shape": [-1, 3]}],
                "outputs": [{"name": "y"}]}

    @FUZZ
    @given(request=well_formed(manifest, magnitude=1e4))
    def fuzz(request: tuple[bytes, dict[str, str], int]) -> None:
        body, headers, rows = request
        length = int(headers.get("Inference-Header-Content-Length", len(body)))
        (tensor,) = json.loads(body[:length])["inputs"]
        if "data" in tensor:
            array = np.asarray(tensor["data"], NUMPY_DTYPES[datatype])
        else:
            array = decode_tensor("x", datatype, (rows, 3), body[length:])
        assert array.shape in ((rows, 3), (rows * 3,)) and array.size == rows * 3

    fuzz()


def served(route: str, manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every exported version, for `route` (explain: the versions that explain)."""
    return [m for m in manifests if route == "infer" or explains(m)]


def version_id(manifest: dict[str, Any]) -> str:
    return f"{manifest['name']}-{manifest['version']}"


@pytest.mark.parametrize(("route", "manifest"), [
    (route, m) for route in ("infer", "explain") for m in served(route, exported_manifests())],
    ids=lambda value: version_id(value) if isinstance(value, dict) else value)
def test_well_formed_requests_of_ordinary_values_are_served(
        local_api: httpx.Client, manifest: dict[str, Any], route: str) -> None:
    @FUZZ
    @given(request=well_formed(manifest, magnitude=1e4, max_rows=ROWS[route]))
    def fuzz(request: tuple[bytes, dict[str, str], int]) -> None:
        body, headers, rows = request
        response = local_api.post(route_of(manifest, route), content=body, headers=headers)
        assert response.status_code == 200, response.text[:300]
        length = int(response.headers.get("Inference-Header-Content-Length", len(response.content)))
        answer = json.loads(response.content[:length])
        assert all(output["shape"][0] == rows for output in answer["outputs"]), answer

    fuzz()


@pytest.mark.parametrize(("route", "manifest"), [
    (route, m) for route in ("infer", "explain") for m in served(route, exported_manifests())
    if all(s["datatype"] == "FP32" for s in m["inputs"])],
    ids=lambda value: version_id(value) if isinstance(value, dict) else value)
def test_well_formed_requests_of_extreme_values_get_no_server_error(
        local_api: httpx.Client, manifest: dict[str, Any], route: str) -> None:
    """FP32's largest finite values drive outputs to inf or NaN: the client's doing, a 400."""
    @FUZZ
    @given(request=well_formed(manifest, magnitude=float(np.finfo(np.float32).max),
                               max_rows=ROWS[route]))
    def fuzz(request: tuple[bytes, dict[str, str], int]) -> None:
        body, headers, _ = request
        response = local_api.post(route_of(manifest, route), content=body, headers=headers)
        check_answer(response.status_code, response.content, manifest["name"])

    fuzz()
