"""Check an exported graph before it is written: ONNX validity, the promised signature, parity.

Parity compares onnxruntime's outputs with the training framework's own predictions on the
held-back rows; any drift beyond the tolerance stops the export (ParityError), never a warning.
A text model's parity is also checked on texts beyond ASCII (`unicode_parity`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from model_export.artifact import signature
from model_export.text import UNICODE_TEXTS


class ParityError(AssertionError):
    """The ONNX graph does not reproduce the framework's predictions (or its signature)."""


@dataclass(frozen=True)
class Tolerance:
    """How close an output must be: "exact" (labels), "abs" or "rel" (max difference)."""

    kind: str
    value: float = 0.0


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def check_graph(model: onnx.ModelProto,
                expected: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """onnx.checker plus: the graph's inputs and outputs are exactly the promised ones."""
    onnx.checker.check_model(model, full_check=True)
    found = signature(model)
    if found != expected:
        raise ParityError(f"graph signature {found} is not the promised {dict(expected)}")


def compare(onnx_outputs: Mapping[str, np.ndarray], framework: Mapping[str, np.ndarray],
            tolerances: Mapping[str, Tolerance]) -> dict[str, Any]:
    """Compare each output against the framework's; the parity record for the manifest."""
    record: dict[str, Any] = {"rows": len(next(iter(framework.values())))}
    for name, tolerance in tolerances.items():
        got, want = onnx_outputs[name], framework[name]
        if got.shape != want.shape:
            raise ParityError(f"{name}: onnx shape {got.shape} != framework shape {want.shape}")
        if tolerance.kind == "exact":
            differing = int(np.sum(got != want))
            if differing:
                raise ParityError(
                    f"{name}: {differing} of {len(want)} rows differ from the framework")
            record["labels_equal"] = True
            continue
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        if tolerance.kind == "rel":
            diff = diff / np.maximum(np.abs(want.astype(np.float64)), 1e-12)
        worst = float(diff.max())
        if not worst <= tolerance.value:  # also catches NaN
            raise ParityError(f"{name}: max {tolerance.kind} diff {worst:.3g} exceeds "
                              f"{tolerance.value:g}")
        record.setdefault(f"max_{tolerance.kind}_diff", {})[name] = worst
    return record


def unicode_parity(run: ort.InferenceSession, input_name: str,
                   predict: Callable[[np.ndarray], Mapping[str, np.ndarray]] | None,
                   tolerances: Mapping[str, Tolerance]) -> dict[str, Any]:
    """Parity of a text model on `model_export.text.UNICODE_TEXTS` (accents, German, Chinese,
    emoji, ...): `predict` is the framework's own prediction. ParityError if it differs, or if
    a text model gives no `predict` (its tokenising could not be checked)."""
    if predict is None:
        raise ParityError("a text model needs the framework's predict to check its parity on "
                          "texts beyond ASCII (Trained.predict)")
    texts = np.array(UNICODE_TEXTS, dtype=object)
    outputs = dict(zip([o.name for o in run.get_outputs()], run.run(None, {input_name: texts}),
                       strict=True))
    try:
        return compare(outputs, predict(texts), tolerances)
    except ParityError as error:
        raise ParityError(f"on texts beyond ASCII: {error}") from None
