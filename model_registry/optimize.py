"""Optimise a served model: build candidates with onnxruntime's and onnxslim's tools, measure
each against its parent in the same run, and publish the best one that passes the gate
(`make optimize MODEL=<name> [VERSION=<v>]`).

Candidates (METHODS), each from a well-kept tool rather than code of our own:

- `ort-offline`: onnxruntime's offline graph optimisation (`SessionOptions.optimized_model_filepath`
  at ORT_ENABLE_EXTENDED: ALL would add layout transformations tied to this machine's CPU).
- `onnxslim`: the onnxslim graph simplifier (constant folding, dead-node and redundancy removal).
- `dynamic-int8`: `onnxruntime.quantization.quantize_dynamic`, int8 weights, activations
  quantised at run time.
- `static-int8-qdq`: `quantize_static` in QDQ format (uint8 activations, int8 weights, the
  U8S8 form onnxruntime recommends on x86-64), MinMax ranges calibrated on the model's training
  rows through a `CalibrationDataReader`, after `quant_pre_process`.
- `fp16`: `onnxruntime.transformers.float16.convert_float_to_float16`, inputs and outputs kept
  float32. Published only when measured to help: many CPUs have no fp16 arithmetic, and
  onnxruntime then casts around every node.

Each candidate is timed against its parent, interleaved (parent, candidate, then candidate,
parent, ...), in `passes` passes of warm `session.run` calls at 1 and at 1,024 rows, with the
session options the serving library builds on Lambda (`model_api.model.session_options()` at
`lambda_memory_mb`); a latency is the median over passes of each pass's median. It is also
measured for file size, the manifest's metric on the held-back rows and on the whole dataset,
and agreement with the parent (label agreement, max |difference| of float outputs).

The gate (Gate): the metric may lose at most 0.5 percentage points (classification accuracy)
or 1 % relative (regression R² and MAE), on held-back rows and on the whole dataset; the
candidate must be at least 1.2x faster at 1 or at 1,024 rows, or at least 2x smaller; and
(added here) never more than 1.25x slower at either: without that, a quantised CNN 3x smaller
and 8x slower would pass on size (docs/performance.md). The best passing candidate (highest
geometric mean of its size and latency ratios) becomes the next version of the model, not
current: its file and manifest fields are kept in model_store/<name>/<version>/ and recorded
in models.yaml through model_registry.add, like an added model's file, so `make models`
imports the very bytes that were measured on a clean clone. Nothing passes: nothing is
published, and the table says which rule each candidate failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import onnx
import onnxruntime as ort
import onnxslim
from model_api.datatypes import NUMPY_DTYPES
from model_api.integrity import IntegrityError, read_verified
from model_api.manifest import MANIFEST_FILE, Manifest, ManifestError, load_manifest
from model_api.model import CPU, LAMBDA_MEMORY_VARIABLE, session_options
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.transformers import float16
from onnxruntime.transformers.onnx_model import OnnxModel

from model_export.artifact import canonical_bytes
from model_export.export import Split, metrics
from model_export.seeds import RECIPES
from model_registry import add, registry
from model_registry.add import AddError
from model_registry.registry import PROJECT, Project

FIELDS_FILE = "manifest-fields.json"
ROW_COUNTS = (1, 1024)
CALIBRATION_BATCH = 64  # rows per calibration run: memory stays small, ranges see every row
RANDOM_ROWS = 256  # synthetic rows for an added model without --rows (timing only)


class OptimizeError(ValueError):
    """The model or its rows cannot be optimised as asked; the message says why."""


@dataclass(frozen=True)
class Gate:
    """What a candidate must show to be published (defaults: issue 15's gate, plus slowdown)."""

    max_accuracy_loss_pp: float = 0.5  # percentage points of accuracy, held-back and whole
    max_relative_regression: float = 0.01  # R² lower or MAE higher by at most this fraction
    min_speedup: float = 1.2  # parent latency / candidate latency, at 1 or at 1,024 rows
    min_size_ratio: float = 2.0  # parent bytes / candidate bytes
    max_slowdown: float = 1.25  # candidate latency / parent latency, at 1 and at 1,024 rows
    # A speed-up counts only at a row count where the parent timed against a second session of
    # itself (the control) came out within this factor of 1: else the machine was too noisy.
    max_control_deviation: float = 1.1


@dataclass(frozen=True)
class Timing:
    """How latencies are measured: `passes` interleaved passes of about `pass_seconds` each."""

    passes: int = 7
    pass_seconds: float = 0.1
    max_runs: int = 2000  # session.run calls per pass at most
    lambda_memory_mb: int | None = 1024  # the session options of a function this size


@dataclass(frozen=True)
class Rows:
    """Model inputs by input name (the same number of rows each) and their true targets."""

    inputs: dict[str, np.ndarray]
    targets: np.ndarray | None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, count: int) -> dict[str, np.ndarray]:
        """`count` rows, repeating the rows from the start when there are fewer."""
        index = np.arange(count) % len(self)
        return {name: values[index] for name, values in self.inputs.items()}


@dataclass(frozen=True)
class Dataset:
    """The rows a model is optimised with: calibration (training) rows, held-back rows, and the
    whole dataset (None where unknown); `source` says where they come from."""

    calibration: dict[str, np.ndarray]
    test: Rows
    full: Rows | None
    source: str


@dataclass
class Result:
    """One candidate: its file, its figures against the parent, and the rules it failed."""

    method: str
    model_bytes: bytes | None = None
    error: str | None = None
    size_ratio: float = math.nan
    latency_ms: dict[int, tuple[float, float]] = field(default_factory=dict)  # rows: parent, cand
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # split: candidate's
    parent_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # the same run's
    agreement: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def latency_ratio(self, rows: int) -> float:
        """Parent latency / candidate latency at `rows` rows: above 1 is faster."""
        parent, candidate = self.latency_ms.get(rows, (math.nan, math.nan))
        return parent / candidate

    @property
    def metric_delta(self) -> dict[str, dict[str, float]]:
        """Candidate minus parent, per split and metric (no row counts)."""
        return {split: {key: value - self.parent_metrics[split][key]
                        for key, value in found.items() if key != "rows"}
                for split, found in self.metrics.items()}

    def relative_change(self, split: str, key: str) -> float:
        """(candidate - parent) / |parent| of one metric: R² and MAE are judged this way."""
        parent = self.parent_metrics[split][key]
        return (self.metrics[split][key] - parent) / abs(parent) if parent else math.inf

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failures

    @property
    def score(self) -> float:
        """Geometric mean of the size and latency ratios: which passing candidate is best."""
        ratios = [self.size_ratio, *(self.latency_ratio(rows) for rows in ROW_COUNTS)]
        return math.prod(ratios) ** (1 / len(ratios))


# ---- candidates ---------------------------------------------------------------------------

class RowsReader(CalibrationDataReader):
    """Feeds rows to onnxruntime's calibrator, CALIBRATION_BATCH rows per run."""

    def __init__(self, inputs: Mapping[str, np.ndarray]) -> None:
        self.inputs = dict(inputs)
        self.rows = len(next(iter(self.inputs.values())))
        self.start = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.start >= self.rows:
            return None
        stop = self.start + CALIBRATION_BATCH
        batch = {name: values[self.start:stop] for name, values in self.inputs.items()}
        self.start = stop
        return batch

    def rewind(self) -> None:
        self.start = 0


# Keeps the quantiser going past operators whose output type it cannot infer (string and
# ai.onnx.ml operators: text-topics' TF-IDF), instead of stopping.
QUANT_OPTIONS = {"DefaultTensorType": onnx.TensorProto.FLOAT}
# float16's own list plus TfIdfVectorizer, which has no float16 kernel in onnxruntime.
FP16_BLOCKED = [*float16.DEFAULT_OP_BLOCK_LIST, "TfIdfVectorizer"]


# Each method takes the parent's bytes, its rows and a scratch folder; returns the candidate's.

def ort_offline(model: bytes, data: Dataset, work: Path) -> bytes:
    """The graph onnxruntime runs after its EXTENDED optimisations (fusions), saved."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(work / "offline.onnx")
    ort.InferenceSession(model, sess_options=options, providers=list(CPU))
    return (work / "offline.onnx").read_bytes()


def slim(model: bytes, data: Dataset, work: Path) -> bytes:
    """onnxslim's simplified graph."""
    return canonical_bytes(onnxslim.slim(onnx.load_from_string(model)))


def dynamic_int8(model: bytes, data: Dataset, work: Path) -> bytes:
    """Int8 weights; activations quantised per run from their observed range."""
    quantize_dynamic(onnx.load_from_string(model), work / "dynamic.onnx",
                     weight_type=QuantType.QInt8, extra_options=QUANT_OPTIONS)
    return (work / "dynamic.onnx").read_bytes()


def static_int8_qdq(model: bytes, data: Dataset, work: Path) -> bytes:
    """QuantizeLinear/DequantizeLinear pairs with ranges calibrated on `data.calibration`."""
    # Without quant_pre_process: on breast-cancer-mlp it left the activations unquantised
    # (int8 weights only) and the model 1.6x slower at 1,024 rows instead of 1.5x faster.
    quantize_static(onnx.load_from_string(model), work / "qdq.onnx",
                    RowsReader(data.calibration),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    extra_options=QUANT_OPTIONS)
    return (work / "qdq.onnx").read_bytes()


def fp16(model: bytes, data: Dataset, work: Path) -> bytes:
    """float16 weights and arithmetic inside; float32 inputs and outputs as before."""
    converted = OnnxModel(float16.convert_float_to_float16(
        onnx.load_from_string(model), keep_io_types=True, op_block_list=FP16_BLOCKED))
    converted.topological_sort()  # the converter appends its input casts after their users
    return canonical_bytes(converted.model)


METHODS: dict[str, Callable[[bytes, Dataset, Path], bytes]] = {
    "ort-offline": ort_offline,
    "onnxslim": slim,
    "dynamic-int8": dynamic_int8,
    "static-int8-qdq": static_int8_qdq,
    "fp16": fp16,
}
TOOLS = {
    "ort-offline": f"onnxruntime {ort.__version__} offline graph optimisation (EXTENDED)",
    "onnxslim": f"onnxslim {onnxslim.__version__}",
    "dynamic-int8": f"onnxruntime {ort.__version__} quantize_dynamic (int8 weights)",
    "static-int8-qdq": f"onnxruntime {ort.__version__} quantize_static QDQ U8S8, MinMax",
    "fp16": f"onnxruntime {ort.__version__} float16.convert_float_to_float16 (float32 I/O)",
}


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the tools' advice printed through logging and warnings while they build."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def first_line(exc: BaseException) -> str:
    """An exception's message on one line, at most 160 characters, for a table cell."""
    return " ".join((str(exc) or repr(exc)).split())[:160]


def build(method: str, model: bytes, data: Dataset) -> Result:
    """Run one method on the parent's bytes; a tool's failure is the Result's error."""
    result = Result(method)
    with tempfile.TemporaryDirectory(prefix=f"optimize-{method}-") as folder, quiet():
        try:
            result.model_bytes = METHODS[method](model, data, Path(folder))
        except Exception as exc:  # each tool raises its own types
            result.error = f"build failed: {first_line(exc)}"
    return result


# ---- measuring ----------------------------------------------------------------------------

@contextmanager
def lambda_memory(memory_mb: int | None) -> Iterator[None]:
    """The environment Lambda's runtime sets for a function of `memory_mb` MB (None: unset)."""
    before = os.environ.get(LAMBDA_MEMORY_VARIABLE)
    if memory_mb is None:
        os.environ.pop(LAMBDA_MEMORY_VARIABLE, None)
    else:
        os.environ[LAMBDA_MEMORY_VARIABLE] = str(memory_mb)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(LAMBDA_MEMORY_VARIABLE, None)
        else:
            os.environ[LAMBDA_MEMORY_VARIABLE] = before


def serving_session(model: bytes, timing: Timing) -> ort.InferenceSession:
    """A session with the serving library's options, as a function of the timed size has."""
    with lambda_memory(timing.lambda_memory_mb):
        options = session_options()
    return ort.InferenceSession(model, sess_options=options, providers=list(CPU))


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


def run_seconds(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> float:
    """Seconds of one session.run."""
    started = time.perf_counter()
    session.run(None, feeds)
    return time.perf_counter() - started


def interleaved(parent: ort.InferenceSession, candidate: ort.InferenceSession,
                feeds: Mapping[str, np.ndarray], timing: Timing) -> tuple[float, float]:
    """Median latencies in ms (parent, candidate) over `timing.passes` passes, each pass's
    figure the median of its runs. Within a pass the two take turns run by run (parent first
    in even runs, candidate first in odd ones), so load from other processes, which comes and
    goes over milliseconds on a shared machine, falls on both alike."""
    feeds = dict(feeds)
    for _ in range(3):  # warm: the first runs allocate
        run_seconds(parent, feeds), run_seconds(candidate, feeds)
    single = max(statistics.median(run_seconds(parent, feeds) for _ in range(3)), 1e-7)
    runs = max(3, min(timing.max_runs, int(timing.pass_seconds / single / 2)))
    passes: tuple[list[float], list[float]] = ([], [])
    for _ in range(timing.passes):
        times: tuple[list[float], list[float]] = ([], [])
        for number in range(runs):
            for which in ((0, 1) if number % 2 == 0 else (1, 0)):
                times[which].append(run_seconds((parent, candidate)[which], feeds))
        for which in (0, 1):
            passes[which].append(statistics.median(times[which]))
    return statistics.median(passes[0]) * 1e3, statistics.median(passes[1]) * 1e3


def judge(result: Result, task: str | None, gate: Gate,
          control: Mapping[int, float] | None = None) -> list[str]:
    """The rules `result` fails (empty: it passes); each names the figure and the threshold.
    `control`: the parent's latency ratio against itself by row count (1.0 when absent)."""
    failures = []
    if not result.metric_delta:
        failures.append("metric: not measured (no rows with targets; give --rows)")
    for split, deltas in result.metric_delta.items():
        if task == "classification":
            loss = -deltas["accuracy"] * 100
            if not loss <= gate.max_accuracy_loss_pp:
                failures.append(f"metric: accuracy {-loss:+.2f} pp on {split} "
                                f"(loss > {gate.max_accuracy_loss_pp} pp)")
        else:  # R² lower or MAE higher is worse
            worse = {"r2": -result.relative_change(split, "r2"),
                     "mae": result.relative_change(split, "mae")}
            for key, change in worse.items():
                if not change <= gate.max_relative_regression:
                    failures.append(f"metric: {key} {change:+.1%} worse on {split} "
                                    f"(> {gate.max_relative_regression:.0%})")
    speedups = [result.latency_ratio(rows) for rows in ROW_COUNTS]
    noisy = {rows: ratio for rows, ratio in (control or {}).items()
             if not 1 / gate.max_control_deviation <= ratio <= gate.max_control_deviation}
    faster = any(speedup >= gate.min_speedup and rows not in noisy
                 for rows, speedup in zip(ROW_COUNTS, speedups, strict=True))
    if not (faster or result.size_ratio >= gate.min_size_ratio):
        uncounted = "".join(f"; not counted at {rows:,} rows: the parent timed {ratio:.2f}x "
                            "against itself" for rows, ratio in sorted(noisy.items()))
        failures.append(f"benefit: {speedups[0]:.2f}x/{speedups[1]:.2f}x faster at "
                        f"{ROW_COUNTS[0]}/{ROW_COUNTS[1]:,} rows, {result.size_ratio:.2f}x "
                        f"smaller (needs >= {gate.min_speedup}x faster or "
                        f">= {gate.min_size_ratio}x smaller{uncounted})")
    for rows, speedup in zip(ROW_COUNTS, speedups, strict=True):
        if not speedup >= 1 / gate.max_slowdown:
            failures.append(f"slower: {1 / speedup:.2f}x the parent's time at {rows:,} "
                            f"row{'s' if rows > 1 else ''} "
                            f"(> {gate.max_slowdown}x)")
    return failures


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
            return cls(manifest, model_bytes, session,
                       add.read_signature(model_bytes, "the parent"),
                       measure_metrics(manifest.task, session, data),
                       outputs_of(session, agreement_rows(data).inputs))
        except OptimizeError:
            raise
        except Exception as exc:  # onnxruntime's own types, AddError
            raise OptimizeError(f"the parent does not run on the rows: {first_line(exc)}"
                                ) from exc


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


# ---- the table ----------------------------------------------------------------------------

COLUMNS = ("method", "size KB", "smaller", "1 row ms", "faster", "1,024 rows ms", "faster",
           "Δ test", "Δ whole", "agree", "max|Δ|", "verdict")
WIDTHS = (15, 7, 7, 15, 6, 13, 6, 20, 20, 7, 7, 0)


def table_row(cells: tuple[str, ...]) -> str:
    """One Markdown table row, padded to WIDTHS."""
    return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, WIDTHS, strict=True)) + " |"


def table_header() -> str:
    """The table's header and rule lines."""
    rule = "|" + "|".join("-" * (w + 2) for w in WIDTHS[:-1]) + "|---------|"
    return table_row(COLUMNS) + "\n" + rule


def delta_text(result: Result, task: str | None, split: str) -> str:
    """A metric change for the table: pp of accuracy, or % relative for R² and MAE."""
    deltas = result.metric_delta.get(split)
    if not deltas:
        return "-"
    if task == "classification":
        return f"{deltas['accuracy'] * 100:+.2f} pp"
    return " ".join(f"{key} {result.relative_change(split, key):+.2%}" for key in deltas)


def describe(result: Result, task: str | None) -> str:
    """The result as one row of the table."""
    if result.model_bytes is None or not result.latency_ms:
        size = f"{len(result.model_bytes) / 1024:.1f}" if result.model_bytes else "-"
        return table_row((result.method, size, *["-"] * 9, f"FAIL {result.error}"))
    (p1, c1), (pk, ck) = result.latency_ms[1], result.latency_ms[1024]
    verdict = "PASS" if result.passed else "FAIL " + "; ".join(result.failures)
    agree = result.agreement.get("label_agreement")
    return table_row((
        result.method, f"{len(result.model_bytes) / 1024:.1f}", f"{result.size_ratio:.2f}x",
        f"{c1:.4f}/{p1:.4f}", f"{result.latency_ratio(1):.2f}x",
        f"{ck:.3f}/{pk:.3f}", f"{result.latency_ratio(1024):.2f}x",
        delta_text(result, task, "test"), delta_text(result, task, "full_dataset"),
        "-" if agree is None else f"{agree:.1%}",
        f"{result.agreement.get('max_abs_diff', 0):.2g}", verdict))


# ---- the rows a model is measured on ------------------------------------------------------

def seed_dataset(name: str, version: str, manifest: Manifest) -> Dataset | None:
    """A seed version's rows from its recipe (split as it was trained; for a version optimised
    from a trained one, that one's recipe), or None if it has none."""
    parent = manifest.extra.get("optimization", {}).get("parent_version")
    recipe = RECIPES.get((name, version)) or RECIPES.get((name, str(parent)))
    if recipe is None:
        return None
    splits = recipe.splits()
    (spec,) = manifest.inputs  # every seed model has one input
    return Dataset(calibration={spec.name: splits.train.x},
                   test=Rows({spec.name: splits.test.x}, splits.test.y),
                   full=Rows({spec.name: splits.full.x}, splits.full.y),
                   source=f"model_export's {name} recipe: calibrated on its "
                          f"{len(splits.train.y)} training rows")


def file_dataset(path: Path, manifest: Manifest) -> Dataset:
    """Rows from an .npz of arrays named after the model's inputs, and optionally `targets`."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        raise OptimizeError(f"cannot read rows from {path}: {exc}") from exc
    names = [spec.name for spec in manifest.inputs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise OptimizeError(f"{path} has no array for inputs {missing} (it has {sorted(arrays)})")
    inputs = {spec.name: arrays[spec.name].astype(NUMPY_DTYPES[spec.datatype])
              for spec in manifest.inputs}
    targets = arrays.get("targets")
    counts = {len(v) for v in (*inputs.values(), *([targets] if targets is not None else []))}
    if len(counts) != 1 or 0 in counts:
        raise OptimizeError(f"{path}: every array needs the same number of rows, at least one")
    rows = Rows(inputs, targets)
    return Dataset(calibration=inputs, test=rows, full=None,
                   source=f"{path} ({len(rows)} rows; calibration on the same rows)")


def random_dataset(manifest: Manifest) -> Dataset:
    """Standard normal rows for a numeric-input model without rows: timing and size only."""
    generator = np.random.default_rng(0)
    inputs = {}
    for spec in manifest.inputs:
        if spec.datatype == "BYTES":
            raise OptimizeError(f"input {spec.name!r} is BYTES: give --rows with real rows")
        shape = [RANDOM_ROWS, *(d if d > 0 else 1 for d in spec.shape[1:])]
        inputs[spec.name] = generator.standard_normal(shape).astype(
            NUMPY_DTYPES[spec.datatype])
    rows = Rows(inputs, None)
    return Dataset(calibration=inputs, test=rows, full=None,
                   source=f"{RANDOM_ROWS} standard-normal rows (no --rows: nothing to publish)")


# ---- the step -----------------------------------------------------------------------------

@dataclass
class Outcome:
    """What a run of the step measured and, where a candidate passed, what it published."""

    name: str
    parent: Manifest
    results: list[Result]
    published: str | None = None  # the new version
    best: Result | None = None


def optimize(name: str, version: str | None = None, rows: Path | None = None,
             methods: tuple[str, ...] = tuple(METHODS), timing: Timing = Timing(),
             gate: Gate = Gate(), publish: bool = True, task: str | None = None,
             project: Project = PROJECT, out: TextIO = sys.stdout) -> Outcome:
    """Build, measure and judge each method on `name` `version` (default: current); publish the
    best passing candidate as a new version unless `publish` is False. The table goes to `out`
    row by row; OptimizeError (or AddError when publishing) says why the step cannot run."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise OptimizeError(f"unknown methods {unknown}; known: {list(METHODS)}")
    entries = {e.name: e for e in registry.load(project.registry)}
    entry = entries.get(name)
    if entry is None:
        raise OptimizeError(f"no model {name!r} in {project.registry.name} "
                            f"(known: {sorted(entries)})")
    models_dir = project.models_dir
    version = version or entry.current
    if version not in entry.versions:
        raise OptimizeError(f"{name} has no version {version!r} (versions {entry.versions})")
    try:
        parent = load_manifest(models_dir / name / version / MANIFEST_FILE)
        parent_bytes = read_verified(models_dir / name / version / parent.model_file,
                                     parent.sha256)
    except (ManifestError, OSError, IntegrityError):
        raise OptimizeError(f"{models_dir / name / version} is missing or fails its sha256 "
                            "check: run `make models`") from None
    if task is not None and parent.task is None:
        parent = replace(parent, task=task)
    data = (file_dataset(rows, parent) if rows is not None
            else seed_dataset(name, version, parent) or random_dataset(parent))
    if parent.task is None and data.test.targets is not None:
        raise OptimizeError(f"{name} {version} has no task in its manifest: give --task "
                            "classification or regression to measure its metric")
    reference = Parent.load(parent, parent_bytes, data, timing)
    reference = replace(reference, control=control(reference, data, timing))
    print(f"optimize {name} version {version} ({len(parent_bytes) / 1024:.1f} KB): rows from "
          f"{data.source}; {timing.passes} interleaved passes, session options of a "
          f"{timing.lambda_memory_mb or 'non-Lambda'} MB function; load average "
          f"{load_average()} on {os.cpu_count()} CPUs", file=out, flush=True)
    print(table_header(), file=out, flush=True)
    print(table_row(("parent itself", f"{len(parent_bytes) / 1024:.1f}", "", "", "",
                     "", "", "", "", "", "", "control: "
                     + ", ".join(f"{r:.2f}x at {rows:,} row{'s' if rows > 1 else ''}"
                                 for rows, r in reference.control.items())
                     + " against a second session of itself")), file=out, flush=True)
    results = []
    for method in methods:
        result = build(method, parent_bytes, data)
        if result.error is None:
            measure(result, reference, data, timing, gate)
        results.append(result)
        print(describe(result, parent.task), file=out, flush=True)
    outcome = Outcome(name, parent, results)
    passing = [r for r in results if r.passed]
    if not passing:
        print("no candidate passed the gate: nothing published", file=out, flush=True)
        return outcome
    outcome.best = max(passing, key=lambda r: r.score)
    if not publish:
        print(f"best: {outcome.best.method} (not published: dry run)", file=out, flush=True)
        return outcome
    outcome.published = publish_version(entry, reference, outcome.best, data, timing, project)
    print(f"published {name} version {outcome.published} ({outcome.best.method}), not current: "
          f"serve it at /v2/models/{name}/versions/{outcome.published}", file=out, flush=True)
    return outcome


def load_average() -> list[float]:
    """The machine's 1, 5 and 15-minute load averages: how busy it was while timing."""
    return [round(load, 2) for load in os.getloadavg()]


def manifest_fields(reference: Parent, best: Result, timing: Timing,
                    data: Dataset) -> dict[str, Any]:
    """The new version's manifest fields: the parent's description of the task and data, the
    candidate's own measured metrics, and the `optimization` section."""
    parent = reference.manifest
    fields: dict[str, Any] = {}
    if parent.labels is not None:
        fields["labels"] = list(parent.labels)
    if parent.task is not None:
        fields["task"] = parent.task
    if best.metrics:
        fields["metrics"] = best.metrics
    fields["description"] = (f"{parent.description or parent.name} Optimised by "
                             f"`make optimize` ({best.method}) from version {parent.version}.")
    if "training" in parent.extra:  # less the fingerprint: this version is not trained
        fields["training"] = {k: v for k, v in parent.extra["training"].items()
                              if k != "fingerprint"}
    with lambda_memory(timing.lambda_memory_mb):
        threads = session_options().intra_op_num_threads
    fields["optimization"] = {
        "method": best.method,
        "tool": TOOLS[best.method],
        "parent_version": parent.version,
        "parent_sha256": parent.sha256,
        "metric_delta": best.metric_delta,
        "size_ratio": round(best.size_ratio, 4),
        "latency_ratio_1": round(best.latency_ratio(1), 4),
        "latency_ratio_1024": round(best.latency_ratio(1024), 4),
        "latency_ms": {str(rows): {"parent": round(p, 5), "optimized": round(c, 5)}
                       for rows, (p, c) in best.latency_ms.items()},
        "agreement": best.agreement,
        "measured": {"rows": data.source, "passes": timing.passes,
                     "lambda_memory_mb": timing.lambda_memory_mb, "intra_op_threads": threads,
                     "machine": f"{platform.machine()} {platform.processor()}".strip(),
                     "cpus": os.cpu_count(), "load_average": load_average(),
                     "control_ratio_1": round(reference.control[1], 4),
                     "control_ratio_1024": round(reference.control[1024], 4)},
    }
    return fields


def publish_version(entry: registry.ModelEntry, parent: Parent, best: Result, data: Dataset,
                    timing: Timing, project: Project) -> str:
    """Add the candidate as the model's next version (not current) with model_registry.add,
    its measured manifest fields with it: add-model keeps both in model_store/ and renders the
    template, events and OpenAPI in one atomic change. The version."""
    assert best.model_bytes is not None
    version = add.next_version(entry)
    with tempfile.TemporaryDirectory(prefix="optimized-") as work:
        folder = Path(work)
        (folder / "model.onnx").write_bytes(best.model_bytes)
        (folder / FIELDS_FILE).write_text(
            json.dumps(manifest_fields(parent, best, timing, data), indent=2) + "\n")
        add.add(entry.name, folder / "model.onnx", version, fields=folder / FIELDS_FILE,
                project=project)
    return version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="name in models.yaml")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", help="version to optimise (default: current)")
    which.add_argument("--newest", action="store_true",
                       help="optimise the version listed last (what add-model just added)")
    parser.add_argument("--rows", type=Path,
                        help="an added model's rows: .npz with one array per input name and "
                             "`targets` (held-back rows; also used to calibrate)")
    parser.add_argument("--task", choices=("classification", "regression"),
                        help="for an added model whose manifest has no task")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, from {','.join(METHODS)}")
    parser.add_argument("--passes", type=int, default=Timing.passes)
    parser.add_argument("--pass-seconds", type=float, default=Timing.pass_seconds)
    parser.add_argument("--lambda-memory-mb", type=int, default=Timing.lambda_memory_mb,
                        help="time with the session options of a function this size "
                             "(0: the options outside Lambda)")
    parser.add_argument("--dry-run", action="store_true", help="measure, publish nothing")
    args = parser.parse_args(argv)
    version = args.version
    if args.newest:
        entry = next((e for e in registry.load() if e.name == args.model), None)
        version = entry.versions[-1] if entry else None
    timing = Timing(passes=args.passes, pass_seconds=args.pass_seconds,
                    lambda_memory_mb=args.lambda_memory_mb or None)
    try:
        optimize(args.model, version, args.rows, tuple(args.methods.split(",")), timing,
                 publish=not args.dry_run, task=args.task)
    except (OptimizeError, AddError) as exc:
        print(f"optimize refused: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
