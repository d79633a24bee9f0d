"""Explanations of a model's answers (the `/explain` route): which inputs drove each row's output.

The method is chosen per model at export (or `make add-model`; model_export/explanation.py) and
written to the manifest's `explanation` object; this package reads it, checks it (and its
background file's sha256, like the model file's) and computes explanations with numpy and the
model's own onnxruntime session. No explainer library: `shap` pulls scipy, pandas and numba, far
too big for a Lambda layer, and each method is a few batched model runs and a little algebra.

Every method answers, per row: `attributions` (FP32, the input's shape without its batch
dimension), `base_value` (the explained output at the method's baseline) and `target` (the
class explained; 0 for a regression). The explained output is a float score output of the model
(`probabilities` for a classifier, the prediction of a regressor), named in the manifest.

One module per method (its docstring says what it computes and cites the paper), each
declaring on its Explainer subclass what it reads from the manifest, the request options it
takes and the tensors it adds (base.py says how): `linear`, `kernel_shap`, `occlusion`,
`token_ablation`. MODULES below is the registry; choosing a method is one lookup in EXPLAINERS.
The manifest's method `none` (base.Unavailable) means the model cannot be explained as
deployed; its `reason` says how to enable it.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from model_api.datatypes import is_float
from model_api.explainers import kernel_shap, linear, occlusion, token_ablation
from model_api.explainers.base import (
    NONE,
    Explainer,
    Explanation,
    ExplanationError,
    Options,
    Unavailable,
    request_options,
)
from model_api.manifest import Manifest, TensorSpec

__all__ = ["EXPLAINERS", "METHODS", "MODULES", "Explainer", "Explanation", "ExplanationError",
           "Options", "load_explainer", "output_specs", "request_options", "with_outputs"]

# The methods, in the order the manifest's error message lists them: a new method is a module
# defining EXPLAINER (an Explainer subclass), added here.
MODULES = (linear, kernel_shap, occlusion, token_ablation)
EXPLAINERS: dict[str, type[Explainer]] = {
    module.EXPLAINER.method: module.EXPLAINER for module in MODULES}
METHODS = (*EXPLAINERS, NONE)  # what the manifest's `explanation.method` may say


def output_specs(manifest: Manifest) -> tuple[TensorSpec, ...]:
    """The tensor specs of the outputs an explanation adds to `manifest`'s (for the codec):
    the method's `per_input_outputs` for each input it explains, then `base_value` FP32 [-1]
    and `target` INT64 [-1]. None for a model without explanations."""
    config = manifest.extra.get("explanation")
    if not isinstance(config, dict) or config.get("method") in (None, NONE):
        return ()
    method = config["method"]
    # An unknown method (refused at load) declares what the base class does.
    kind = EXPLAINERS.get(method, Explainer) if isinstance(method, str) else Explainer
    explained = [spec for spec in manifest.inputs
                 if kind.explains_every_input or spec.name == config.get("input")]
    single = len(explained) == 1
    specs = []
    for spec in explained:
        suffix = "" if single else f"_{spec.name}"
        for name, datatype, shape in kind.per_input_outputs:
            specs.append(TensorSpec(f"{name}{suffix}", datatype,
                                    spec.shape if shape is None else shape))
    specs.append(TensorSpec("base_value", "FP32", (-1,)))
    specs.append(TensorSpec("target", "INT64", (-1,)))
    return tuple(specs)


def with_outputs(manifest: Manifest) -> Manifest:
    """`manifest` with the explanation's outputs added: what an explain request is decoded
    and answered against (so `outputs` may name them, binary or not)."""
    return msgspec.structs.replace(manifest, outputs=manifest.outputs + output_specs(manifest))


def load_explainer(manifest: Manifest, version_dir: Path) -> Explainer:
    """The explainer the manifest's `explanation` object describes; `Unavailable` (a 404 on
    every explain request) when there is none. ExplanationError when the object is malformed
    or its background file is missing or fails its sha256 check: the version is then not
    served at all, as for a model file that fails its check."""
    config = manifest.extra.get("explanation")
    if config is None:
        return Unavailable(manifest, "its manifest has no 'explanation' (exported before "
                           "explanations existed): export it again, or add it again with "
                           "`make add-model`")
    if not isinstance(config, dict) or config.get("method") not in METHODS:
        raise ExplanationError(f"explanation.method must be one of {METHODS}")
    method = config["method"]
    if method == NONE:
        return Unavailable(manifest, str(config.get("reason") or "none was configured"))
    output = config.get("output")
    spec = manifest.output(output) if isinstance(output, str) else None
    if (not isinstance(output, str) or spec is None or not is_float(spec.datatype)
            or len(spec.shape) > 2):
        raise ExplanationError("explanation.output must name a float output of shape [-1] or "
                               "[-1, classes]")
    clashes = {s.name for s in output_specs(manifest)} & {s.name for s in manifest.outputs}
    if clashes:
        raise ExplanationError(f"the model has output(s) {sorted(clashes)}, which an "
                               "explanation's outputs would shadow")
    return EXPLAINERS[method].from_manifest(manifest, config, version_dir)
