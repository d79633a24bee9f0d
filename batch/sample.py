"""A batch input made of a model's real dataset rows, cycled to any length (for `make batch-local`).

    python -m batch.sample --model breast-cancer-mlp --rows 100000 --out rows.jsonl
    python -m batch.sample --model breast-cancer-mlp --rows 100000 --out rows.npy

The rows come from the dataset the model was trained on, as its manifest names it
(`training.dataset`, a `sklearn.datasets.load_*` loader: breast-cancer-mlp, diabetes-linear,
digits-cnn), repeated in order until `--rows` rows are written. `.jsonl`: one infer request of
one row per line, `id` = the line number from 0; `.npy`: one array of the model's input
(rows x the input's shape, its dtype: any numeric datatype; a BYTES input takes JSON Lines).
The model's current version (models.yaml) is read, as the runner picks it.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from batch.models import ROOT, current_version, registry_path, serving_importable

SKLEARN = "sklearn.datasets."


def dataset_rows(manifest: dict[str, Any]) -> np.ndarray:
    """The model's dataset, reshaped to its single input's rows (float64, as sklearn has it)."""
    dataset = str(manifest.get("training", {}).get("dataset", ""))
    if not dataset.startswith(SKLEARN) or len(manifest["inputs"]) != 1:
        raise SystemExit(f"{manifest['name']}: no sklearn dataset for a single input "
                         f"(training.dataset is {dataset!r})")
    module, loader = dataset.rsplit(".", 1)
    data = getattr(importlib.import_module(module), loader)().data
    shape = [len(data), *manifest["inputs"][0]["shape"][1:]]
    return np.asarray(data).reshape(shape)


def write_jsonl(path: Path, rows: np.ndarray, count: int, spec: dict[str, Any]) -> None:
    # The dataset's own decimal text (float64 repr), not float32 noise; the model casts.
    bodies = [json.dumps(row.ravel().tolist()) for row in rows]
    head = {"name": spec["name"], "shape": [1, *rows.shape[1:]], "datatype": spec["datatype"]}
    prefix = json.dumps(head)[:-1]  # '{"name": ..., "datatype": "FP32"' without its "}"
    with path.open("w") as out:
        for n in range(count):
            out.write(f'{{"id": "{n}", "inputs": [{prefix}, "data": {bodies[n % len(rows)]}}}]}}\n')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batch.sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help=".jsonl or .npy file")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "build" / "models")
    parser.add_argument("--registry", type=Path, default=registry_path(),
                        help="models.yaml, where the model's current version is declared")
    args = parser.parse_args(argv)
    if args.out.suffix not in (".jsonl", ".npy") or args.rows < 1:
        parser.error("--out must be a .jsonl or .npy file and --rows >= 1")
    version = current_version(args.model, args.registry)
    if version is None:
        parser.error(f"model {args.model!r} is not in the registry {args.registry}")
    path = args.models_dir / args.model / version / "manifest.json"
    if not path.is_file():
        parser.error(f"no exported {args.model!r} version {version} under {args.models_dir} "
                     "(make models)")
    manifest = json.loads(path.read_text())
    spec = manifest["inputs"][0]
    if args.out.suffix == ".npy" and spec["datatype"] == "BYTES":
        parser.error(f"input {spec['name']!r} of {manifest['name']} is BYTES (strings): "
                     ".npy input takes numeric tensors only; write JSON Lines (.jsonl) instead")
    rows = dataset_rows(manifest)
    if args.out.suffix == ".jsonl":
        write_jsonl(args.out, rows, args.rows, spec)
    else:
        serving_importable()
        from model_api.datatypes import numpy_dtype

        order = np.arange(args.rows) % len(rows)
        np.save(args.out, rows[order].astype(numpy_dtype(spec["datatype"])))
    print(f"{args.out}: {args.rows} rows of {manifest['name']} ({len(rows)} dataset rows cycled)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
