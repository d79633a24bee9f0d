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
    """Elements of a datatype up to `magnitude`, its extremes drawn often (where bugs live)."""
    if datatype == "BYTES":
        return st.text(max_size=40)
    return st.one_of(st.floats(-magnitude, magnitude, allow_nan=False, width=32),
                     st.sampled_from([magnitude, -magnitude]))


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
            blob = (b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
                    if spec["datatype"] == "BYTES" else np.asarray(values, "<f4").tobytes())
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


def test_the_models_take_fp32_or_bytes() -> None:
    """well_formed packs binary tensors as FP32 or BYTES: a model of another datatype needs it
    extended first."""
    datatypes = {spec["datatype"] for m in exported_manifests() for spec in m["inputs"]}
    assert datatypes <= {"FP32", "BYTES"}


@pytest.mark.parametrize("route", ["infer", "explain"])
@pytest.mark.parametrize("manifest", exported_manifests(), ids=lambda manifest: manifest["name"])
def test_well_formed_requests_of_ordinary_values_are_served(
        local_api: httpx.Client, manifest: dict[str, Any], route: str) -> None:
    @FUZZ
    @given(request=well_formed(manifest, magnitude=1e4, max_rows=ROWS[route]))
    def fuzz(request: tuple[bytes, dict[str, str], int]) -> None:
        body, headers, rows = request
        response = local_api.post(f"/v2/models/{manifest['name']}/{route}", content=body,
                                  headers=headers)
        assert response.status_code == 200, response.text[:300]
        length = int(response.headers.get("Inference-Header-Content-Length", len(response.content)))
        answer = json.loads(response.content[:length])
        assert all(output["shape"][0] == rows for output in answer["outputs"]), answer

    fuzz()


@pytest.mark.parametrize("manifest", [m for m in exported_manifests()
                                      if all(s["datatype"] == "FP32" for s in m["inputs"])],
                         ids=lambda manifest: manifest["name"])
@pytest.mark.parametrize("route", ["infer", "explain"])
def test_well_formed_requests_of_extreme_values_get_no_server_error(
        local_api: httpx.Client, manifest: dict[str, Any], route: str) -> None:
    """FP32's largest finite values drive outputs to inf or NaN: the client's doing, a 400."""
    @FUZZ
    @given(request=well_formed(manifest, magnitude=float(np.finfo(np.float32).max),
                               max_rows=ROWS[route]))
    def fuzz(request: tuple[bytes, dict[str, str], int]) -> None:
        body, headers, _ = request
        response = local_api.post(f"/v2/models/{manifest['name']}/{route}", content=body,
                                  headers=headers)
        check_answer(response.status_code, response.content, manifest["name"])

    fuzz()
