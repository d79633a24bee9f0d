"""Opt-in (MODEL_API_BATCH_IMAGE=1): the batch image's Python environment, without Docker.

A virtual environment is made from batch/Dockerfile's own `pip install` line (onnxruntime-gpu
and its CUDA 13 and cuDNN 9 wheels, about 2 GB, downloaded once into build/batch-image-env),
and the runner, as batch/ship.sh copies it into the image, runs a job of every seed model
from it against the moto server: its outputs must be the project's onnxruntime's, and it must
say which provider ran them (here, with no GPU, the loud CPU fallback). It also checks that
the runner loads the CUDA libraries from those wheels (batch.loading.preload_cuda), which
onnxruntime's CUDA provider cannot find on its own.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from model_api import examples
from model_api.manifest import MANIFEST_FILE, load_manifest

from batch.keys import parse_key
from batch.loading import version_dir
from bench.gpu_kit import image_requirements
from local_api.batch.sample import write_jsonl
from tests.batch.conftest import Cloud
from tests.conftest import MODELS_DIR, ROOT

pytestmark = pytest.mark.skipif(
    os.environ.get("MODEL_API_BATCH_IMAGE") != "1",
    reason="downloads the image's ~2 GB of onnxruntime-gpu and CUDA wheels: "
           "MODEL_API_BATCH_IMAGE=1 runs it")

ENV_DIR = ROOT / "build" / "batch-image-env"
SEED_MODELS = ("breast-cancer-mlp", "diabetes-linear", "digits-cnn", "text-topics")
ROWS = 2000


@pytest.fixture(scope="module")
def image_python() -> Path:
    """The image's environment's interpreter: made (or remade when the Dockerfile's pins
    changed) with this interpreter's Python, 3.12 as the image's."""
    requirements = image_requirements()
    stamp = hashlib.sha256(json.dumps(requirements).encode()).hexdigest()
    python = ENV_DIR / "bin" / "python"
    marker = ENV_DIR / ".installed"
    if not (marker.is_file() and marker.read_text() == stamp):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(ENV_DIR)], check=True,
                       timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", *requirements], check=True, timeout=1800)
        marker.write_text(stamp)
    return python


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runner's modules as the image holds them (batch/ship.sh image)."""
    folder = tmp_path_factory.mktemp("image") / "app"
    subprocess.run(["sh", str(ROOT / "batch" / "ship.sh"), "image", str(folder)], check=True,
                   timeout=60)
    return folder


def image_env(shipped: Path) -> dict[str, str]:
    return {**os.environ,
            "PYTHONPATH": os.pathsep.join([str(shipped), str(ROOT / "layers/serving/python")])}


def test_the_runner_loads_cuda_13_and_cudnn_9_from_the_images_wheels(
        image_python: Path, shipped: Path) -> None:
    script = ("from batch import loading\n"
              "providers = loading.choose_providers(True)\n"
              "maps = open('/proc/self/maps').read()\n"
              "print(providers, 'libcublas.so.13' in maps, 'libcudnn.so.9' in maps)\n")
    result = subprocess.run([str(image_python), "-c", script], env=image_env(shipped),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["['CUDAExecutionProvider',", "'CPUExecutionProvider']",
                                     "True", "True"]


@pytest.mark.parametrize("model", SEED_MODELS)
def test_a_job_of_each_seed_model_runs_in_the_images_environment(
        model: str, image_python: Path, shipped: Path, cloud: Cloud, tmp_path: Path) -> None:
    folder = version_dir(MODELS_DIR, model, None, ROOT / "models.yaml")  # its current one
    manifest = load_manifest(folder / MANIFEST_FILE)
    rows = examples.load(folder, manifest)
    if model == "text-topics":  # a BYTES input: JSON Lines only
        path = tmp_path / "rows.jsonl"
        write_jsonl(path, manifest, rows, ROWS)
    else:
        (array,) = rows.values()
        array = np.resize(array, (ROWS, *array.shape[1:]))
        path = tmp_path / "rows.npy"
        np.save(path, array)
    key = f"batch/input/{model}/image{path.suffix}"
    version = cloud.put(key, path.read_bytes())
    obj = parse_key(cloud.bucket, key, version)
    cloud.store.create({"job_id": obj.job_id, "model": model, "status": "submitted"})
    result = subprocess.run(
        [str(image_python), "-m", "batch.runner", "--bucket", cloud.bucket, "--key", key,
         "--version-id", version, "--job-id", obj.job_id, "--models-dir", str(MODELS_DIR),
         "--registry", str(ROOT / "models.yaml"), "--table", cloud.table],
        env=image_env(shipped), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # which provider ran it is said: here (no GPU) the loud fallback
    assert re.search(rf"model {model} runs on the (GPU|CPU)", result.stderr), result.stderr
    record = cloud.store.get(obj.job_id)
    assert record is not None and record["status"] == "succeeded"
    assert int(record["rows_read"]) == ROWS and int(record["errors"]) == 0
    success = json.loads(cloud.text(obj.success_key))
    if model == "text-topics":
        records = [json.loads(line) for part in success["parts"]
                   for line in cloud.text(obj.output_key(part)).splitlines()]
        assert [r["id"] for r in records] == [str(n) for n in range(ROWS)]
        assert all("outputs" in r for r in records)
        return
    session = ort.InferenceSession(str(folder / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    wanted = session.run(None, {session.get_inputs()[0].name: array})
    for output, expected in zip(session.get_outputs(), wanted, strict=True):
        body = cloud.s3.get_object(Bucket=cloud.bucket,
                                   Key=obj.output_key(obj.npy_output(output.name)))["Body"]
        got = np.load(io.BytesIO(body.read()))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
