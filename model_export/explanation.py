"""Choose a model's explanation method at export or add-model, from its graph and signature.

The manifest's `explanation` object (read by model_api/explainers/, whose modules document the
methods) is written here, once per version, so the serving side never guesses:
- a linear model whose exporter gives its coefficients and the training means: `linear`;
- one BYTES input (shape [-1] or [-1, 1]): `token_ablation`, with the tokenizer pattern read
  from the graph's ONNX Tokenizer node (`tokenexp`) when it has one, else token_ablation.py's
  DEFAULT_TOKEN_PATTERN (stated in the manifest as `tokenizer: "default"`);
- one float input of rank 3 or 4 with fixed spatial dimensions: `occlusion`, patches of a
  quarter of the image's shorter side, stride half a patch;
- numeric inputs of rank 2 (tabular) with background rows: `kernel_shap`, the rows shipped as
  BACKGROUND_FILE with their sha256 in the manifest; without background rows: `none`, whose
  reason tells how to give some;
- anything else: `none`, with the reason.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from model_api.datatypes import BYTES, FLOATS, NUMERIC
from model_api.explainers.base import NONE
from model_api.explainers.kernel_shap import KERNEL_SHAP
from model_api.explainers.linear import LINEAR
from model_api.explainers.occlusion import OCCLUSION
from model_api.explainers.token_ablation import DEFAULT_TOKEN_PATTERN, TOKEN_ABLATION
from model_api.integrity import sha256_of

# Rows of a seed model's training data kept as its Kernel SHAP background: a seeded sample
# (shap.sample's way), small because every coalition is scored against each row.
SEED_BACKGROUND_ROWS = 16
BACKGROUND_FILE = "background.npz"  # Kernel SHAP's background rows, beside the model file


def enable_hint(name: str) -> str:
    return (f"a tabular model needs background rows for Kernel SHAP: add it again with "
            f"`make add-model NAME={name} ONNX=... BACKGROUND=rows.npy CURRENT=1` (1 to 100 "
            f"typical training rows; .npz with one array per input for several inputs; "
            f"CURRENT=1 makes the new version the one the unversioned routes explain; the same "
            f"file with VERSION=<its version> adds the rows to that version instead)")


def tokenizer_pattern(model: onnx.ModelProto) -> str | None:
    """The `tokenexp` of the graph's (first) ONNX Tokenizer node, or None if it has none."""
    for node in model.graph.node:
        if node.op_type == "Tokenizer":
            for attribute in node.attribute:
                if attribute.name == "tokenexp" and attribute.s:
                    return attribute.s.decode("utf-8")
    return None


def explained_output(outputs: Sequence[Mapping[str, Any]]) -> str | None:
    """The float score output to explain: `probabilities` if there is one, else the first
    float output of shape [-1] or [-1, n]."""
    scores = [o for o in outputs if o["datatype"] in FLOATS and len(o["shape"]) <= 2]
    named = [o for o in scores if o["name"] == "probabilities"]
    return (named or scores or [{"name": None}])[0]["name"]


def sample_background(rows: np.ndarray, count: int = SEED_BACKGROUND_ROWS,
                      seed: int = 0) -> np.ndarray:
    """`count` training rows drawn without replacement, seeded (all of them if fewer)."""
    if len(rows) <= count:
        return rows
    chosen = np.random.default_rng(seed).choice(len(rows), size=count, replace=False)
    return rows[np.sort(chosen)]


def choose(name: str, model: onnx.ModelProto, signature: Mapping[str, list[dict[str, Any]]],
           background: Mapping[str, np.ndarray] | None = None,
           linear: tuple[np.ndarray, np.ndarray] | None = None
           ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest's `explanation` object and the files to ship beside the model.

    `background` maps input names to training rows [K, *shape] (Kernel SHAP); `linear` gives
    (coefficients [classes or 1, *shape], means [*shape]) of a linear model, in FP64.
    """
    inputs, outputs = signature["inputs"], signature["outputs"]
    output = explained_output(outputs)
    if output is None:
        return {"method": NONE, "reason": "the model has no float score output (probabilities "
                                          "or a regression value) to explain"}, {}
    if linear is not None:
        coefficients, means = linear
        return {"method": LINEAR, "output": output,
                "coefficients": np.asarray(coefficients, dtype=np.float64).tolist(),
                "means": np.asarray(means, dtype=np.float64).tolist()}, {}
    texts = [i for i in inputs if i["datatype"] == BYTES]
    if len(inputs) == 1 and texts and len(texts[0]["shape"]) == 1 + (texts[0]["shape"][1:] == [1]):
        pattern = tokenizer_pattern(model)
        return {"method": TOKEN_ABLATION, "output": output, "input": texts[0]["name"],
                "token_pattern": pattern or DEFAULT_TOKEN_PATTERN,
                "tokenizer": "graph" if pattern else "default"}, {}
    if len(inputs) == 1 and inputs[0]["datatype"] in FLOATS and len(inputs[0]["shape"]) in (3, 4):
        section = _occlusion(inputs[0])
        if section is not None:
            return {"method": OCCLUSION, "output": output, **section}, {}
    if all(i["datatype"] in NUMERIC and len(i["shape"]) == 2 for i in inputs):
        if any(i["shape"][1] < 1 for i in inputs):
            return {"method": NONE, "reason": "its inputs have a variable-length axis (token "
                                              "ids, say): no method here explains one (Kernel "
                                              "SHAP needs a fixed number of features, token "
                                              "ablation a text input)"}, {}
        if background is None:
            return {"method": NONE, "reason": enable_hint(name)}, {}
        data = encode_background(background)
        return background_section(output, data), {BACKGROUND_FILE: data}
    return {"method": NONE, "reason": "no explanation method fits its inputs (one text input, "
                                      "one image input, or tabular inputs with background "
                                      "rows)"}, {}


def _occlusion(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """Patch and stride for an image input [-1, H, W], [-1, C, H, W] or [-1, H, W, C]."""
    shape = spec["shape"][1:]
    if len(shape) == 2:
        axes = [0, 1]
    elif shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
        axes = [1, 2]  # channels first
    else:
        axes = [0, 1]  # channels last
    height, width = shape[axes[0]], shape[axes[1]]
    if height < 1 or width < 1:
        return None  # variable spatial dimensions: no fixed grid of patches
    patch = max(1, min(height, width) // 4)
    stride = max(1, patch // 2)
    return {"input": spec["name"], "spatial_axes": axes, "patch": [patch, patch],
            "stride": [stride, stride], "baseline": 0.0}


def encode_background(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The .npz bytes of background rows (one array per input name). Written by hand rather
    than with np.savez, whose zip entries carry the current time: the same rows give the
    same bytes (and sha256) on every export."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.ascontiguousarray(arrays[name]),
                                      allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", (1980, 1, 1, 0, 0, 0)),
                             entry.getvalue())
    return buffer.getvalue()


def background_section(output: str, data: bytes) -> dict[str, Any]:
    """The manifest's `explanation` object for Kernel SHAP over the background `data`
    (the bytes of BACKGROUND_FILE, from encode_background); read back at load by
    model_api/explainers/background.py."""
    return {"method": KERNEL_SHAP, "output": output,
            "background": {"file": BACKGROUND_FILE,
                           "sha256": sha256_of(data)}}
