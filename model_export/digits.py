"""digits-cnn from the main venv: train and export in .venv-torch, then check it like any seed.

PyTorch lives only in .venv-torch (python3.11, `make .venv-torch`); this runs
`model_export.digits_cnn` there as a subprocess and turns its files into a `Trained`, so parity,
metrics and the manifest go through the same path as the scikit-learn models.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from model_export.check import Tolerance
from model_export.export import Split, Splits, Trained

ROOT = Path(__file__).resolve().parent.parent
# Override with TORCH_PYTHON=/path/to/python when the torch venv lives elsewhere.
TORCH_PYTHON = Path(os.environ.get("TORCH_PYTHON", ROOT / ".venv-torch" / "bin" / "python"))
SEED = 0


def run_torch_export(out: Path) -> None:
    """Run digits_cnn in the torch venv; its chatter is shown only if it fails."""
    if not TORCH_PYTHON.exists():
        raise SystemExit(f"{TORCH_PYTHON} not found: run `make .venv-torch` (PyTorch, CPU)")
    result = subprocess.run(
        [str(TORCH_PYTHON), "-m", "model_export.digits_cnn", "--out", str(out),
         "--seed", str(SEED)],
        cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"digits-cnn export failed in {TORCH_PYTHON}:\n"
                         f"{result.stdout}{result.stderr}")


def split_rows(targets: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-back row indices: 25 % held back, stratified (digits_cnn's split)."""
    train_rows, test_rows = train_test_split(np.arange(len(targets)), test_size=0.25,
                                             random_state=seed, stratify=targets)
    return train_rows, test_rows


def splits() -> Splits:
    """load_digits() images as float32 [n, 8, 8] and targets as int64, split as trained."""
    data = load_digits()
    images, targets = data.images.astype(np.float32), data.target.astype(np.int64)
    train_rows, test_rows = split_rows(targets, SEED)
    return Splits(Split(images[train_rows], targets[train_rows]),
                  Split(images[test_rows], targets[test_rows]), Split(images, targets))


def train() -> Trained:
    with tempfile.TemporaryDirectory(prefix="digits-cnn-") as folder:
        out = Path(folder)
        run_torch_export(out)
        model = onnx.load(out / "model.onnx")
        reference = dict(np.load(out / "reference.npz"))
        frameworks = json.loads((out / "frameworks.json").read_text())
    data = load_digits()
    rows = splits()
    if not np.array_equal(reference["test_rows"], split_rows(rows.full.y, SEED)[1]):
        raise SystemExit("digits-cnn: the torch venv held back other rows than splits() "
                         "(scikit-learn versions differ?); the test metrics would be wrong")
    return Trained(
        model=model,
        inputs=[{"name": "image", "datatype": "FP32", "shape": [-1, 8, 8]}],
        outputs=[{"name": "label", "datatype": "INT64", "shape": [-1]},
                 {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
        task="classification",
        labels=[str(digit) for digit in data.target_names],
        test=rows.test,
        train=rows.train,
        full=rows.full,
        framework={"label": reference["label"], "probabilities": reference["probabilities"]},
        tolerances={"label": Tolerance("exact"), "probabilities": Tolerance("abs", 1e-5)},
        description="Handwritten digit (0-9) from an 8x8 image with pixel values 0-16, exactly "
                    "as load_digits().images; a small CNN (two 3x3 convolutions, max pooling, "
                    "two dense layers) with scaling, softmax and argmax inside the graph.",
        dataset="sklearn.datasets.load_digits",
        seed=SEED,
        # The torch venv's versions, and the onnxruntime that checked parity (main venv).
        frameworks={**frameworks, "onnxruntime": version("onnxruntime")},
    )
