"""The explainers registry (model_api/explainers/): exactly the four methods, each module
declaring what it reads from the manifest, the options it takes and the tensors it adds, one
lookup to choose, and unknown methods refused at load. Synthetic manifests: no exported model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model_api.errors import BadRequest
from model_api.explainers import (
    EXPLAINERS,
    METHODS,
    MODULES,
    Explainer,
    ExplanationError,
    Options,
    load_explainer,
    output_specs,
)
from model_api.manifest import Manifest, TensorSpec

from model_export.explanation import BACKGROUND_FILE, background_section, encode_background

ROOT = Path(__file__).resolve().parents[2]
SERVING = ROOT / "layers" / "serving" / "python" / "model_api"
FOUR = ("linear", "kernel_shap", "occlusion", "token_ablation")


def manifest(inputs: tuple[TensorSpec, ...], section: dict[str, Any] | None) -> Manifest:
    return Manifest(name="m", version="1", platform="onnxruntime", model_file="model.onnx",
                    sha256="0" * 64, inputs=inputs,
                    outputs=(TensorSpec("probabilities", "FP32", (-1, 2)),),
                    extra={} if section is None else {"explanation": section})


TABULAR = (TensorSpec("features", "FP32", (-1, 3)),)
IMAGE = (TensorSpec("image", "FP32", (-1, 8, 8)),)
TEXT = (TensorSpec("text", "BYTES", (-1,)),)


def sections(tmp_path: Path) -> dict[str, tuple[tuple[TensorSpec, ...], dict[str, Any]]]:
    """A valid manifest section (and the inputs it fits) per method."""
    data = encode_background({"features": np.zeros((4, 3), np.float32)})
    (tmp_path / BACKGROUND_FILE).write_bytes(data)
    return {
        "linear": (TABULAR, {"method": "linear", "output": "probabilities",
                             "coefficients": [[1.0, 2.0, 3.0]] * 2, "means": [0.0, 0.0, 0.0]}),
        "kernel_shap": (TABULAR, background_section("probabilities", data)),
        "occlusion": (IMAGE, {"method": "occlusion", "output": "probabilities", "input": "image",
                              "spatial_axes": [0, 1], "patch": [2, 2], "stride": [1, 1],
                              "baseline": 0.0}),
        "token_ablation": (TEXT, {"method": "token_ablation", "output": "probabilities",
                                  "input": "text", "token_pattern": r"\w+"}),
    }


def test_the_registry_lists_exactly_the_four_methods() -> None:
    assert tuple(EXPLAINERS) == FOUR
    assert (*FOUR, "none") == METHODS
    assert [module.EXPLAINER for module in MODULES] == list(EXPLAINERS.values())
    for module in MODULES:
        assert module.__name__ == f"model_api.explainers.{module.EXPLAINER.method}"


@pytest.mark.parametrize("method", FOUR)
def test_each_method_declares_its_manifest_fields_options_and_outputs(
        method: str, tmp_path: Path) -> None:
    kind = EXPLAINERS[method]
    assert issubclass(kind, Explainer) and kind.method == method
    # Its own reading of the manifest and its own computation, not the base class's.
    assert "from_manifest" in vars(kind) and "_explain" in vars(kind)
    assert kind.manifest_fields and all(isinstance(f, str) for f in kind.manifest_fields)
    assert "target" in kind.options
    assert set(kind.options) <= set(Options.__struct_fields__)
    outputs = [name for name, _, _ in kind.per_input_outputs]
    assert outputs[0] == "attributions"
    # The declared fields are the ones its valid section carries (besides method and output),
    # and the codec's extra outputs are the declared ones.
    inputs, section = sections(tmp_path)[method]
    assert set(section) - {"method", "output"} <= set(kind.manifest_fields)
    loaded = load_explainer(manifest(inputs, section), tmp_path)
    assert type(loaded) is kind
    names = [spec.name for spec in output_specs(manifest(inputs, section))]
    assert names == [*outputs, "base_value", "target"]


def test_the_method_specific_declarations() -> None:
    assert EXPLAINERS["kernel_shap"].options == ("target", "samples")
    assert all(EXPLAINERS[m].options == ("target",) for m in FOUR if m != "kernel_shap")
    assert [name for name, _, _ in EXPLAINERS["token_ablation"].per_input_outputs] == [
        "attributions", "tokens"]
    assert EXPLAINERS["linear"].explains_every_input
    assert EXPLAINERS["kernel_shap"].explains_every_input
    assert "input" in EXPLAINERS["occlusion"].manifest_fields
    assert "background" in EXPLAINERS["kernel_shap"].manifest_fields


def test_an_unknown_method_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ExplanationError) as refused:
        load_explainer(manifest(TABULAR, {"method": "lime", "output": "probabilities"}),
                       tmp_path)
    assert str(refused.value) == ("explanation.method must be one of ('linear', 'kernel_shap', "
                                  "'occlusion', 'token_ablation', 'none')")


def test_an_option_a_method_does_not_take_is_refused_naming_the_methods_that_do(
        tmp_path: Path) -> None:
    inputs, section = sections(tmp_path)["linear"]
    explainer = load_explainer(manifest(inputs, section), tmp_path)
    with pytest.raises(BadRequest, match="parameter 'samples' applies to kernel_shap only; "
                                         "model 'm' is explained by linear"):
        explainer.explain(lambda x: np.zeros((len(x["features"]), 2)),
                          {"features": np.zeros((1, 3), np.float32)}, Options(samples=10))


def test_the_lambda_layer_holds_no_export_time_writers() -> None:
    for path in SERVING.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for writer in ("def encode_background", "def background_section", "BACKGROUND_FILE ="):
            assert writer not in text, f"{path.relative_to(ROOT)} defines {writer}"
