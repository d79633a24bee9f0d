"""Fixtures of the batch tests: a tiny ONNX model, a moto server on 127.0.0.1, a fresh bucket
and jobs table per test, and helpers to write inputs and read outputs."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from moto.server import ThreadedMotoServer
from onnx import TensorProto, helper

from batch.aws import client
from batch.jobs import JobStore
from local_api.batch.loop import create_resources
from model_export.explanation import BACKGROUND_FILE, background_section, encode_background

MODEL = "tiny-classifier"
FEATURES = 4
# Fixed weights: the answers are checkable by hand (numpy), independently of the batching.
WEIGHTS = np.array([[1.0, -1.0], [0.5, 0.25], [-2.0, 1.0], [0.0, 3.0]], dtype=np.float32)
BIAS = np.array([0.1, -0.1], dtype=np.float32)
BACKGROUND_ROWS = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 0.5, 2.0], [-0.5, 0.5, 1.0, -1.0]],
                           dtype=np.float32)


def tiny_model(folder: Path, version: str = "1", weights: np.ndarray = WEIGHTS,
               current: str = "1") -> Path:
    """models/<MODEL>/<version>/{model.onnx, manifest.json}: logits = x W + b, softmax and
    argmax; and the registry models/models.yaml listing the versions there, `current` current
    (MODELS_REGISTRY in the cloud fixture)."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["xw"]),
         helper.make_node("Add", ["xw", "B"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
         helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0)],
        "tiny",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor("W", TensorProto.FLOAT, weights.shape, weights.ravel().tolist()),
         helper.make_tensor("B", TensorProto.FLOAT, BIAS.shape, BIAS.tolist())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    version_dir = folder / MODEL / version
    version_dir.mkdir(parents=True)
    data = model.SerializeToString()
    (version_dir / "model.onnx").write_bytes(data)
    manifest = {"schema_version": 1, "name": MODEL, "version": version,
                "platform": "onnxruntime_onnx", "model_file": "model.onnx",
                "sha256": hashlib.sha256(data).hexdigest(),
                "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, FEATURES]}],
                "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]},
                            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}],
                "labels": ["no", "yes"], "task": "classification"}
    # Explained by Kernel SHAP (exact on 4 features) over BACKGROUND_ROWS, as an export would.
    background = encode_background({"features": BACKGROUND_ROWS})
    (version_dir / BACKGROUND_FILE).write_bytes(background)
    manifest["explanation"] = background_section("probabilities", background)
    (version_dir / "manifest.json").write_text(json.dumps(manifest))
    versions = sorted(p.name for p in (folder / MODEL).iterdir())
    registry(folder).write_text(json.dumps({"models": [
        {"name": MODEL, "source": "seed", "versions": versions, "current": current}]}))
    return folder


def registry(models_dir: Path) -> Path:
    """The registry (models.yaml; JSON is YAML) of the models under `models_dir`."""
    return models_dir / "models.yaml"


def expected(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label, probabilities) computed with numpy."""
    logits = rows.astype(np.float32) @ WEIGHTS + BIAS
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return logits.argmax(axis=1), exp / exp.sum(axis=1, keepdims=True)


def request_line(request_id: str, rows: np.ndarray, **extra: Any) -> str:
    return json.dumps({"id": request_id, **extra, "inputs": [
        {"name": "features", "shape": list(rows.shape), "datatype": "FP32",
         "data": rows.ravel().tolist()}]})


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("models"))


def atomic_dynamodb_writes() -> None:
    """Make moto's DynamoDB writes atomic, as DynamoDB's are: a conditional write checks its
    condition and writes the item as one step. moto checks, then writes, in the thread of each
    request of its threaded server, so two concurrent claims of one job can both pass the
    check (test_concurrent_deliveries_start_one_job saw two `submitted` of eight once, in a CI
    run on a loaded machine; 60 tries of it under load did not do it again). One lock around
    moto's item writes gives the tests the service's guarantee, which the trigger's claim
    relies on."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        method = getattr(DynamoDBBackend, name)
        if getattr(method, "atomic", False):
            continue

        def atomic(*args: Any, __method: Any = method, **kwargs: Any) -> Any:
            with lock:
                return __method(*args, **kwargs)

        atomic.atomic = True  # type: ignore[attr-defined]
        setattr(DynamoDBBackend, name, atomic)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    atomic_dynamodb_writes()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass
class Cloud:
    """One test's bucket and jobs table on the shared moto server."""

    endpoint: str
    bucket: str
    table: str

    @property
    def s3(self) -> Any:
        return client("s3")

    @property
    def store(self) -> JobStore:
        return JobStore(self.table)

    def put(self, key: str, body: bytes) -> str:
        """Upload; returns the version id."""
        return str(self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)["VersionId"])

    def text(self, key: str) -> str:
        return str(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode())


@pytest.fixture
def cloud(moto_endpoint: str, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Cloud:
    for name, value in {"MODELS_REGISTRY": str(registry(models_dir)),
                        "AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_MAX_ATTEMPTS": "3"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    suffix = uuid.uuid4().hex[:10]
    found = Cloud(moto_endpoint, f"batch-test-{suffix}", f"jobs-{suffix}")
    create_resources(found.bucket, found.table)
    return found


def runner_env(cloud: Cloud, models_dir: Path) -> dict[str, str]:
    """The environment of a runner child process (as the local submitter gives it)."""
    root = Path(__file__).resolve().parents[2]
    return {**os.environ, "MODELS_DIR": str(models_dir), "JOBS_TABLE": cloud.table,
            "PYTHONPATH": os.pathsep.join([str(root), str(root / "layers/serving/python")])}


def shipping() -> dict[str, set[str]]:
    """batch/shipping.txt, the one list of what ships with the batch path: path from the
    repository root -> the targets it ships in (layer, image)."""
    listed: dict[str, set[str]] = {}
    shipping_list = Path(__file__).resolve().parents[2] / "batch" / "shipping.txt"
    for line in shipping_list.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            path, *targets = line.split()
            assert path not in listed, f"{path} is listed twice"
            listed[path] = set(targets)
    return listed
