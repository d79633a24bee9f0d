"""Where a model version lives, chosen by its size, and what its function needs: the one home of
Lambda's size limits and of the arithmetic behind them (README, "Large models").

A model function is its code plus its layers, all extracted into the function's file system, and
Lambda allows 250 MB of that, unzipped (262,144,000 bytes: "Deployment package (.zip file
archive) size ... 250 MB (unzipped, including layers)", Lambda quotas). The runtime layer
(onnxruntime, numpy, Powertools, trimmed) and the serving layer take their share, measured
below from `sam build`'s output; what is left is the model layer's (`LAYER_BUDGET_BYTES`): a
version fits a layer when it and the model's other layer versions fit that. A larger one goes
to the model store (template.src.yaml's ModelStoreBucket), which its function reads at start-up
(model_api.store).

Memory. A function holds every version of its model at once, each as its weights (S bytes for
a file of S bytes). A version in the store is kept as its graph and one file of its weights
(model_export.weights), read into one buffer that onnxruntime runs on in place: 1.0 x S at the
peak and after (measured for 400 MB models, `make bench ONLY=large`, docs/performance.md). A
graph whose load-time optimisations read a weight (a Cast or Transpose of one folded, Q/K/V
weights fused) gets them copied instead (model_api.model), and so does every graph where
$MODEL_API_WEIGHTS=copy: the buffer and onnxruntime's copy, 2 x S at the peak. The function is
sized for that: LOAD_COPIES = 2. The versions load one at a time (model_api.service), so a
function needs
  BASELINE_MB + (sum of S + (LOAD_COPIES - 1) x largest S) x (1 + WORKING_MARGIN)
and at most Lambda's 10,240 MB: one version of up to (10,240 - 160) / (2 x 1.1) = 4,581 MB.
A single-file ONNX model is at most 2 GiB (protobuf's limit on one message), which needs
160 + 2 x 2,147 x 1.1 = 4,884 MB (4,928 rounded up to 64); a larger one comes in ONNX's
external-data format (its graph, and its tensors in one file beside it: always the store; no
one tensor over 2 GiB). The largest model the design serves is then one of 4,581 MB alone in
its function. The versions of one function together: the formula.

Measured, not guessed (model_registry.sizing). The formula sizes the weights; a request's
activations are not proportional to them (a 404 MB transformer's worker peaked at 1,171 MB after
an 8 x 512-token request, over the 1,088 MB the formula gave). So `make add-model` loads a
store-placed version in a fresh process as its function does and runs one sizing request (the
user's rows, or 8 rows x 512 on the variable axes), and the version's need is that process's
measured peak over its baseline (VmHWM: the load and the request) x (1 + SIZING_MARGIN), kept in
models.yaml (files[version].sizing) for the template. A function then needs
  BASELINE_MB + sum of resident + max over versions of (need - resident)
where a version's resident memory is S x (1 + WORKING_MARGIN) and an unmeasured version's need
is LOAD_COPIES x S x (1 + WORKING_MARGIN) (the formula above, which this equals when none is
measured), rounded up to 64 MB; over 10,240 MB is refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from model_registry.sizing import Sizing

MB = 1_000_000
MIB = 1 << 20
# Lambda quotas: the function's code and all its layers, unzipped.
UNZIPPED_LIMIT_BYTES = 262_144_000
# Lambda quotas: memory, 128 MB to 10,240 MB.
MAX_MEMORY_MB = 10_240
# Measured with `du -sb` of `sam build`'s output (.aws-sam/build/RuntimeLayer, ServingLayer,
# a model function's code) for python3.12 x86_64 at onnxruntime 1.32 and msgspec 0.23
# (2026-12-06); `make build` measures the real ones again (check_built) and fails over the
# limit.
RUNTIME_LAYER_BYTES = 97_326_042
SERVING_LAYER_BYTES = 965_709
FUNCTION_CODE_BYTES = 6_000
# Kept free for the runtime layer's growth on an upgrade and the manifest, examples and
# explainer files beside each model file.
LAYER_MARGIN_BYTES = 8 * MIB
LAYER_BUDGET_BYTES = (UNZIPPED_LIMIT_BYTES - RUNTIME_LAYER_BYTES - SERVING_LAYER_BYTES
                      - FUNCTION_CODE_BYTES - LAYER_MARGIN_BYTES)
# A model function with no model yet: python, numpy, onnxruntime, Powertools, boto3's S3 client
# measured at 119 MB peak RSS; rounded up for the request's own buffers.
BASELINE_MB = 160
# Copies of a version's weights while it loads: the buffer they are read into and, when they
# cannot be used in place, onnxruntime's copy (measured: 1.0x in place, 1.9-2.1x copied;
# afterwards 1x: see the module's docstring).
LOAD_COPIES = 2
# For activations and intermediate tensors of a request, as a share of the weights.
WORKING_MARGIN = 0.10
# On top of a measured peak (model_registry.sizing): what the measuring process does not do
# that a function does per request (the request's JSON and its decoded arrays, the answer's
# encoding) and the allocator's spread between runs.
SIZING_MARGIN = 0.25
# Protobuf's limit on one message: the largest single-file ONNX model.
SINGLE_FILE_LIMIT_BYTES = (2 << 30) - 1
# The memory of a function whose model is all in layers: the template's ModelMemorySize.
DEFAULT_MEMORY_MB = 1024
LAYER, STORE = "layer", "store"
HOMES = (LAYER, STORE)


def store_key(name: str, version: str, file: str = "model.onnx") -> str:
    """A store-placed version's object in the model store (ModelStoreBucket; `make serve`'s
    local S3): the same key for the API's function and the batch runner; `file`: the graph, or
    the file of its tensors (a model over 2 GiB)."""
    return f"models/{name}/{version}/{file}"


class PlacementError(ValueError):
    """No Lambda function can hold this model (or these versions); the message says why."""


@dataclass(frozen=True)
class Placement:
    """Where a version goes (`home`: layer or store), the memory its function then needs (MB),
    and why, in a sentence for `make add-model` to print."""

    home: str
    memory_mb: int
    reason: str


def memory_mb(sizes: Iterable[int], sizings: Sequence[Sizing | None] = ()) -> int:
    """The memory (MB, a multiple of 64, at least DEFAULT_MEMORY_MB) a function holding
    versions of `sizes` bytes needs, with the measured `sizings` of those versions (in the same
    order; None or missing: not measured) (see the module's formula); PlacementError over
    10,240 MB, with the arithmetic."""
    sizes = list(sizes)
    found = [(size, sizings[i] if i < len(sizings) else None)
             for i, size in enumerate(sizes) if size > 0]
    if not found:
        return DEFAULT_MEMORY_MB
    resident = [size * (1 + WORKING_MARGIN) for size, _ in found]
    needs = [sizing.peak_bytes * (1 + SIZING_MARGIN) if sizing is not None
             else LOAD_COPIES * size * (1 + WORKING_MARGIN) for size, sizing in found]
    extra = max(need - held for need, held in zip(needs, resident, strict=True))
    needed = BASELINE_MB + (sum(resident) + extra) / MB
    if needed > MAX_MEMORY_MB:
        largest = max(range(len(found)), key=lambda i: needs[i] - resident[i])
        size, sizing = found[largest]
        worst = (f"({sizing.describe()}) x {1 + SIZING_MARGIN:.2f}" if sizing is not None else
                 f"{LOAD_COPIES} x {size / MB:,.0f} MB while it loads x "
                 f"{1 + WORKING_MARGIN:.1f}")
        others = sum(resident) - resident[largest]
        raise PlacementError(
            f"its function would need {needed:,.0f} MB: {BASELINE_MB} MB of runtime + "
            f"{needs[largest] / MB:,.0f} MB at the peak of its largest version: {worst}"
            + (f" + {others / MB:,.0f} MB of its other versions' weights (x "
               f"{1 + WORKING_MARGIN:.1f})" if len(found) > 1 else "")
            + f"; Lambda's maximum is {MAX_MEMORY_MB:,} MB. Serve fewer versions of it at "
            "once (make remove-model VERSION=...), a smaller (quantised) model, or, measured, "
            "size it for a smaller request (SIZING=rows.npz)")
    return max(DEFAULT_MEMORY_MB, 64 * math.ceil(needed / 64))


def place(size: int, layer_sizes: Iterable[int] = (), store_sizes: Iterable[int] = (),
          wanted: str | None = None, external: bool = False,
          sizing: Sizing | None = None,
          store_sizings: Sequence[Sizing | None] = ()) -> Placement:
    """Where a new version of `size` bytes goes, given the model's other versions in its layer
    (`layer_sizes`) and in the store (`store_sizes`): the layer when they fit
    LAYER_BUDGET_BYTES together, else the store; `wanted` (layer or store) forces one (a layer
    that does not fit is refused). `external`: the graph keeps its tensors in a file beside it
    (ONNX's external-data format, for a model over 2 GiB): always the store. PlacementError
    when no function can hold it. `sizing`: the new version's measured peak
    (model_registry.sizing), `store_sizings` the store versions' (in `store_sizes`' order):
    the function is sized from them where measured."""
    layer_sizes, store_sizes = list(layer_sizes), list(store_sizes)
    if size > SINGLE_FILE_LIMIT_BYTES and not external:
        raise PlacementError(
            f"it is {size / MB:,.0f} MB, over the 2 GiB of a single-file ONNX model: save it "
            "in the external-data format (onnx.save_model(..., save_as_external_data=True, "
            "all_tensors_to_one_file=True))")
    if external and wanted == LAYER:
        raise PlacementError("a model in the external-data format is served from the store")
    in_layer = sum(layer_sizes)
    fits = in_layer + size <= LAYER_BUDGET_BYTES and not external
    home = wanted or (LAYER if fits else STORE)
    if home not in HOMES:
        raise PlacementError(f"place it in one of {HOMES}, not {home!r}")
    budget = (f"a layer holds {LAYER_BUDGET_BYTES / MB:,.1f} MB of model: Lambda's "
              f"{UNZIPPED_LIMIT_BYTES / MB:,.1f} MB unzipped per function, less the runtime "
              f"layer ({RUNTIME_LAYER_BYTES / MB:,.1f} MB), the serving layer and code "
              f"({(SERVING_LAYER_BYTES + FUNCTION_CODE_BYTES) / MB:,.1f} MB) and "
              f"{LAYER_MARGIN_BYTES / MB:,.1f} MB kept free")
    from model_api.store import size_text  # (numpy: not for every template render)

    together = size_text(in_layer + size) + (" with its other layer versions"
                                                      if in_layer else "")
    if home == LAYER and not fits:
        raise PlacementError(f"it does not fit a layer ({together}; {budget})")
    memory = memory_mb([*layer_sizes, *store_sizes, size],
                       [*[None] * len(layer_sizes), *store_sizings,
                        *[None] * (len(store_sizes) - len(store_sizings)), sizing])
    if home == LAYER:
        reason = f"in its layer: {together}, and {budget}"
    else:
        why = ("its tensors are in the external-data format" if external
               else "as asked" if wanted and fits
               else f"{together} is over what a layer holds")
        reason = (f"in the model store (the stack's private, encrypted S3 bucket), read into "
                  f"memory when its function starts: {why} ({budget}); its function gets "
                  f"{memory:,} MB of memory" + (
                      f": {BASELINE_MB} MB of runtime + ({sizing.describe()}) x "
                      f"{1 + SIZING_MARGIN:.2f}" + (" and its other versions' weights"
                                                     if layer_sizes or store_sizes else "")
                      if sizing is not None else " (from its size; not yet measured)"))
    return Placement(home, memory, reason)
