"""InferenceService: every version folder served, failures kept as 503, unknown names as 404."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from model_api import __version__, server
from model_api.binary import HEADER_LENGTH
from model_api.errors import ModelAPIError
from model_api.service import InferenceService

from tests.unit.tiny_models import add_version, identity_version

REQUEST = json.dumps({"id": "r", "inputs": [
    {"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]},
    {"name": "b", "shape": [2, 2], "datatype": "FP32", "data": [1, 1, 1, 1]},
]}).encode()


def environment(models: Path, name: str | None = "add",
                version: str | None = "1") -> dict[str, str]:
    values = {"MODELS_DIR": str(models), "MODEL_NAME": name, "MODEL_VERSION": version}
    return {key: value for key, value in values.items() if value is not None}


def status_of(call: Callable[..., object], *args: object) -> tuple[int, str]:
    with pytest.raises(ModelAPIError) as caught:
        call(*args)
    return caught.value.status, caught.value.message


@pytest.fixture
def two_versions(tmp_path: Path) -> InferenceService:
    add_version(tmp_path / "add" / "1", labels=["neg", "pos"])
    add_version(tmp_path / "add" / "10")
    add_version(tmp_path / "add" / "2")
    return InferenceService.from_environment(environment(tmp_path, version="2"))


def test_the_server_function_serves_the_server_routes(tmp_path: Path) -> None:
    service = InferenceService.from_environment({"MODELS_DIR": str(tmp_path)})
    assert server.server_metadata() == {"name": "serverless-model-api", "version": __version__,
                                        "extensions": ["binary_tensor_data", "model_repository"]}
    assert server.live() == {"live": True} and service.ready() == {"ready": True}
    assert status_of(service.model_metadata, "add") == (
        404, "unknown model 'add'; this endpoint serves no model (server routes only)")


def test_every_version_folder_is_served_and_unversioned_routes_go_to_the_current(
        two_versions: InferenceService) -> None:
    metadata = two_versions.model_metadata("add")
    examples = metadata.pop("parameters")["examples"]
    assert metadata == {
        "name": "add", "versions": ["1", "2", "10"], "platform": "onnxruntime_onnx",
        "inputs": [{"name": "a", "datatype": "FP32", "shape": [-1, 2]},
                   {"name": "b", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "sum", "datatype": "FP32", "shape": [-1, 2]},
                    {"name": "copy", "datatype": "FP32", "shape": [-1, 2]}],
    }
    # No examples.json: the examples are built from the signature (model_api.examples)
    assert examples == {"inputs": {"a": [[0.0, 1.0], [2.0, 3.0]], "b": [[0.0, 1.0], [2.0, 3.0]]}}
    assert two_versions.model_metadata("add", "1")["parameters"] == {
        "labels": ["neg", "pos"], "examples": examples}
    assert two_versions.model_ready("add") == {"name": "add", "ready": True}
    assert two_versions.model_ready("add", "10") == {"name": "add", "ready": True}
    assert two_versions.ready() == {"ready": True}
    result = two_versions.infer("add", None, REQUEST, {})
    document = json.loads(result.body)
    assert document["model_version"] == "2" and document["id"] == "r" and result.rows == 2
    assert document["outputs"][0] == {"name": "sum", "datatype": "FP32", "shape": [2, 2],
                                      "data": [2, 3, 4, 5]}
    assert json.loads(two_versions.infer("add", "10", REQUEST, {}).body)["model_version"] == "10"


def test_unknown_models_and_versions_are_404_naming_what_is_served(
        two_versions: InferenceService) -> None:
    assert status_of(two_versions.infer, "nope", None, REQUEST, {}) == (
        404, "unknown model 'nope'; this endpoint serves 'add'")
    assert status_of(two_versions.model_ready, "add", "3") == (
        404, "model 'add' has no version '3'; versions: '1', '2', '10'")


def test_a_binary_answer_carries_its_header_length(two_versions: InferenceService) -> None:
    body = json.loads(REQUEST)
    body["outputs"] = [{"name": "copy", "parameters": {"binary_data": True}}]
    result = two_versions.infer("add", "1", json.dumps(body).encode(), {})
    length = int(result.headers[HEADER_LENGTH])
    assert result.headers["Content-Type"] == "application/octet-stream"
    copy = np.frombuffer(result.body[length:], dtype="<f4").reshape(2, 2)
    assert copy.tolist() == [[1, 2], [3, 4]]


def test_a_sha256_mismatch_is_logged_and_answers_503(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    # Given version 2 whose model file no longer matches its manifest
    add_version(tmp_path / "add" / "1")
    folder = add_version(tmp_path / "add" / "2")
    (folder / "model.onnx").write_bytes(b"tampered")
    # When the function starts, Then it starts (never raises) and logs why version 2 is not served
    with caplog.at_level(logging.ERROR, logger="model_api.service"):
        service = InferenceService.from_environment(environment(tmp_path, version="2"))
    assert "model 'add' version '2' is not ready" in caplog.text and "sha256" in caplog.text
    # And every route of version 2, and the server's readiness, answer 503
    not_ready = "model 'add' version '2' is not ready: its model file failed the sha256 check"
    assert status_of(service.model_ready, "add") == (503, not_ready)
    assert status_of(service.infer, "add", "2", REQUEST, {}) == (503, not_ready)
    assert status_of(service.model_metadata, "add", "2") == (503, not_ready)
    assert status_of(service.ready)[0] == 503
    # While version 1 still serves
    assert service.model_ready("add", "1") == {"name": "add", "ready": True}


@pytest.mark.parametrize("damage", ["corrupt", "manifest", "other-model"])
def test_a_version_that_fails_to_load_answers_503(tmp_path: Path, damage: str) -> None:
    folder = identity_version(tmp_path / "add" / "1", "FP32")
    if damage == "corrupt":
        manifest = json.loads((folder / "manifest.json").read_text())
        (folder / "model.onnx").write_bytes(b"")
        manifest["sha256"] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "manifest":
        (folder / "manifest.json").write_text("{")
    else:
        manifest = json.loads((folder / "manifest.json").read_text())
        (folder / "manifest.json").write_text(json.dumps({**manifest, "name": "other"}))
    service = InferenceService.from_environment(environment(tmp_path))
    status, message = status_of(service.model_ready, "add")
    assert status == 503 and message.startswith("model 'add' version '1' is not ready: ")


@pytest.mark.parametrize(("version", "message"), [
    (None, "model 'add' has no current version: MODEL_VERSION is not set"),
    ("7", "model 'add': its current version '7' is not installed (installed: '1')"),
])
def test_a_wrong_current_version_answers_503_on_unversioned_routes(
        tmp_path: Path, version: str | None, message: str) -> None:
    add_version(tmp_path / "add" / "1")
    service = InferenceService.from_environment(environment(tmp_path, version=version))
    assert status_of(service.model_ready, "add") == (503, message)
    assert status_of(service.ready) == (503, message)
    assert service.model_ready("add", "1")["ready"] is True


def test_a_missing_model_folder_is_not_ready(tmp_path: Path) -> None:
    service = InferenceService.from_environment(environment(tmp_path / "nowhere"))
    assert status_of(service.model_ready, "add") == (
        503, "model 'add': its current version '1' is not installed (installed: none)")
