"""A candidate measured against its parent: the manifest's metric on the held-back and whole
rows, agreement of the outputs, file size and latency, then judged by the gate."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
from model_api.manifest import Manifest

from model_export.export import Split, metrics
from model_registry import add
from model_registry.add import AddError
from model_registry.optimize.data import Dataset, OptimizeError, Rows
from model_registry.optimize.gate import Gate, judge
from model_registry.optimize.result import ROW_COUNTS, Result, first_line
from model_registry.optimize.timing import Timing, interleaved, serving_session


def outputs_of(session: ort.InferenceSession, inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Every output of one run, by name."""
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(inputs)), strict=True))


def predictions(task: str, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The output the metric reads, as model_export.export.metrics takes it: `label` (else the
    argmax of the first float [n, k] output) or `prediction` (else the first float output)."""
    floats = [v for v in outputs.values() if v.dtype.kind == "f"]
    if task == "classification":
        label = outputs.get("label")
        if label is None:
            scores = next((v for v in floats if v.ndim == 2), None)
            if scores is None:
                raise OptimizeError("no `label` output and no float [n, k] scores to argmax")
            label = scores.argmax(axis=1)
        return {"label": label}
    prediction = outputs.get("prediction")
    if prediction is None:
        if not floats:
            raise OptimizeError("no `prediction` output and no float output to read")
        prediction = floats[0]
    return {"prediction": prediction.reshape(len(prediction), -1)[:, 0]}


def measure_metrics(task: str | None, session: ort.InferenceSession,
                    data: Dataset) -> dict[str, dict[str, Any]]:
    """The manifest's metrics ("test", "full_dataset") of a session; {} without targets."""
    found: dict[str, dict[str, Any]] = {}
    for split, rows in (("test", data.test), ("full_dataset", data.full)):
        if task is None or rows is None or rows.targets is None:
            continue
        first = next(iter(rows.inputs.values()))
        outputs = predictions(task, outputs_of(session, rows.inputs))
        found[split] = metrics(task, Split(first, rows.targets), outputs)
    return found


def agreement(parent: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]
              ) -> dict[str, float]:
    """label_agreement (share of equal values over non-float outputs) and max_abs_diff (over
    float outputs, in the outputs' units)."""
    found: dict[str, float] = {}
    for name, want in parent.items():
        got = candidate[name]
        if want.dtype.kind == "f":
            diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)),
                                initial=0.0))
            found["max_abs_diff"] = max(found.get("max_abs_diff", 0.0), diff)
        else:
            share = float(np.mean(got == want)) if want.size else 1.0
            found["label_agreement"] = min(found.get("label_agreement", 1.0), share)
    return found


@dataclass(frozen=True)
class Parent:
    """The version being optimised, loaded and measured once for every candidate."""

    manifest: Manifest
    model_bytes: bytes
    session: ort.InferenceSession  # with the serving options, as the candidates'
    signature: dict[str, list[dict[str, Any]]]
    metrics: dict[str, dict[str, Any]]
    outputs: dict[str, np.ndarray]  # on the rows agreement is measured on
    control: dict[int, float] = field(default_factory=dict)  # latency ratio against itself

    @classmethod
    def load(cls, manifest: Manifest, model_bytes: bytes, data: Dataset,
             timing: Timing) -> Parent:
        """OptimizeError when the parent itself does not run on the rows."""
        try:
            session = serving_session(model_bytes, timing)
            signature = add.read_signature(model_bytes, "the parent")
            outputs = outputs_of(session, agreement_rows(data).inputs)
        except OptimizeError:
            raise
        except Exception as exc:  # onnxruntime's own types, AddError
            raise OptimizeError(f"the parent does not run on the rows: {first_line(exc)}"
                                ) from exc
        try:
            metrics = measure_metrics(manifest.task, session, data)
        except OptimizeError:
            raise
        except Exception as exc:  # scikit-learn's metrics: targets that do not fit the task
            raise OptimizeError(f"the parent's {manifest.task} metric cannot be measured on "
                                f"the rows' targets: {first_line(exc)} (are `targets` the "
                                "true labels or values, of the outputs' type?)") from exc
        return cls(manifest, model_bytes, session, signature, metrics, outputs)


def control(parent: Parent, data: Dataset, timing: Timing) -> dict[int, float]:
    """The parent timed against a second session of itself, as a candidate is: latency ratio
    by row count. Far from 1, the machine is too noisy for a speed-up of that size to count."""
    twin = serving_session(parent.model_bytes, timing)
    ratios = {}
    for count in ROW_COUNTS:
        parent_ms, twin_ms = interleaved(parent.session, twin, data.test.take(count), timing)
        ratios[count] = parent_ms / twin_ms
    return ratios


def agreement_rows(data: Dataset) -> Rows:
    """The rows a candidate's outputs are compared with the parent's on: all there are."""
    return data.full or data.test


def measure(result: Result, parent: Parent, data: Dataset, timing: Timing,
            gate: Gate) -> Result:
    """Fill in `result`'s figures against the parent, then the rules it fails."""
    assert result.model_bytes is not None
    try:
        if add.read_signature(result.model_bytes, result.method) != parent.signature:
            raise OptimizeError("its inputs or outputs differ from the parent's")
        candidate = serving_session(result.model_bytes, timing)
        result.metrics = measure_metrics(parent.manifest.task, candidate, data)
        result.parent_metrics = parent.metrics
        result.agreement = agreement(parent.outputs,
                                     outputs_of(candidate, agreement_rows(data).inputs))
    except (AddError, OptimizeError) as exc:
        result.error = f"refused: {first_line(exc)}"
        return result
    except Exception as exc:  # onnxruntime's own types: a candidate that cannot run
        result.error = f"does not run: {first_line(exc)}"
        return result
    result.size_ratio = len(parent.model_bytes) / len(result.model_bytes)
    for rows in ROW_COUNTS:
        result.latency_ms[rows] = interleaved(parent.session, candidate, data.test.take(rows),
                                              timing)
    result.failures = judge(result, parent.manifest.task, gate, parent.control)
    return result
