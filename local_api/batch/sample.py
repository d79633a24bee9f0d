"""A batch input made of a model's example rows, cycled to any length (for `make batch-local`).

    python -m local_api.batch.sample --model breast-cancer-mlp --rows 100000 --out rows.jsonl
    python -m local_api.batch.sample --model breast-cancer-mlp --rows 100000 --out rows.npy

The rows are the example inputs that travel with the model's current version (models.yaml), as
`model_api.examples` reads them (real held-back dataset rows for a seed model), repeated in
order until `--rows` rows are written. `.jsonl`: one infer request of one row per line (every
input of the model), `id` = the line number from 0; `.npy`: one array of the model's single
input (rows x the input's shape, its dtype: any numeric datatype; a model that a .npy job
cannot serve, model_api.catalog.npy_refusal: a BYTES input or output, several inputs, takes
JSON Lines).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import model_api.examples as examples
import numpy as np
from model_api.catalog import npy_refusal
from model_api.manifest import MANIFEST_FILE, Manifest, load_manifest

from batch.models import current_version, registry_path
from model_registry.registry import PROJECT


def write_jsonl(path: Path, manifest: Manifest, rows: examples.Examples, count: int) -> None:
    """`count` lines, line n one request of the examples' row n modulo their count."""
    size = len(next(iter(rows.values())))
    lines = []
    for row in range(size):
        one = {name: array[row:row + 1] for name, array in rows.items()}
        request = json.loads(examples.json_request(manifest, one))
        lines.append(json.dumps(request["inputs"]))
    with path.open("w") as out:
        for n in range(count):
            out.write(f'{{"id": "{n}", "inputs": {lines[n % size]}}}\n')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_api.batch.sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help=".jsonl or .npy file")
    parser.add_argument("--models-dir", type=Path, default=PROJECT.models_dir)
    parser.add_argument("--registry", type=Path, default=registry_path(),
                        help="models.yaml, where the model's current version is declared")
    args = parser.parse_args(argv)
    if args.out.suffix not in (".jsonl", ".npy") or args.rows < 1:
        parser.error("--out must be a .jsonl or .npy file and --rows >= 1")
    version = current_version(args.model, args.registry)
    if version is None:
        parser.error(f"model {args.model!r} is not in the registry {args.registry}")
    path = args.models_dir / args.model / version / MANIFEST_FILE
    if not path.is_file():
        parser.error(f"no exported {args.model!r} version {version} under {args.models_dir} "
                     "(make models)")
    manifest = load_manifest(path)
    refused = npy_refusal(manifest) if args.out.suffix == ".npy" else None
    if refused is not None:  # a .npy job of it would be refused (the jobs API, the runner)
        parser.error(f"no .npy input for it: {refused} (an --out file ending .jsonl)")
    rows = examples.load(path.parent, manifest)
    size = len(next(iter(rows.values())))
    if args.out.suffix == ".jsonl":
        write_jsonl(args.out, manifest, rows, args.rows)
    else:
        (array,) = rows.values()
        np.save(args.out, array[np.arange(args.rows) % size])
    print(f"{args.out}: {args.rows} rows of {manifest.name} ({size} example rows cycled)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
