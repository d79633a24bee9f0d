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
import onnx
import onnxruntime as ort
import pytest
from model_api.errors import Loading
from model_api.integrity import IntegrityError
from model_api.model import COPY, WEIGHTS_VARIABLE, LoadedModel, ModelIntegrityError
from model_api.repository import LOADING, READY, service_index
from model_api.service import InferenceService
from model_api.store import (
    ALIGNMENT,
    Progress,
    StoredObject,
    StoreError,
    Tensor,
    aligned_buffer,
    external_data,
    fetch_into,
    fetch_verified,
    read_file_into,
    size_text,
)
from onnx import TensorProto, helper, numpy_helper

from model_export.artifact import signature
from model_export.large import embedding
from model_export.weights import DATA_FILE, split, store_section
from model_export.weights import tensors as split_tensors
from tests.unit.tiny_models import identity_version


class MemoryStore:
    """Objects in a dict; counts the ranges asked; `gate` holds every read until set."""

    def __init__(self, objects: dict[str, bytes], gate: threading.Event | None = None) -> None:
        self.objects, self.gate = objects, gate
        self.ranges: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    def read_range_into(self, key: str, start: int, out: memoryview) -> int:
        if self.gate is not None:
            self.gate.wait(10)
        if key not in self.objects:
            raise StoreError(f"{key}: no such object")
        part = self.objects[key][start:start + len(out)]
        with self.lock:
            self.ranges.append((start, start + len(out)))
        out[:len(part)] = part
        return len(part)


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


def test_sizes_read_in_the_unit_that_fits() -> None:
    assert [size_text(n) for n in (0, 860, 8_600, 20_000_000, 2_200_000_000, 400_000_000)] == [
        "0 B", "860 B", "8.6 kB", "20 MB", "2.2 GB", "400 MB"]


def test_while_it_loads_it_answers_503_with_retry_after_then_serves(tmp_path: Path) -> None:
    _, store, gate = store_backed(tmp_path / "m" / "1")
    service = InferenceService.from_directory(tmp_path, "m", "1", store=store, background=True)
    service.load_wait_s = 0.05

    # While the store holds every read back: loading, with Retry-After, and LOADING
    with pytest.raises(Loading) as raised:
        service.model_ready("m")
    assert raised.value.status == 503 and "is loading: 0% of" in raised.value.message
    # a small file says its size as it is (not "0 MB"), and nothing read yet asks again
    # after the time its size takes at the expected rate: a second, not a fixed five
    size = next(iter(store.objects.values()))
    assert f"0% of {size_text(len(size))} read" in raised.value.message
    assert len(size) < 1e6 and int(raised.value.headers["Retry-After"]) == 1
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


def stored_form(source: Path, folder: Path, data: bytes | None = None
                ) -> tuple[Path, MemoryStore, bytes, bytes]:
    """The version `folder` of `source` as the store keeps it (model_export.weights: its graph
    and its weights' file, both in an in-memory store; the folder holds the manifest only)."""
    graph, weights = split(source.read_bytes(), data)
    folder.mkdir(parents=True)
    key = f"models/{folder.parent.name}/{folder.name}/"
    (folder / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "name": folder.parent.name, "version": folder.name,
        "platform": "onnxruntime_onnx", "model_file": "model.onnx",
        "sha256": hashlib.sha256(graph).hexdigest(),
        **signature(onnx.load_from_string(graph)),
        "store": store_section(graph, weights, key + "model.onnx", key + DATA_FILE)}))
    return folder, MemoryStore({key + "model.onnx": graph, key + DATA_FILE: weights}), \
        graph, weights


def feeds() -> dict[str, np.ndarray]:
    return {"input_ids": np.array([[1, 5, 9], [2, 2, 0]], dtype=np.int64),
            "attention_mask": np.array([[1, 1, 1], [1, 1, 0]], dtype=np.int64)}


@pytest.mark.parametrize("external", [False, True], ids=["one-file", "external-data"])
def test_a_stored_model_runs_on_its_weights_in_place(tmp_path: Path, external: bool) -> None:
    # Given a model in one file, or in ONNX's external-data format (the form of one over
    # 2 GiB; 2 MB here), kept as the store keeps it: its graph and its weights' file
    source = embedding(2, tmp_path / "made", external=external)
    folder, store, graph, weights = stored_form(
        source, tmp_path / "models" / "e" / "1",
        source.with_name(DATA_FILE).read_bytes() if external else None)
    assert len(graph) < 2_000 and len(weights) >= 2e6
    progress = Progress(len(graph) + len(weights))

    # When it loads from the store, onnxruntime runs on the buffer the weights were read into
    # (no copy), and its answers are onnxruntime's on the source file
    loaded = LoadedModel.load(folder, store=store, progress=progress)
    assert progress.done == len(graph) + len(weights)
    (buffer, *values) = loaded.pinned
    assert buffer.nbytes == len(weights) and buffer.ctypes.data % ALIGNMENT == 0
    assert len(values) == len(split_tensors(graph)) == 2  # its table and its head
    want = ort.InferenceSession(str(source)).run(None, feeds())[0]
    np.testing.assert_array_equal(loaded.run(feeds(), ["logits"])["logits"], want)

    # and the batch runner's choice, COPY (pre-packed), pins nothing and answers the same
    copied = LoadedModel.load(folder, store=store, weights_mode=COPY)
    assert copied.pinned == ()
    np.testing.assert_array_equal(copied.run(feeds(), ["logits"])["logits"], want)

    # and laying it out again gives the same bytes (a re-import changes nothing)
    assert split(graph, weights) == (graph, weights)

    # and a changed byte of its weights keeps it from loading
    store.objects[f"models/e/1/{DATA_FILE}"] = weights[:-1] + bytes([weights[-1] ^ 1])
    with pytest.raises(ModelIntegrityError, match="sha256"):
        LoadedModel.load(folder, store=store)


def cast_model() -> bytes:
    """A graph whose optimisation reads a weight's bytes: an FP16 weight cast to FP32 (constant
    folding computes the cast at load) before a MatMul."""
    weight = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float16)
    graph = helper.make_graph(
        [helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.FLOAT),
         helper.make_node("MatMul", ["x", "w"], ["y"])], "cast",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(weight, "w16")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("mode", ["in-place", "copy"])
def test_weights_an_optimisation_reads_are_copied_to_onnxruntime(
        tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a stored model whose load-time optimisation reads a weight (a Cast folded), and
    # the choice of $MODEL_API_WEIGHTS
    source = tmp_path / "cast.onnx"
    source.write_bytes(cast_model())
    folder, store, _, _ = stored_form(source, tmp_path / "models" / "c" / "1")
    monkeypatch.setenv(WEIGHTS_VARIABLE, mode)

    # When it loads: onnxruntime copies the weights (in place cannot serve it), and the
    # answers are onnxruntime's on the source file
    loaded = LoadedModel.load(folder, store=store)
    assert loaded.pinned == ()
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    want = ort.InferenceSession(str(source)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(loaded.run({"x": x}, ["y"])["y"], want)


def test_a_manifest_tensor_outside_its_file_or_misaligned_is_refused() -> None:
    good = {"name": "t", "type": 1, "shape": [4, 4], "offset": 64, "bytes": 64}
    assert Tensor.from_manifest(good, 128).shape == (4, 4)
    for wrong in ({"offset": 65}, {"bytes": 60}, {"offset": 128}, {"type": 8},
                  {"shape": [4, -4]}):
        with pytest.raises(ValueError, match=r"store\.data\.tensors"):
            Tensor.from_manifest({**good, **wrong}, 128)
    with pytest.raises(ValueError, match="add it again"):
        external_data({"store": {"data": {"key": "k", "bytes": 8, "sha256": "0" * 64,
                                          "location": DATA_FILE}}})


def test_a_weights_file_is_read_into_its_buffer_and_checked(tmp_path: Path) -> None:
    data = bytes(range(256)) * 300
    path = tmp_path / DATA_FILE
    path.write_bytes(data)
    buffer = aligned_buffer(len(data))
    read_file_into(path, stored(data), buffer)
    assert buffer.tobytes() == data
    store = MemoryStore({"models/m/1/model.onnx": data})
    fetch_into(store, stored(data), buffer, part_bytes=1000, workers=3)
    assert buffer.tobytes() == data
    path.write_bytes(data + b"\0")
    with pytest.raises(IntegrityError, match="not 76800 bytes long"):
        read_file_into(path, stored(data), buffer)
