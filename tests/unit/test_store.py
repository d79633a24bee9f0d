"""The model store's reading (model_api.store) and a large model's load in the background
(model_api.service): ranged reads in parallel, the sha256 checked on the stream, 503 with
Retry-After while loading, LOADING in the repository index, the wait of an infer request.
The store is an in-memory range reader here (the S3 one runs in tests/model_registry/
test_large_model.py against the local API's moto S3)."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from model_api.errors import Loading
from model_api.integrity import IntegrityError
from model_api.model import LoadedModel, ModelIntegrityError
from model_api.repository import LOADING, READY, service_index
from model_api.service import InferenceService
from model_api.store import Progress, StoredObject, StoreError, fetch_verified

from model_export.large import DATA_FILE, embedding
from tests.unit.tiny_models import identity_version


class MemoryStore:
    """Objects in a dict; counts the ranges asked; `gate` holds every read until set."""

    def __init__(self, objects: dict[str, bytes], gate: threading.Event | None = None) -> None:
        self.objects, self.gate = objects, gate
        self.ranges: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    def read_range(self, key: str, start: int, end: int) -> bytes:
        if self.gate is not None:
            self.gate.wait(10)
        if key not in self.objects:
            raise StoreError(f"{key}: no such object")
        with self.lock:
            self.ranges.append((start, end))
        return self.objects[key][start:end]


def stored(data: bytes, key: str = "models/m/1/model.onnx") -> StoredObject:
    return StoredObject(key, len(data), hashlib.sha256(data).hexdigest())


def test_parallel_ranged_reads_return_the_object_once_its_sha256_matches() -> None:
    data = bytes(range(256)) * 1000  # 256,000 bytes in 26 parts of 10,000
    store, progress = MemoryStore({"models/m/1/model.onnx": data}), Progress(len(data))
    assert fetch_verified(store, stored(data), part_bytes=10_000, workers=4,
                          progress=progress) == data
    assert sorted(store.ranges) == [(s, min(s + 10_000, len(data)))
                                    for s in range(0, len(data), 10_000)]
    assert progress.done == len(data) and progress.fraction() == 1.0


def test_a_changed_object_never_comes_back() -> None:
    data = b"x" * 50_000
    changed = MemoryStore({"models/m/1/model.onnx": b"x" * 49_999 + b"y"})
    with pytest.raises(IntegrityError) as raised:
        fetch_verified(changed, stored(data), part_bytes=4096)
    assert raised.value.expected == hashlib.sha256(data).hexdigest()
    short = MemoryStore({"models/m/1/model.onnx": data[:-10]})
    with pytest.raises(StoreError, match="not 50000 bytes long"):
        fetch_verified(short, stored(data), part_bytes=4096)
    with pytest.raises(StoreError, match="no such object"):
        fetch_verified(MemoryStore({}), stored(data))


def store_backed(folder: Path) -> tuple[Path, MemoryStore, threading.Event]:
    """An identity model whose manifest names a stored object; the file moved into a gated
    in-memory store (so the folder holds what a layer holds: the manifest only)."""
    identity_version(folder, "FP32")
    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").unlink()
    key = f"models/{folder.parent.name}/{folder.name}/model.onnx"
    manifest["store"] = {"key": key, "bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    gate = threading.Event()
    return folder, MemoryStore({key: data}, gate), gate


def test_a_stored_version_loads_from_the_store_and_a_tampered_one_is_refused(
        tmp_path: Path) -> None:
    folder, store, gate = store_backed(tmp_path / "m" / "1")
    gate.set()
    loaded = LoadedModel.load(folder, store=store)
    assert [spec.name for spec in loaded.manifest.inputs] == ["x"]
    store.objects[next(iter(store.objects))] += b"\0"
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["store"]["bytes"] += 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        LoadedModel.load(folder, store=store)


def test_while_it_loads_it_answers_503_with_retry_after_then_serves(tmp_path: Path) -> None:
    _, store, gate = store_backed(tmp_path / "m" / "1")
    service = InferenceService.from_directory(tmp_path, "m", "1", store=store, background=True)
    service.load_wait_s = 0.05

    # While the store holds every read back: loading, with Retry-After, and LOADING
    with pytest.raises(Loading) as raised:
        service.model_ready("m")
    assert raised.value.status == 503 and "is loading: 0% of" in raised.value.message
    assert int(raised.value.headers["Retry-After"]) >= 1
    assert [entry.state for entry in service_index(service)] == [LOADING]
    assert service.model_metadata("m")["inputs"][0]["name"] == "x"  # from the manifest
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                                   "data": [1, 2, 3]}]}).encode()
    with pytest.raises(Loading):
        service.infer("m", None, body, {})

    # When the reads go through, an infer request that waits gets its answer
    service.load_wait_s = 10
    gate.set()
    result = service.infer("m", None, body, {})
    assert result is not None
    assert service.model_ready("m") == {"name": "m", "ready": True}
    assert [entry.state for entry in service_index(service)] == [READY]


def test_an_external_data_model_is_handed_to_onnxruntime_from_memory(tmp_path: Path) -> None:
    # Given a model in ONNX's external-data format (the form of one over 2 GiB; 2 MB here):
    # its graph and its tensors' file, both in the store, the folder holding the manifest only
    source = embedding(2, tmp_path / "made", external=True)
    graph, data = source.read_bytes(), source.with_name(DATA_FILE).read_bytes()
    folder = tmp_path / "models" / "e" / "1"
    folder.mkdir(parents=True)
    sha = hashlib.sha256
    (folder / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "name": "e", "version": "1", "platform": "onnxruntime_onnx",
        "model_file": "model.onnx", "sha256": sha(graph).hexdigest(),
        "inputs": [{"name": n, "datatype": "INT64", "shape": [-1, -1]}
                   for n in ("input_ids", "attention_mask")],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 4]}],
        "store": {"key": "models/e/1/model.onnx", "bytes": len(graph),
                  "data": {"key": "models/e/1/model.onnx.data", "bytes": len(data),
                           "sha256": sha(data).hexdigest(), "location": DATA_FILE}}}))
    store = MemoryStore({"models/e/1/model.onnx": graph, "models/e/1/model.onnx.data": data})
    progress = Progress(len(graph) + len(data))

    # When it loads from the store, its answers are onnxruntime's on the files themselves
    loaded = LoadedModel.load(folder, store=store, progress=progress)
    assert progress.done == len(graph) + len(data)
    ids = np.array([[1, 5, 9], [2, 2, 0]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.array([[1, 1, 1], [1, 1, 0]])}
    want = ort.InferenceSession(str(source)).run(None, feeds)[0]
    np.testing.assert_array_equal(loaded.run(feeds, ["logits"])["logits"], want)

    # and a changed byte of its tensors keeps it from loading
    store.objects["models/e/1/model.onnx.data"] = data[:-1] + b"\1"
    with pytest.raises(ModelIntegrityError, match="sha256"):
        LoadedModel.load(folder, store=store)
