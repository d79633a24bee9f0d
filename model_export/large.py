"""Large models for the tests and `make bench ONLY=large`, generated when needed, never committed:
a transformer encoder of a chosen size exported by PyTorch in .venv-torch
(model_export.transformer), kept in a cache folder so one test session or bench run exports
each size once."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from model_export.digits import ROOT, TORCH_PYTHON


def transformer(mb: float, cache: Path, seed: int = 0) -> Path:
    """The encoder of about `mb` MB (seeded) in `cache`, exported there on first use (about 5 s
    of CPU plus the writing). SystemExit when .venv-torch is missing or the export fails."""
    out = cache / f"transformer-{mb:g}mb-seed{seed}.onnx"
    if out.is_file():
        return out
    if not TORCH_PYTHON.exists():
        raise SystemExit(f"{TORCH_PYTHON} not found: run `make .venv-torch` (PyTorch, CPU)")
    partial = out.with_name(f".{out.name}.{os.getpid()}")
    result = subprocess.run(
        [str(TORCH_PYTHON), "-m", "model_export.transformer", "--out", str(partial),
         "--mb", str(mb), "--seed", str(seed)],
        cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"the transformer export failed in {TORCH_PYTHON}:\n"
                         f"{result.stdout}{result.stderr}")
    partial.rename(out)
    return out
