"""bench.gpu (the runner on CUDA against onnxruntime and the CPU, issue 23 item 3) and
bench.gpu_kit (what carries it to a lent GPU machine). The GPU figures need a GPU; here the
module must run whole on the CPU, refuse to pretend without `--allow-no-gpu`, and the kit's
parts must join back to the very tar they were cut from, or say why not."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from model_api.integrity import file_sha256

from bench import gpu, gpu_kit
from tests.bench.test_bench_quick import bench_env

ROOT = Path(__file__).resolve().parents[2]


def test_without_cuda_it_says_why_and_measures_nothing(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, "-m", "bench.gpu", "--out", str(out)], cwd=ROOT,
                          env=bench_env(), capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == gpu.NO_GPU_EXIT, done.stderr[-2000:]
    assert "no GPU to measure: onnxruntime" in done.stderr and "no CUDA provider" in done.stderr
    assert not out.exists()


@pytest.mark.slow
def test_the_cpu_side_runs_whole(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, "-m", "bench.gpu", "--allow-no-gpu", "--rows", "3000",
                           "--rounds", "1", "--out", str(out)], cwd=ROOT, env=bench_env(),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(out.read_text())
    assert results["cuda_missing"] and "cuda" not in results and "fallback" not in results
    cpu = results["cpu"]
    assert cpu["rows"] == 3000 and cpu["raw_job_rows_per_s"] > 0
    assert set(cpu["raw_rows_per_s"]) == {"256", "1024", "4096", "16384"}
    assert cpu["runner_rows_per_s"]["0"] > 0 and cpu["ratio_raw_job"]["0"] > 0
    # the table for docs/performance.md: the CPU's row, named with its cores
    assert f"| CPU, {os.cpu_count()} cores |" in done.stdout
    assert not any(line.startswith("{") for line in done.stdout.splitlines())  # metrics: stderr


def test_markdown_names_the_card_and_every_runner_size() -> None:
    figures = {"raw_best_rows_per_s": 2_000_000, "raw_best_batch": 16384,
               "raw_job_rows_per_s": 900_000,
               "runner_rows_per_s": {"256": 1, "1024": 2, "4096": 3, "16384": 4, "0": 850_000},
               "ratio_raw_job": {"0": 0.94}}
    cpu = {**figures, "runner_rows_per_s": {"0": 10}, "ratio_raw_job": {"0": 1.1}}
    table = gpu.markdown({"card": {"name": "NVIDIA H100 80GB HBM3"}, "machine": {"cores": 16},
                          "cuda": figures, "cpu": cpu})
    assert "| CUDA, NVIDIA H100 80GB HBM3 | 2,000,000 (b16384) | 900,000 | 850,000 | " \
           "1 / 2 / 3 / 4 | 0.94 |" in table
    assert "| CPU, 16 cores | 2,000,000 (b16384) | 900,000 | 10 | — | 1.1 |" in table


def test_the_kit_is_the_images_packages_without_cuda_and_with_moto() -> None:
    wanted = gpu_kit.kit_requirements()
    assert "onnxruntime-gpu==1.31.1" in wanted  # the image's pin, without its CUDA extras
    assert not any(name.startswith("nvidia-") for name in wanted)
    assert any(name.startswith("moto[") for name in wanted)
    # what the device's image has is resolved (at the image's versions) but not carried
    assert gpu_kit.DEVICE_HAS.match("numpy-2.4.6-cp312-cp312-manylinux_2_27_x86_64.whl")
    assert gpu_kit.DEVICE_HAS.match("nvidia_cublas-13.10.0.20-py3-none-manylinux_2_27.whl")
    assert not gpu_kit.DEVICE_HAS.match("onnxruntime_gpu-1.31.1-cp312-cp312-manylinux.whl")
    image = gpu_kit.image_requirements()
    assert "boto3==1.43.108" in image and any(n.startswith("nvidia-cublas==") for n in image)


def tar_of(folder: Path, files: dict[str, bytes]) -> Path:
    (folder / "wheels").mkdir()
    for name, body in files.items():
        (folder / "wheels" / name).write_bytes(body)
    archive = folder / "kit.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(folder / "wheels", arcname="wheels")
    return archive


def test_parts_kept_one_call_at_a_time_join_to_the_same_tar(tmp_path: Path) -> None:
    archive = tar_of(tmp_path, {"a.whl": os.urandom(70_000), "b.whl": os.urandom(5_000)})
    carried, keep, out = (tmp_path / name for name in ("carried", "keep", "out"))
    for folder in (carried, out):
        folder.mkdir()
    parts = gpu_kit.split(archive, carried, part_bytes=30_000)
    assert [p["name"] for p in parts] == ["part-1", "part-2", "part-3"]
    assert sum(p["bytes"] for p in parts) == archive.stat().st_size
    manifest = {"tar_sha256": file_sha256(archive), "parts": parts}
    # one part per call: the first call has part-1 alone, and so on
    hold = tmp_path / "hold"
    hold.mkdir()
    for part in parts[1:]:
        (carried / part["name"]).rename(hold / part["name"])
    assert gpu_kit.keep_parts(manifest, carried, keep) == ["part-2", "part-3"]
    (hold / "part-2").rename(carried / "part-2")
    assert gpu_kit.keep_parts(manifest, carried, keep) == ["part-3"]
    (hold / "part-3").rename(carried / "part-3")
    assert gpu_kit.keep_parts(manifest, carried, keep) == []
    joined = gpu_kit.join(manifest, keep, out)
    assert hashlib.sha256(joined.read_bytes()).hexdigest() == manifest["tar_sha256"]


def test_a_damaged_part_is_dropped_and_a_wrong_tar_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tar_of(tmp_path, {"a.whl": os.urandom(50_000)})
    carried, keep = tmp_path / "carried", tmp_path / "keep"
    carried.mkdir()
    parts = gpu_kit.split(archive, carried, part_bytes=20_000)
    manifest = {"tar_sha256": file_sha256(archive), "parts": parts}
    damaged = carried / "part-2"
    damaged.write_bytes(b"x" + damaged.read_bytes()[1:])
    assert gpu_kit.keep_parts(manifest, carried, keep) == ["part-2"]
    assert "part-2 is not the manifest's (sha256): dropped" in capsys.readouterr().err
    assert not damaged.exists()
    # parts each right but from another pack: the joined tar is refused
    for part in parts:
        (keep / part["name"]).write_bytes(b"\0" * part["bytes"])
    with pytest.raises(ValueError, match="sha256 is not the manifest's"):
        gpu_kit.join(manifest, keep, tmp_path)
