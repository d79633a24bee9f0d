"""`kernel_shap`: Kernel SHAP (Lundberg & Lee 2017, "A Unified Approach to Interpreting Model
Predictions", NeurIPS, Theorem 2) over a background of training rows shipped beside the model.

Every coalition of a row is scored in one batched run (coalitions x background rows); all
2^M - 2 coalitions when they fit the sample budget (exact SHAP values for that background),
else a seeded sample drawn as the `shap` library's KernelExplainer draws it: subset sizes
enumerated whole from the smallest (and their complements) while the budget covers them, the
rest sampled in complementary pairs by the kernel's weight. `base_value` is the mean output
over the background; `base_value + sum(attributions)` equals the row's output exactly (the
constraint is imposed, not estimated). Reads the manifest's `explanation.background` (the file
and its sha256); takes the request option `samples` (coalitions per row).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cached_property, lru_cache
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from model_api.datatypes import numpy_dtype
from model_api.errors import BadRequest, NotReady, TooLarge
from model_api.explainers.background import BackgroundFile, read_background
from model_api.explainers.base import (
    Explainer,
    Explanation,
    ExplanationError,
    Options,
    Predictor,
)
from model_api.limits import MAX_EXPLAIN_MODEL_ROWS, MAX_EXPLAIN_RUN_ROWS
from model_api.manifest import Manifest

KERNEL_SHAP = "kernel_shap"
# Kernel SHAP's coalitions per row when the request does not say (`parameters.samples`): the
# most that keeps one breast-cancer row (30 features, 16 background rows) near 10 ms of model
# time on one core (docs/performance.md, make bench's explain section).
DEFAULT_SHAP_SAMPLES = 512
SHAP_SEED = 0  # the coalition sample is seeded: the same row gets the same answer every time


class KernelShapExplainer(Explainer):
    """Kernel SHAP over the features of every input (each flattened, then concatenated)."""

    method = KERNEL_SHAP
    manifest_fields = ("background",)
    options = ("target", "samples")
    explains_every_input = True

    def __init__(self, manifest: Manifest, output: str,
                 background: Mapping[str, np.ndarray] | BackgroundFile) -> None:
        """`background`: the rows (input name -> [K, *shape]), or their checked file, parsed on
        first use (a cold start's first /infer never reads it)."""
        super().__init__(manifest, output)
        self.specs = manifest.inputs
        self._background = background

    @cached_property
    def background(self) -> dict[str, np.ndarray]:
        """Input name -> [K, *shape]. NotReady (503, counted as a server error) when the file,
        although it matched its sha256, is not an archive of rows that fit the inputs."""
        if not isinstance(self._background, BackgroundFile):
            return dict(self._background)
        try:
            return self._background.arrays()
        except ExplanationError as exc:
            raise NotReady(f"explanations of {self.manifest.name!r} cannot be computed: {exc}"
                           ) from exc

    @cached_property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Feature shapes from the background: an input may declare a variable dimension (-1),
        but its explained requests must have the background's fixed shape."""
        return {spec.name: self.background[spec.name].shape[1:] for spec in self.specs}

    @cached_property
    def sizes(self) -> list[int]:
        return [math.prod(self.shapes[spec.name]) for spec in self.specs]

    @property
    def features(self) -> int:
        return sum(self.sizes)

    @property
    def background_rows(self) -> int:
        return next(iter(self.background.values())).shape[0]

    @cached_property
    def dtype(self) -> np.dtype[Any]:
        """One dtype holding every input's values exactly (FP32 for the seeds: no FP64 copies)."""
        return np.result_type(*(numpy_dtype(spec.datatype) for spec in self.specs))

    @cached_property
    def flat_background(self) -> np.ndarray:
        """The background rows flattened and concatenated: [K, features] of `dtype`."""
        return np.concatenate(
            [self.background[spec.name].reshape(self.background_rows, -1).astype(self.dtype)
             for spec in self.specs], axis=1)

    @classmethod
    def from_manifest(cls, manifest: Manifest, section: Mapping[str, Any],
                      version_dir: Path) -> KernelShapExplainer:
        """ExplanationError unless `explanation.background` names a file of `version_dir` whose
        sha256 matches (explainers/background.py); its rows are parsed and checked against the
        inputs on the first explanation."""
        return cls(manifest, section["output"], read_background(manifest, version_dir, section))

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
            merged = (f" ({samples} samples, duplicates merged)"
                      if count < samples and 2 ** self.features - 2 > samples else "")
            raise TooLarge(
                f"{rows} rows x {count} coalitions{merged} x {k} background rows is "
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
        return self._explanation(attributions, base, target, full_scores)

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


EXPLAINER = KernelShapExplainer
