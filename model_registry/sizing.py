"""Measure what a store-placed version's function needs in memory (issue 21): `make add-model`
loads the version in a fresh process as its function does (model_api.model.LoadedModel.load,
its weights in place) and runs one sizing request through it, recording the process's peak
resident memory (VmHWM, /proc/self/status) over what it held with numpy and onnxruntime
imported. model_registry.placement sizes the function from that peak (its SIZING_MARGIN on top)
instead of from the weights' size alone: a request's activations (attention over 512 tokens)
can take more memory than the model's weights.

The sizing request is the user's (`--sizing rows.npz`, one array per input name; `make
add-model SIZING=rows.npz`) or, by default, a stated worst case built from the signature: the
batch axis (a variable first dimension) at SIZING_ROWS rows, every other variable axis at
SIZING_LENGTH (512 tokens: BERT's longest sequence), integers and floats filled with ones (a
full attention mask), strings with one character. A larger request than the sizing request may
need more memory than its function has (README, "Large models").

Run as `python -m model_registry.sizing VERSION_DIR [ROWS.npz]` it is the measuring process
itself: it prints one line of JSON (measure() reads it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MB = 1_000_000
# The default sizing request: rows on the batch axis, and the length of every other variable axis.
SIZING_ROWS = 8
SIZING_LENGTH = 512
# The measuring process may take this long (loading a 4 GB model and one request).
TIMEOUT_S = 600
ROOT = Path(__file__).resolve().parents[1]
SERVING = ROOT / "layers" / "serving" / "python"


class SizingError(RuntimeError):
    """The version could not be loaded or run in the measuring process; the message says why."""


@dataclass(frozen=True)
class Sizing:
    """What the measuring process held beyond its own baseline (python, numpy, onnxruntime):
    `load_bytes` at its peak while the version loaded, `peak_bytes` at its peak once the
    sizing request had run too (both from VmHWM), and the request's `shape` (input -> dims)."""

    load_bytes: int
    peak_bytes: int
    shape: dict[str, list[int]]
    given: bool  # the user's sizing rows (else the default worst case)

    @property
    def request_bytes(self) -> int:
        """What the request added to the load's peak."""
        return max(0, self.peak_bytes - self.load_bytes)

    def record(self) -> dict[str, Any]:
        """As models.yaml keeps it (files[version].sizing), read back by from_record."""
        return {"load_bytes": self.load_bytes, "peak_bytes": self.peak_bytes,
                "shape": self.shape, "given": self.given}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Sizing:
        return cls(int(record["load_bytes"]), int(record["peak_bytes"]),
                   {k: list(v) for k, v in record["shape"].items()}, bool(record["given"]))

    def describe(self) -> str:
        """'load peak A MB + a request of shape ... B MB' for add-model's output."""
        shapes = ", ".join(f"{name} {'x'.join(map(str, dims))}"
                           for name, dims in self.shape.items())
        how = ("the sizing rows given" if self.given else
               f"the default: {SIZING_ROWS} rows on the batch axis, {SIZING_LENGTH} on every "
               "other variable axis")
        return (f"load peak {self.load_bytes / MB:,.0f} MB + a request of shape {shapes} "
                f"({how}) {self.request_bytes / MB:,.0f} MB")


def default_shape(shape: Sequence[int], rows: int = SIZING_ROWS,
                  length: int = SIZING_LENGTH) -> list[int]:
    """A declared shape (-1: a variable dimension) with its variable batch axis (the first)
    at `rows` and every other variable axis at `length`."""
    return [dim if dim >= 0 else rows if axis == 0 else length
            for axis, dim in enumerate(shape)]


def measure(version_dir: Path, rows: Path | None = None) -> Sizing:
    """Load `version_dir` (an exported version: manifest, graph and weights' file beside it)
    in a fresh process and run the sizing request (`rows`, a .npz by input name, else the
    default worst case); SizingError when it cannot load or run."""
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(SERVING), str(ROOT),
                                                        os.environ.get("PYTHONPATH")]))}
    env.pop("MODEL_API_WEIGHTS", None)  # as a function loads it: in place
    try:
        done = subprocess.run(
            [sys.executable, "-m", "model_registry.sizing", str(version_dir),
             *([str(rows)] if rows is not None else [])],
            capture_output=True, text=True, timeout=TIMEOUT_S, check=False, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        raise SizingError(f"loading it and running the sizing request took over {TIMEOUT_S} s"
                          ) from exc
    if done.returncode != 0:
        raise SizingError((done.stderr.strip().splitlines() or ["no output"])[-1])
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return Sizing(found["load_bytes"], found["peak_bytes"], found["shape"], rows is not None)


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise SizingError(f"/proc/self/status has no {field}")


def _measuring_process(version_dir: Path, rows: Path | None) -> dict[str, Any]:
    """The measuring process's work (see the module's docstring); run in a fresh process only:
    VmHWM is the process's own."""
    import numpy as np
    from model_api.datatypes import BYTES, numpy_dtype
    from model_api.model import IN_PLACE, LoadedModel, ModelLoadError

    baseline = _status("VmRSS")
    try:
        loaded = LoadedModel.load(version_dir, weights_mode=IN_PLACE)
    except ModelLoadError as exc:
        raise SizingError(f"cannot load it: {exc}") from exc
    load_bytes = _status("VmHWM") - baseline
    if rows is not None:
        with np.load(rows, allow_pickle=False) as given:
            inputs = {spec.name: given[spec.name] for spec in loaded.manifest.inputs
                      if spec.name in given.files}
        missing = [spec.name for spec in loaded.manifest.inputs if spec.name not in inputs]
        if missing:
            raise SizingError(f"the sizing rows {rows} have no array for input(s) {missing}")
        inputs = {spec.name: inputs[spec.name].astype(numpy_dtype(spec.datatype))
                  for spec in loaded.manifest.inputs}
    else:
        inputs = {spec.name: (np.full(default_shape(spec.shape), "a", dtype=object)
                              if spec.datatype == BYTES else
                              np.ones(default_shape(spec.shape), numpy_dtype(spec.datatype)))
                  for spec in loaded.manifest.inputs}
    try:
        loaded.run(inputs, [spec.name for spec in loaded.manifest.outputs])
    except Exception as exc:  # onnxruntime's errors derive from Exception only
        raise SizingError(f"the sizing request failed: {exc}") from exc
    return {"load_bytes": load_bytes, "peak_bytes": _status("VmHWM") - baseline,
            "shape": {name: list(array.shape) for name, array in inputs.items()}}


if __name__ == "__main__":
    try:
        print(json.dumps(_measuring_process(
            Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)))
    except SizingError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
