"""Explanations of a model's answers (the `/explain` route): which inputs drove each row's output.

The method is chosen per model at export (or `make add-model`) and written to the manifest's
`explanation` object; this module reads it, checks it (and its background file's sha256, like the
model file's) and computes explanations with numpy and the model's own onnxruntime session. No
explainer library: `shap` pulls scipy, pandas and numba, far too big for a Lambda layer, and the
four methods below are each a few batched model runs and a little linear algebra.

Every method answers, per row: `attributions` (FP32, the input's shape without its batch
dimension), `base_value` (the explained output at the method's baseline) and `target` (the
class explained; 0 for a regression). The explained output is a float score output of the model
(`probabilities` for a classifier, the prediction of a regressor), named in the manifest.

Methods (manifest `explanation.method`):
- `linear`: exact contributions `coef_i * (x_i - mean_i)` over the training data's means (the
  SHAP values of a linear model with independent features; Lundberg & Lee 2017, sec. 4.1);
  `base_value` is the model's output at the means. One model run of 2 rows per request.
- `kernel_shap`: Kernel SHAP (Lundberg & Lee 2017, "A Unified Approach to Interpreting Model
  Predictions", NeurIPS, Theorem 2) over a background of training rows shipped beside the model.
  Every coalition of a row is scored in one batched run (coalitions x background rows); all
  2^M - 2 coalitions when they fit the sample budget (exact SHAP values for that background),
  else a seeded sample drawn as the `shap` library's KernelExplainer draws it: subset sizes
  enumerated whole from the smallest (and their complements) while the budget covers them, the
  rest sampled in complementary pairs by the kernel's weight. `base_value` is the mean output
  over the background; `base_value + sum(attributions)` equals the row's output exactly (the
  constraint is imposed, not estimated).
- `occlusion`: occlusion maps (Zeiler & Fergus 2014, "Visualizing and Understanding
  Convolutional Networks", sec. 4.2): a patch of the baseline value is slid over the image and
  each pixel's attribution is the mean drop in the target's output over the patches covering
  it. `base_value` is the output for an image all at the baseline. One run of positions + 2
  images per row. Not additive.
- `token_ablation`: each token of a text removed in turn (its characters replaced by one
  space); its attribution is the drop in the target's output. Tokens are found with the
  model's own tokenizer pattern when the exporter could read it from the graph (the ONNX
  Tokenizer node's `tokenexp`), else with DEFAULT_TOKEN_PATTERN (runs of Unicode word
  characters). `base_value` is the output with every token removed. One run of T + 2 texts per
  row. Not additive.
- `none`: the model cannot be explained as deployed; `reason` says how to enable it.
"""

from __future__ import annotations

import io
import math
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from model_api.datatypes import BYTES, is_float, numpy_dtype
from model_api.errors import BadRequest, NotFound, TooLarge
from model_api.integrity import IntegrityError, read_verified, sha256_of
from model_api.limits import (
    MAX_BACKGROUND_ROWS,
    MAX_EXPLAIN_MODEL_ROWS,
    MAX_EXPLAIN_ROWS,
    MAX_EXPLAIN_RUN_ROWS,
    MAX_EXPLAIN_TOKENS,
    MAX_SHAP_SAMPLES,
)
from model_api.manifest import Manifest, TensorSpec

LINEAR = "linear"
KERNEL_SHAP = "kernel_shap"
OCCLUSION = "occlusion"
TOKEN_ABLATION = "token_ablation"
NONE = "none"
METHODS = (LINEAR, KERNEL_SHAP, OCCLUSION, TOKEN_ABLATION, NONE)

BACKGROUND_FILE = "background.npz"
# Kernel SHAP's coalitions per row when the request does not say (`parameters.samples`): the
# most that keeps one breast-cancer row (30 features, 16 background rows) near 10 ms of model
# time on one core (docs/performance.md, make bench's explain section).
DEFAULT_SHAP_SAMPLES = 512
SHAP_SEED = 0  # the coalition sample is seeded: the same row gets the same answer every time
# Runs of Unicode word characters: the split used when a text model's tokenizer is unreadable.
DEFAULT_TOKEN_PATTERN = r"\w+"

# A predictor: input arrays (a batch) -> the explained output as float64 [batch, classes].
Predictor = Callable[[dict[str, np.ndarray]], np.ndarray]


class ExplanationError(ValueError):
    """A manifest's `explanation` object or its background file is unusable (load time)."""


@dataclass(frozen=True)
class Explanation:
    """The explanation of a batch of `rows` rows.

    `attributions` maps each explained input to FP32 [rows, *input shape without batch]
    ([rows, T] for a text input); `tokens` maps a text input to BYTES (object) [rows, T], padded
    with ""; `base_value` FP32 [rows]; `target` INT64 [rows].
    """

    method: str
    output: str
    attributions: dict[str, np.ndarray]
    base_value: np.ndarray
    target: np.ndarray
    tokens: dict[str, np.ndarray] = field(default_factory=dict)

    def outputs(self) -> dict[str, np.ndarray]:
        """The answer's extra outputs by name: `attributions` (or `attributions_<input>` for a
        model of several inputs), `tokens` likewise, `base_value`, `target`."""
        single = len(self.attributions) == 1
        named: dict[str, np.ndarray] = {}
        for name, values in self.attributions.items():
            named["attributions" if single else f"attributions_{name}"] = values
        for name, tokens in self.tokens.items():
            named["tokens" if single else f"tokens_{name}"] = tokens
        named["base_value"] = self.base_value
        named["target"] = self.target
        return named


def output_specs(manifest: Manifest) -> tuple[TensorSpec, ...]:
    """The tensor specs of the outputs an explanation adds to `manifest`'s (for the codec)."""
    config = manifest.extra.get("explanation")
    if not isinstance(config, dict) or config.get("method") in (None, NONE):
        return ()
    method = config["method"]
    # Linear and Kernel SHAP explain every input; occlusion and token ablation the one named.
    explained = [spec for spec in manifest.inputs
                 if method in (LINEAR, KERNEL_SHAP) or spec.name == config.get("input")]
    single = len(explained) == 1
    specs = []
    for spec in explained:
        suffix = "" if single else f"_{spec.name}"
        if method == TOKEN_ABLATION:
            specs.append(TensorSpec(f"attributions{suffix}", "FP32", (-1, -1)))
            specs.append(TensorSpec(f"tokens{suffix}", BYTES, (-1, -1)))
        else:
            specs.append(TensorSpec(f"attributions{suffix}", "FP32", spec.shape))
    specs.append(TensorSpec("base_value", "FP32", (-1,)))
    specs.append(TensorSpec("target", "INT64", (-1,)))
    return tuple(specs)


def with_outputs(manifest: Manifest) -> Manifest:
    """`manifest` with the explanation's outputs added: what an explain request is decoded
    and answered against (so `outputs` may name them, binary or not)."""
    return replace(manifest, outputs=manifest.outputs + output_specs(manifest))


@dataclass(frozen=True)
class Options:
    """What a request may set: `target` (class index for every row; None: each row's
    predicted class) and `samples` (Kernel SHAP's coalitions per row; None: the default)."""

    target: int | None = None
    samples: int | None = None


def request_options(parameters: Mapping[str, Any]) -> Options:
    """The explain options of a request's `parameters`; BadRequest if one is malformed."""
    target = parameters.get("target")
    if target is not None and (type(target) is not int or target < 0):
        raise BadRequest(f"parameter 'target' must be a class index (an integer >= 0), got "
                         f"{target!r:.40}")
    samples = parameters.get("samples")
    if samples is not None and (type(samples) is not int or not
                                1 <= samples <= MAX_SHAP_SAMPLES):
        raise BadRequest(f"parameter 'samples' must be an integer from 1 to {MAX_SHAP_SAMPLES} "
                         f"(Kernel SHAP's coalitions per row), got {samples!r:.40}")
    return Options(target, samples)


# --- the explainers -----------------------------------------------------------------------


class Explainer:
    """One model's explanation method, checked against its manifest at load."""

    method: str = NONE

    def __init__(self, manifest: Manifest, output: str) -> None:
        self.manifest = manifest
        self.output = output

    def explain(self, predict: Predictor, inputs: dict[str, np.ndarray],
                options: Options) -> Explanation:
        """Explain the rows of `inputs` (arrays that fit the manifest, same batch size).

        BadRequest for a target out of range or an option the method does not take; TooLarge
        over a limit of limits.py (MAX_EXPLAIN_ROWS, MAX_EXPLAIN_MODEL_ROWS,
        MAX_EXPLAIN_TOKENS).
        """
        rows = next(iter(inputs.values())).shape[0]
        if rows > MAX_EXPLAIN_ROWS:
            raise TooLarge(f"{rows} rows to explain; the limit is {MAX_EXPLAIN_ROWS} rows per "
                           "explain request (split it, or use the batch runner)")
        if options.samples is not None and self.method != KERNEL_SHAP:
            raise BadRequest(f"parameter 'samples' applies to kernel_shap only; model "
                             f"'{self.manifest.name}' is explained by {self.method}")
        return self._explain(predict, inputs, options, rows)

    def _explain(self, predict: Predictor, inputs: dict[str, np.ndarray], options: Options,
                 rows: int) -> Explanation:
        raise NotImplementedError

    def _targets(self, scores: np.ndarray, options: Options) -> np.ndarray:
        """INT64 [rows]: the requested class, else each row's highest score (0: regression)."""
        classes = scores.shape[1]
        if options.target is None:
            return scores.argmax(axis=1).astype(np.int64)
        if options.target >= classes:
            raise BadRequest(f"parameter 'target' is {options.target}; output "
                             f"'{self.output}' has {classes} class(es): 0..{classes - 1}")
        return np.full(scores.shape[0], options.target, dtype=np.int64)

    def _answer(self, attributions: dict[str, np.ndarray], base: np.ndarray,
                target: np.ndarray, tokens: dict[str, np.ndarray] | None = None) -> Explanation:
        return Explanation(self.method, self.output,
                           {k: v.astype(np.float32) for k, v in attributions.items()},
                           base.astype(np.float32), target, tokens or {})


class Unavailable(Explainer):
    """A model with nothing to explain with: every explain request is a 404 saying why."""

    def __init__(self, manifest: Manifest, reason: str) -> None:
        super().__init__(manifest, "")
        self.reason = reason

    def explain(self, predict: Predictor, inputs: dict[str, np.ndarray],
                options: Options) -> Explanation:
        raise NotFound(f"model '{self.manifest.name}' version '{self.manifest.version}' has no "
                       f"explanations: {self.reason}")


class LinearExplainer(Explainer):
    """Exact contributions of a linear model: coef_i * (x_i - mean_i), FP64 arithmetic."""

    method = LINEAR

    def __init__(self, manifest: Manifest, output: str, coefficients: np.ndarray,
                 means: np.ndarray) -> None:
        super().__init__(manifest, output)
        self.input = manifest.inputs[0]
        self.coefficients = coefficients  # FP64 [classes, *input shape]
        self.means = means  # FP64 [*input shape]

    def _explain(self, predict: Predictor, inputs: dict[str, np.ndarray], options: Options,
                 rows: int) -> Explanation:
        x = inputs[self.input.name]
        batch = np.concatenate([x, self.means[None].astype(x.dtype)])
        scores = predict({self.input.name: batch})
        target = self._targets(scores[:rows], options)
        contributions = self.coefficients[target] * (x.astype(np.float64) - self.means)
        return self._answer({self.input.name: contributions}, scores[rows, target], target)


class KernelShapExplainer(Explainer):
    """Kernel SHAP over the features of every input (each flattened, then concatenated)."""

    method = KERNEL_SHAP

    def __init__(self, manifest: Manifest, output: str,
                 background: dict[str, np.ndarray]) -> None:
        super().__init__(manifest, output)
        self.specs = manifest.inputs
        self.background = background  # input name -> [K, *shape]
        # Feature counts from the background: an input may declare a variable dimension
        # (-1), but its explained requests must have the background's fixed shape.
        self.shapes = {spec.name: background[spec.name].shape[1:] for spec in self.specs}
        self.sizes = [math.prod(self.shapes[spec.name]) for spec in self.specs]
        self.features = sum(self.sizes)
        self.background_rows = next(iter(background.values())).shape[0]
        # One dtype holding every input's values exactly (FP32 for the seeds: no FP64 copies).
        self.dtype = np.result_type(*(numpy_dtype(spec.datatype) for spec in self.specs))
        self.flat_background = np.concatenate(
            [background[spec.name].reshape(self.background_rows, -1).astype(self.dtype)
             for spec in self.specs], axis=1)

    def _explain(self, predict: Predictor, inputs: dict[str, np.ndarray], options: Options,
                 rows: int) -> Explanation:
        for spec in self.specs:
            if inputs[spec.name].shape[1:] != self.shapes[spec.name]:
                raise BadRequest(
                    f"input '{spec.name}' has shape {list(inputs[spec.name].shape)}; its "
                    f"explanations are over the background's shape "
                    f"{[-1, *self.shapes[spec.name]]}")
        samples = options.samples or DEFAULT_SHAP_SAMPLES
        if samples < 2 * self.features and 2 ** self.features - 2 > samples:
            raise BadRequest(f"parameter 'samples' is {samples}; Kernel SHAP over "
                             f"{self.features} features needs at least {2 * self.features}")
        masks, projection = coalitions(self.features, samples)
        count, k = masks.shape[0], self.background_rows
        per_row = count * k
        if rows * per_row > MAX_EXPLAIN_MODEL_ROWS:
            raise TooLarge(
                f"{rows} rows x {count} coalitions x {k} background rows is "
                f"{rows * per_row} model evaluations; the limit is {MAX_EXPLAIN_MODEL_ROWS} "
                "per request (send fewer rows or a smaller 'samples')")
        flat = np.concatenate([inputs[spec.name].reshape(rows, -1).astype(self.dtype)
                               for spec in self.specs], axis=1)
        # The background and the rows themselves, once: base value and full outputs.
        head = predict(self._unflatten(np.concatenate([self.flat_background, flat])))
        base_scores, full_scores = head[:k].mean(axis=0), head[k:]
        target = self._targets(full_scores, options)
        base = base_scores[target]
        full = full_scores[np.arange(rows), target]
        values = np.empty((rows, self.features))
        # One batched run per row (its coalitions x the background), split only past
        # MAX_EXPLAIN_RUN_ROWS model rows to bound the run's memory.
        step = max(1, MAX_EXPLAIN_RUN_ROWS // k)
        for row in range(rows):
            expected = np.empty(count)
            for start in range(0, count, step):
                part = masks[start:start + step]
                mixed = np.where(part[:, None, :], flat[row], self.flat_background[None])
                scores = predict(self._unflatten(mixed.reshape(-1, self.features)))
                expected[start:start + step] = scores[:, target[row]].reshape(
                    len(part), k).mean(axis=1)
            values[row] = solve(masks, projection, expected - base[row], full[row] - base[row])
        split = np.split(values, np.cumsum(self.sizes)[:-1], axis=1)
        attributions = {spec.name: part.reshape(rows, *self.shapes[spec.name])
                        for spec, part in zip(self.specs, split, strict=True)}
        return self._answer(attributions, base, target)

    def _unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        parts = np.split(flat, np.cumsum(self.sizes)[:-1], axis=1)
        return {spec.name: part.reshape(-1, *self.shapes[spec.name]).astype(
                    numpy_dtype(spec.datatype))
                for spec, part in zip(self.specs, parts, strict=True)}


def kernel_weight(features: int, size: np.ndarray | int) -> np.ndarray:
    """The Shapley kernel pi(z) = (M-1) / (C(M,|z|) |z| (M-|z|)) for coalitions of `size`."""
    size = np.asarray(size, dtype=np.float64)
    binomial = np.array([math.comb(features, int(s)) for s in np.ravel(size)], dtype=np.float64)
    return (features - 1) / (binomial.reshape(size.shape) * size * (features - size))


@lru_cache(maxsize=32)
def coalitions(features: int, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """The coalitions scored for every row and the least-squares projection they give.

    Returns `masks` bool [S, M] (True: the feature takes the row's value) and `projection`
    FP64 [M - 1, S]: with the last feature eliminated by the efficiency constraint, the
    attributions of features 0..M-2 are `projection @ (y - masks[:, -1] * d)`, where y are the
    coalitions' expected outputs minus the base value and d = f(x) - base (Lundberg & Lee 2017,
    Theorem 2: a weighted linear regression with the Shapley kernel as weights).

    All 2^M - 2 non-trivial coalitions when they fit `samples` (exact); else the sampling of
    shap's KernelExplainer: subset sizes s and M - s enumerated whole, smallest first, while
    the remaining budget covers them at their kernel weight; the remaining budget drawn in
    complementary pairs, sizes by their remaining kernel weight, subsets uniformly within a
    size, seeded (SHAP_SEED), duplicates merged into one coalition of summed weight.
    """
    if features < 2:
        masks = np.ones((1, max(features, 1)), dtype=bool)
        return masks, np.zeros((max(features - 1, 0), 1))
    if 2 ** features - 2 <= samples:
        masks = np.array([[(index >> bit) & 1 for bit in range(features)]
                          for index in range(1, 2 ** features - 1)], dtype=bool)
        weights = kernel_weight(features, masks.sum(axis=1))
    else:
        masks, weights = _sampled(features, samples)
    return masks, _projection(masks, weights)


def _sampled(features: int, samples: int) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.arange(1, math.ceil((features - 1) / 2) + 1)  # s, and M - s when paired
    paired = sizes != features - sizes
    size_weight = (features - 1) / (sizes * (features - sizes)) * np.where(paired, 2.0, 1.0)
    size_weight /= size_weight.sum()
    left, remaining = samples, size_weight.copy()
    chunks: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    full = 0
    for index, size in enumerate(sizes):
        count = math.comb(features, int(size)) * (2 if paired[index] else 1)
        if left * remaining[index] / count < 1.0 - 1e-8:
            break
        subsets = np.zeros((math.comb(features, int(size)), features), dtype=bool)
        for row, chosen in enumerate(combinations(range(features), int(size))):
            subsets[row, list(chosen)] = True
        each = size_weight[index] / count
        chunks.append(subsets)
        weights.append(np.full(len(subsets), each))
        if paired[index]:
            chunks.append(~subsets)
            weights.append(np.full(len(subsets), each))
        left -= count
        full = index + 1
        if remaining[index] < 1.0:
            remaining /= 1.0 - remaining[index]
        remaining[index] = 0.0
    if full < len(sizes) and left > 0:
        rng = np.random.default_rng(SHAP_SEED)
        rest = size_weight[full:] / size_weight[full:].sum()
        pairs = max(left // 2, 1)
        drawn = sizes[full:][rng.choice(len(rest), size=pairs, p=rest)]
        order = rng.random((pairs, features)).argsort(axis=1)
        subsets = order < drawn[:, None]
        sampled = np.concatenate([subsets, ~subsets])
        unique, counts = np.unique(sampled, axis=0, return_counts=True)
        chunks.append(unique)
        weights.append(counts * (size_weight[full:].sum() / counts.sum()))
    return np.concatenate(chunks), np.concatenate(weights)


def _projection(masks: np.ndarray, weights: np.ndarray) -> np.ndarray:
    z = masks.astype(np.float64)
    eliminated = z[:, :-1] - z[:, -1:]
    weighted = eliminated.T * weights
    # pinv, not solve: a small sample may leave the normal matrix singular.
    projection: np.ndarray = np.linalg.pinv(weighted @ eliminated) @ weighted
    return projection


def solve(masks: np.ndarray, projection: np.ndarray, expected: np.ndarray,
          difference: float) -> np.ndarray:
    """FP64 [M]: the Kernel SHAP values of one row from its coalitions' expected outputs
    (minus the base value) and `difference` = f(x) - base; they sum to `difference` exactly."""
    head = projection @ (expected - masks[:, -1] * difference)
    return np.append(head, difference - head.sum())


class OcclusionExplainer(Explainer):
    """Occlusion map of an image input: a baseline patch slid over its spatial axes."""

    method = OCCLUSION

    def __init__(self, manifest: Manifest, output: str, input_name: str,
                 spatial_axes: tuple[int, int], patch: tuple[int, int],
                 stride: tuple[int, int], baseline: float) -> None:
        super().__init__(manifest, output)
        spec = manifest.input(input_name)
        assert spec is not None
        self.input = spec
        self.axes = spatial_axes  # axes of the input without its batch dimension
        self.patch, self.stride, self.baseline = patch, stride, baseline
        shape = spec.shape[1:]
        height, width = shape[spatial_axes[0]], shape[spatial_axes[1]]
        self.positions = [(top, left)
                          for top in _starts(height, patch[0], stride[0])
                          for left in _starts(width, patch[1], stride[1])]
        masks = np.zeros((len(self.positions), height, width), dtype=bool)
        for index, (top, left) in enumerate(self.positions):
            masks[index, top:top + patch[0], left:left + patch[1]] = True
        self.masks = masks  # [P, H, W]: the pixels each position covers
        self.cover = masks.sum(axis=0)  # [H, W]: how many positions cover each pixel

    def _explain(self, predict: Predictor, inputs: dict[str, np.ndarray], options: Options,
                 rows: int) -> Explanation:
        x = inputs[self.input.name]
        positions = len(self.positions)
        if rows * (positions + 2) > MAX_EXPLAIN_MODEL_ROWS:
            raise TooLarge(f"{rows} images x {positions + 2} occluded copies is over the "
                           f"limit of {MAX_EXPLAIN_MODEL_ROWS} model evaluations per request")
        masks = self._broadcast(self.masks)  # [P, *shape], the non-spatial axes of size 1
        occluded = np.where(masks[None], np.asarray(self.baseline, dtype=x.dtype),
                            x[:, None])  # [rows, P, *shape]
        blank = np.full_like(x[:1], self.baseline)
        batch = np.concatenate([x, blank, occluded.reshape(rows * positions, *x.shape[1:])])
        scores = predict({self.input.name: batch})
        target = self._targets(scores[:rows], options)
        own = scores[np.arange(rows), target]
        base = scores[rows, target]
        drops = own[:, None] - scores[rows + 1:].reshape(rows, positions, -1)[
            np.arange(rows)[:, None], np.arange(positions)[None], target[:, None]]
        per_pixel = np.tensordot(drops, self.masks, axes=(1, 0)) / np.maximum(self.cover, 1)
        attributions = np.broadcast_to(self._broadcast(per_pixel), x.shape).copy()
        return self._answer({self.input.name: attributions}, base, target)

    def _broadcast(self, planes: np.ndarray) -> np.ndarray:
        """[N, H, W] -> [N, *shape] with size-1 non-spatial axes, spatial axes in place."""
        rank = len(self.input.shape) - 1
        others = [axis for axis in range(rank) if axis not in self.axes]
        expanded = planes.reshape(planes.shape + (1,) * len(others))
        order = [0] + [0] * rank
        source = {self.axes[0]: 1, self.axes[1]: 2}
        extra = 3
        for axis in range(rank):
            if axis in source:
                order[axis + 1] = source[axis]
            else:
                order[axis + 1] = extra
                extra += 1
        return expanded.transpose(order)


def _starts(size: int, patch: int, stride: int) -> list[int]:
    """Patch offsets along one axis: every `stride`, the last one flush with the edge."""
    starts = list(range(0, max(size - patch, 0) + 1, stride))
    if starts[-1] + patch < size:
        starts.append(size - patch)
    return starts


class TokenAblationExplainer(Explainer):
    """Token ablation of a BYTES text input: each token removed in turn."""

    method = TOKEN_ABLATION

    def __init__(self, manifest: Manifest, output: str, input_name: str,
                 pattern: str) -> None:
        super().__init__(manifest, output)
        spec = manifest.input(input_name)
        assert spec is not None
        self.input = spec
        self.pattern = re.compile(pattern)

    def tokens(self, text: str) -> list[re.Match[str]]:
        """The tokens of `text` as the model's tokenizer (or the documented split) finds them;
        TooLarge over MAX_EXPLAIN_TOKENS (never silently truncated)."""
        found = list(self.pattern.finditer(text))
        if len(found) > MAX_EXPLAIN_TOKENS:
            raise TooLarge(f"a text of input '{self.input.name}' has {len(found)} tokens; "
                           f"token ablation explains at most {MAX_EXPLAIN_TOKENS} per text")
        return found

    def _explain(self, predict: Predictor, inputs: dict[str, np.ndarray], options: Options,
                 rows: int) -> Explanation:
        x = inputs[self.input.name]
        texts = [str(text) for text in x.reshape(rows)]
        found = [self.tokens(text) for text in texts]
        batch: list[str] = []
        for text, matches in zip(texts, found, strict=True):
            batch.append(text)
            batch.append(_without(text, matches))
            batch.extend(_without(text, [match]) for match in matches)
        if len(batch) > MAX_EXPLAIN_MODEL_ROWS:
            raise TooLarge(f"{len(batch)} ablated texts is over the limit of "
                           f"{MAX_EXPLAIN_MODEL_ROWS} model evaluations per request")
        array = np.array(batch, dtype=object).reshape(len(batch), *x.shape[1:])
        scores = predict({self.input.name: array})
        width = max((len(matches) for matches in found), default=0)
        attributions = np.zeros((rows, width))
        tokens = np.full((rows, width), "", dtype=object)
        starts = np.cumsum([0] + [len(matches) + 2 for matches in found])
        own = scores[starts[:-1]]
        target = self._targets(own, options)
        base = scores[starts[:-1] + 1, target]
        for row, matches in enumerate(found):
            ablated = scores[starts[row] + 2:starts[row + 1], target[row]]
            attributions[row, :len(matches)] = own[row, target[row]] - ablated
            tokens[row, :len(matches)] = [match.group() for match in matches]
        return self._answer({self.input.name: attributions}, base, target,
                            {self.input.name: tokens})


def _without(text: str, matches: Sequence[re.Match[str]]) -> str:
    """`text` with the spans of `matches` (in order) replaced by one space each."""
    parts, end = [], 0
    for match in matches:
        parts.append(text[end:match.start()])
        parts.append(" ")
        end = match.end()
    parts.append(text[end:])
    return "".join(parts)


# --- loading from the manifest -------------------------------------------------------------


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
    if method == LINEAR:
        return _linear(manifest, output, config)
    if method == KERNEL_SHAP:
        return KernelShapExplainer(manifest, output, read_background(manifest, version_dir,
                                                                     config))
    name = config.get("input")
    if not isinstance(name, str) or manifest.input(name) is None:
        raise ExplanationError(f"explanation.input {name!r} is not an input of the model")
    if method == OCCLUSION:
        return _occlusion(manifest, output, name, config)
    pattern = config.get("token_pattern", DEFAULT_TOKEN_PATTERN)
    try:
        re.compile(pattern)
    except (re.error, TypeError) as exc:
        raise ExplanationError(f"explanation.token_pattern {pattern!r}: {exc}") from exc
    return TokenAblationExplainer(manifest, output, name, pattern)


def _linear(manifest: Manifest, output: str, config: Mapping[str, Any]) -> Explainer:
    if len(manifest.inputs) != 1:
        raise ExplanationError("linear explanations take a model of one input")
    shape = manifest.inputs[0].shape[1:]
    try:
        coefficients = np.asarray(config["coefficients"], dtype=np.float64)
        means = np.asarray(config["means"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ExplanationError(f"linear explanation needs numeric coefficients and means: "
                               f"{exc}") from exc
    if coefficients.ndim == len(shape):
        coefficients = coefficients[None]
    if coefficients.shape[1:] != shape or means.shape != shape:
        raise ExplanationError(f"linear coefficients {coefficients.shape} and means "
                               f"{means.shape} do not fit the input's shape {shape}")
    return LinearExplainer(manifest, output, coefficients, means)


def _occlusion(manifest: Manifest, output: str, name: str,
               config: Mapping[str, Any]) -> Explainer:
    spec = manifest.input(name)
    assert spec is not None
    shape = spec.shape[1:]
    try:
        axes = tuple(int(a) for a in config["spatial_axes"])
        patch = tuple(int(p) for p in config["patch"])
        stride = tuple(int(s) for s in config["stride"])
        baseline = float(config.get("baseline", 0.0))
    except (KeyError, TypeError, ValueError) as exc:
        raise ExplanationError(f"occlusion needs spatial_axes, patch and stride: {exc}") from exc
    if (len(axes) != 2 or len(patch) != 2 or len(stride) != 2 or len(set(axes)) != 2
            or not all(0 <= a < len(shape) and shape[a] > 0 for a in axes)
            or not all(0 < p <= shape[a] for p, a in zip(patch, axes, strict=True))
            or min(stride) < 1 or any(d < 1 for d in shape)):
        raise ExplanationError(f"occlusion spatial_axes {axes}, patch {patch}, stride {stride} "
                               f"do not fit the input's fixed shape {shape}")
    return OcclusionExplainer(manifest, output, name, (axes[0], axes[1]),
                              (patch[0], patch[1]), (stride[0], stride[1]), baseline)


def read_background(manifest: Manifest, version_dir: Path,
                    config: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The background rows of a Kernel SHAP model, after their sha256 check: one array per
    input, [K, *input shape without batch], K equal for all."""
    record = config.get("background")
    if not isinstance(record, dict) or not isinstance(record.get("file"), str) \
            or Path(record["file"]).name != record["file"]:
        raise ExplanationError("explanation.background must name a file of the version folder "
                               "with its sha256")
    path = version_dir / record["file"]
    try:
        data = read_verified(path, record.get("sha256"))
    except OSError as exc:
        raise ExplanationError(f"{path}: cannot read the background rows: {exc}") from exc
    except IntegrityError as exc:
        raise ExplanationError(f"{path}: sha256 is {exc.actual} but the manifest says "
                               f"{exc.expected}; the background is not the exported one") from None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        raise ExplanationError(f"{path}: not a numpy .npz archive: {exc}") from exc
    return check_background(manifest, arrays)


def check_background(manifest: Manifest, arrays: Mapping[str, np.ndarray]
                     ) -> dict[str, np.ndarray]:
    """Background rows that fit the manifest's inputs (ExplanationError naming what does
    not): one array per input, numeric, finite, the input's fixed dimensions, 1 to
    MAX_BACKGROUND_ROWS rows, the same count for every input."""
    names = {spec.name for spec in manifest.inputs}
    if set(arrays) != names:
        raise ExplanationError(f"background arrays {sorted(arrays)} must be exactly the "
                               f"model's inputs {sorted(names)}")
    checked: dict[str, np.ndarray] = {}
    for spec in manifest.inputs:
        array = np.asarray(arrays[spec.name])
        if spec.datatype == BYTES or array.dtype.kind not in "iuf" or array.ndim != len(
                spec.shape) or any(d != -1 and d != a for d, a in
                                   zip(spec.shape[1:], array.shape[1:], strict=True)):
            raise ExplanationError(
                f"background for input '{spec.name}' is {array.dtype} {list(array.shape)}; "
                f"the input is {spec.datatype} {list(spec.shape)}")
        if not 1 <= array.shape[0] <= MAX_BACKGROUND_ROWS:
            raise ExplanationError(f"background for input '{spec.name}' has "
                                   f"{array.shape[0]} rows; give 1 to {MAX_BACKGROUND_ROWS}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ExplanationError(f"background for input '{spec.name}' has NaN or inf")
        checked[spec.name] = array
    if len({array.shape[0] for array in checked.values()}) != 1:
        raise ExplanationError("background arrays must have the same number of rows")
    return checked


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
    (the bytes of BACKGROUND_FILE, from encode_background)."""
    return {"method": KERNEL_SHAP, "output": output,
            "background": {"file": BACKGROUND_FILE,
                           "sha256": sha256_of(data)}}
