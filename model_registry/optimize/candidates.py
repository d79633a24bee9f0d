"""The candidates: each METHOD builds an optimised model from the parent's bytes with a
well-kept tool (onnxruntime's offline optimiser and quantisers, onnxslim, float16)."""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import onnxslim
from model_api.model import CPU
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
from model_registry.optimize.data import Dataset
from model_registry.optimize.result import Result, first_line

CALIBRATION_BATCH = 64  # rows per calibration run: memory stays small, ranges see every row


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


def loaded(model: bytes) -> onnx.ModelProto:
    """The parent's graph as the tools are given it: one opset import per domain, the highest
    version of each. skl2onnx writes the default domain twice for some estimators (a
    LogisticRegression's graph: `('ai.onnx.ml', 1), ('', 18), ('', 18)`), which onnxruntime
    runs but its quantiser refuses ("Failed to find proper ai.onnx domain")."""
    proto = onnx.load_from_string(model)
    versions: dict[str, int] = {}
    for entry in proto.opset_import:
        versions[entry.domain] = max(versions.get(entry.domain, 0), entry.version)
    if len(versions) != len(proto.opset_import):
        del proto.opset_import[:]
        proto.opset_import.extend(onnx.helper.make_opsetid(domain, version)
                                  for domain, version in versions.items())
    return proto


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
    return canonical_bytes(onnxslim.slim(loaded(model)))


def dynamic_int8(model: bytes, data: Dataset, work: Path) -> bytes:
    """Int8 weights; activations quantised per run from their observed range."""
    quantize_dynamic(loaded(model), work / "dynamic.onnx",
                     weight_type=QuantType.QInt8, extra_options=QUANT_OPTIONS)
    return (work / "dynamic.onnx").read_bytes()


def static_int8_qdq(model: bytes, data: Dataset, work: Path) -> bytes:
    """QuantizeLinear/DequantizeLinear pairs with ranges calibrated on `data.calibration`."""
    # Without quant_pre_process: on breast-cancer-mlp it left the activations unquantised
    # (int8 weights only) and the model 1.6x slower at 1,024 rows instead of 1.5x faster.
    quantize_static(loaded(model), work / "qdq.onnx",
                    RowsReader(data.calibration),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    extra_options=QUANT_OPTIONS)
    return (work / "qdq.onnx").read_bytes()


def fp16(model: bytes, data: Dataset, work: Path) -> bytes:
    """float16 weights and arithmetic inside; float32 inputs and outputs as before."""
    converted = OnnxModel(float16.convert_float_to_float16(
        loaded(model), keep_io_types=True, op_block_list=FP16_BLOCKED))
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


def build(method: str, model: bytes, data: Dataset) -> Result:
    """Run one method on the parent's bytes; a tool's failure is the Result's error."""
    result = Result(method)
    with tempfile.TemporaryDirectory(prefix=f"optimize-{method}-") as folder, quiet():
        try:
            result.model_bytes = METHODS[method](model, data, Path(folder))
        except Exception as exc:  # each tool raises its own types
            result.error = f"build failed: {first_line(exc)}"
    return result
