"""The rows a model is optimised with (a seed's recipe, an .npz of rows, or random rows for
timing only), and OptimizeError, raised when the step cannot run as asked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from model_api.datatypes import BYTES, NUMPY_DTYPES
from model_api.manifest import Manifest

from model_export.seeds import RECIPES

RANDOM_ROWS = 256  # synthetic rows for an added model without --rows (timing only)


class OptimizeError(ValueError):
    """The model or its rows cannot be optimised as asked; the message says why."""


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


TARGETS = "targets"  # the .npz array of the rows' true targets (labels or values)


def file_dataset(path: Path, manifest: Manifest) -> Dataset:
    """Rows from an .npz of arrays named after the model's inputs, and optionally `targets`
    (TARGETS). OptimizeError for an array named neither (its targets under another name,
    most likely: they would be left out, and the quality gate would measure nothing)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        raise OptimizeError(f"cannot read rows from {path}: {exc}") from exc
    names = [spec.name for spec in manifest.inputs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise OptimizeError(f"{path} has no array for inputs {missing} (it has {sorted(arrays)})")
    unknown = sorted(set(arrays) - {*names, TARGETS})
    if unknown:
        raise OptimizeError(
            f"{path} has arrays {unknown} that are neither an input of the model ({names}) "
            f"nor {TARGETS!r}: name the rows' true targets (labels or values) {TARGETS!r}, "
            "so that the quality gate can measure the metric")
    inputs = {spec.name: arrays[spec.name].astype(NUMPY_DTYPES[spec.datatype])
              for spec in manifest.inputs}
    targets = arrays.get(TARGETS)
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
        if spec.datatype == BYTES:
            raise OptimizeError(f"input {spec.name!r} is BYTES: give --rows with real rows")
        shape = [RANDOM_ROWS, *(d if d > 0 else 1 for d in spec.shape[1:])]
        inputs[spec.name] = generator.standard_normal(shape).astype(
            NUMPY_DTYPES[spec.datatype])
    rows = Rows(inputs, None)
    return Dataset(calibration=inputs, test=rows, full=None,
                   source=f"{RANDOM_ROWS} standard-normal rows (no --rows: nothing to publish)")
