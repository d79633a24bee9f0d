"""A transformer encoder of a chosen size, exported with PyTorch: run in .venv-torch (python3.11),
not the main venv (model_export.large runs it). The large models' tests and `make bench ONLY=large`
use it; it is generated when needed, never committed.

`input_ids` INT64 [batch, sequence] and `attention_mask` INT64 [batch, sequence] (1 = a token,
0 = padding), both axes dynamic; `logits` FP32 [batch, classes] from the mean of the unmasked
tokens' encodings. The size is mostly the token embedding (vocabulary x width x 4 bytes), the
cheap way to reach hundreds of MB: the vocabulary is chosen so the file is `--mb` MB. Seeded:
the same arguments give the same weights.

    .venv-torch/bin/python -m model_export.transformer --out big.onnx --mb 400 --seed 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

WIDTH, HEADS, LAYERS, CLASSES = 256, 4, 2, 4


class Block(nn.Module):
    """One pre-norm encoder layer: masked multi-head self-attention, then a ReLU MLP. Written
    out (not nn.TransformerEncoderLayer) so that the exported graph reshapes by the input's own
    batch and sequence sizes: the TorchScript exporter bakes the traced sizes into
    nn.MultiheadAttention's reshapes."""

    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.qkv, self.out = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 4 * WIDTH), nn.ReLU(),
                                 nn.Linear(4 * WIDTH, WIDTH))

    def forward(self, hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, sequence = hidden.shape[0], hidden.shape[1]
        q, k, v = self.qkv(self.norm1(hidden)).reshape(
            batch, sequence, 3, HEADS, WIDTH // HEADS).permute(2, 0, 3, 1, 4).unbind(0)
        scores = q @ k.transpose(-1, -2) / (WIDTH // HEADS) ** 0.5 + bias
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, sequence, WIDTH)
        hidden = hidden + self.out(attended)
        result: torch.Tensor = hidden + self.mlp(self.norm2(hidden))
        return result


class Encoder(nn.Module):
    """Token embedding + learned positions, LAYERS blocks, masked mean, linear head."""

    def __init__(self, vocabulary: int, max_positions: int = 512) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocabulary, WIDTH)
        self.positions = nn.Embedding(max_positions, WIDTH)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        hidden = self.tokens(input_ids) + self.positions(positions)
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        # Padding keys get -1e9 before the softmax: a padded token is never attended to.
        bias = (1.0 - weights.transpose(1, 2)).unsqueeze(1) * -1e9
        for block in self.blocks:
            hidden = block(hidden, bias)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        logits: torch.Tensor = self.head(pooled)
        return logits


def vocabulary_for(mb: float) -> int:
    """The vocabulary whose embedding makes the file about `mb` MB (10^6 bytes)."""
    rest = 4 * (512 * WIDTH + LAYERS * 12 * WIDTH * WIDTH + WIDTH * CLASSES)
    return max(1000, int((mb * 1e6 - rest) / (4 * WIDTH)))


def export(out: Path, mb: float, seed: int) -> None:
    """Export the encoder of about `mb` MB, seeded, to `out` (one file)."""
    torch.manual_seed(seed)
    model = Encoder(vocabulary_for(mb)).eval()
    ids = torch.randint(0, 1000, (2, 7), dtype=torch.int64)
    mask = torch.ones_like(ids)
    # The TorchScript exporter (dynamo=False): the dynamo one spent 31 s of a busy 2-core
    # machine tracing an encoder like this one, the TorchScript one 5 s of CPU, and a test
    # pays it.
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model, (ids, mask), str(out), input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                          "attention_mask": {0: "batch", 1: "sequence"},
                          "logits": {0: "batch"}},
            opset_version=18, dynamo=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mb", type=float, default=400.0, help="about this many MB (10^6)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    export(args.out, args.mb, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
