"""`occlusion`: occlusion maps (Zeiler & Fergus 2014, "Visualizing and Understanding
Convolutional Networks", sec. 4.2) of one image input.

A patch of the baseline value is slid over the image and each pixel's attribution is the mean
drop in the target's output over the patches covering it. `base_value` is the output for an
image all at the baseline. One run of positions + 2 images per row. Not additive. Reads the
manifest's `explanation.input`, `spatial_axes`, `patch`, `stride` and `baseline`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from model_api.errors import TooLarge
from model_api.explainers.base import (
    Explainer,
    Explanation,
    ExplanationError,
    Options,
    Predictor,
    named_input,
)
from model_api.limits import MAX_EXPLAIN_MODEL_ROWS
from model_api.manifest import Manifest

OCCLUSION = "occlusion"


class OcclusionExplainer(Explainer):
    """Occlusion map of an image input: a baseline patch slid over its spatial axes."""

    method = OCCLUSION
    manifest_fields = ("input", "spatial_axes", "patch", "stride", "baseline")

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

    @classmethod
    def from_manifest(cls, manifest: Manifest, section: Mapping[str, Any],
                      version_dir: Path) -> OcclusionExplainer:
        """ExplanationError unless `explanation.input` names an input whose fixed shape the
        spatial axes, patch and stride fit."""
        name = named_input(manifest, section)
        spec = manifest.input(name)
        assert spec is not None
        shape = spec.shape[1:]
        try:
            axes = tuple(int(a) for a in section["spatial_axes"])
            patch = tuple(int(p) for p in section["patch"])
            stride = tuple(int(s) for s in section["stride"])
            baseline = float(section.get("baseline", 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ExplanationError(f"occlusion needs spatial_axes, patch and stride: "
                                   f"{exc}") from exc
        if (len(axes) != 2 or len(patch) != 2 or len(stride) != 2 or len(set(axes)) != 2
                or not all(0 <= a < len(shape) and shape[a] > 0 for a in axes)
                or not all(0 < p <= shape[a] for p, a in zip(patch, axes, strict=True))
                or min(stride) < 1 or any(d < 1 for d in shape)):
            raise ExplanationError(f"occlusion spatial_axes {axes}, patch {patch}, stride "
                                   f"{stride} do not fit the input's fixed shape {shape}")
        return cls(manifest, section["output"], name, (axes[0], axes[1]),
                   (patch[0], patch[1]), (stride[0], stride[1]), baseline)

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
        return self._explanation({self.input.name: attributions}, base, target, scores[:rows])

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


EXPLAINER = OcclusionExplainer
