"""Train and export digits-cnn with PyTorch: run in .venv-torch (python3.11), not the main venv.

`python -m model_export.digits_cnn --out DIR --seed N` writes DIR/model.onnx and DIR/reference.npz
(held-back row indices and PyTorch's own outputs on them, for the parity check that
model_export.digits runs in the main venv) and DIR/frameworks.json. Imports only torch, numpy
and scikit-learn, which is all that venv has.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

EPOCHS = 30
BATCH = 32
PIXEL_MAX = 16.0  # load_digits pixels are 0..16


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions, max pooling and two dense layers; scaling, softmax, argmax inside."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image.unsqueeze(1) / PIXEL_MAX))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.softmax(self.logits(image), dim=1)
        return probabilities.argmax(dim=1), probabilities


def train(images: np.ndarray, targets: np.ndarray, seed: int) -> DigitsCNN:
    """A few seconds of Adam on the CPU, seeded and single-threaded so reruns are identical."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    model = DigitsCNN()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = torch.from_numpy(images), torch.from_numpy(targets)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(x), generator=order).split(BATCH):
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(model.logits(x[batch]), y[batch])
            loss.backward()
            optimiser.step()
    return model.eval()


def export(out: Path, seed: int) -> None:
    data = load_digits()
    images, targets = data.images.astype(np.float32), data.target.astype(np.int64)
    rows = np.arange(len(targets))
    train_rows, test_rows = train_test_split(rows, test_size=0.25, random_state=seed,
                                             stratify=targets)
    model = train(images[train_rows], targets[train_rows], seed)
    out.mkdir(parents=True, exist_ok=True)
    example = torch.from_numpy(images[test_rows[:2]])
    program = torch.onnx.export(
        model, (example,), input_names=["image"], output_names=["label", "probabilities"],
        dynamic_shapes={"image": {0: torch.export.Dim("batch")}}, opset_version=18,
        dynamo=True, external_data=False, verbose=False)
    program.save(str(out / "model.onnx"))
    with torch.no_grad():
        labels, probabilities = model(torch.from_numpy(images[test_rows]))
    np.savez(out / "reference.npz", test_rows=test_rows, label=labels.numpy(),
             probabilities=probabilities.numpy())
    frameworks = {package: version(package)
                  for package in ("torch", "onnxscript", "onnx", "numpy", "scikit-learn")}
    (out / "frameworks.json").write_text(json.dumps(frameworks))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder to write the files to")
    parser.add_argument("--seed", type=int, required=True, help="seeds the split and training")
    args = parser.parse_args(argv)
    export(args.out, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
