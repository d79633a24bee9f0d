"""The batch runner serves a large model from the model store (issue 21): the same object and
sha256 check as its API function's, through boto3's ranged GETs on the shared moto server,
instead of a copy baked into its image; a changed object fails the job's attempt for good."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from model_api.aws.model_store import BUCKET_VARIABLE

from batch.failures import PermanentError
from batch.jobs_api import invoked_readiness
from batch.loading import load_model
from tests.batch.conftest import MODEL, Cloud, expected
from tests.conftest import catalog_of


def store_backed(models_dir: Path, target: Path, cloud: Cloud) -> Path:
    """The tiny model's version 1 as a layer (or the image) holds a store-backed version: its
    manifest names the object, its file is in the store, not in the folder."""
    folder = target / MODEL / "1"
    shutil.copytree(models_dir / MODEL / "1", folder)
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").unlink()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["store"] = {"key": f"models/{MODEL}/1/model.onnx", "bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    cloud.put(manifest["store"]["key"], data)
    return target


def test_the_runner_loads_a_stored_version_from_the_store(
        tmp_path: Path, models_dir: Path, cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    image = store_backed(models_dir, tmp_path / "opt-models", cloud)
    monkeypatch.setenv(BUCKET_VARIABLE, cloud.bucket)
    loaded = load_model(image, MODEL, "1", None, use_gpu=False, require_gpu=False)
    rows = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    labels, probabilities = expected(rows)
    got = loaded.run({"features": rows}, ["label", "probabilities"])
    np.testing.assert_array_equal(got["label"], labels)
    np.testing.assert_allclose(got["probabilities"], probabilities, rtol=1e-6)

    # A changed object is never run: the attempt fails for good, saying why
    cloud.put(f"models/{MODEL}/1/model.onnx", b"\0" * 10 + (models_dir / MODEL / "1" /
                                                             "model.onnx").read_bytes()[10:])
    with pytest.raises(PermanentError, match="sha256"):
        load_model(image, MODEL, "1", None, use_gpu=False, require_gpu=False)


def ready_route_answer(status: int, headers: dict[str, str], error: str | None) -> dict:
    """A model function's API Gateway answer to its version's ready route."""
    body = {"ready": True} if error is None else {"error": error}
    return {"statusCode": status, "headers": {"Content-Type": "application/json", **headers},
            "body": json.dumps(body)}


def test_a_job_waits_for_no_large_model_its_function_is_still_loading() -> None:
    """The jobs API refuses a job of a version that could only fail (its function 503s: a
    sha256 mismatch), but not one whose function is still loading it from the store (503 +
    Retry-After, model_api.errors.Loading): the runner loads its own copy from the same store."""
    answers = {
        "loading": ready_route_answer(503, {"Retry-After": "5"},
                                      f"model {MODEL!r} version '1' is loading (40 %)"),
        "broken": ready_route_answer(503, {}, "sha256 of model.onnx does not match"),
        "ready": ready_route_answer(200, {}, None)}
    for state, answer in answers.items():
        ready = invoked_readiness(catalog_of(MODEL), invoke=lambda _name, _event, a=answer: a)
        why = ready(MODEL, "1")
        assert (why is None) == (state != "broken"), (state, why)
    assert "sha256" in str(invoked_readiness(
        catalog_of(MODEL), invoke=lambda *_: answers["broken"])(MODEL, "1"))
