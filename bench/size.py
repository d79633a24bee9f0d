"""Size: each function's code plus its layers, unzipped (Lambda's 250 MB limit counts these)
and zipped (what is uploaded: each layer zipped once by SAM CLI's own function, as sam deploy
does, and shared by the functions that use it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import BUILT_TEMPLATE
from bench.deployed import sam_zip
from local_api.template import load_template

LAMBDA_LIMIT_MB = 250
TARGET_MB = 120
MB = 1e6


def unzipped_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*")
               if path.is_file() and not path.is_symlink())


def zipped_bytes(folder: Path) -> int:
    return sam_zip(folder).stat().st_size


def run() -> dict[str, Any]:
    functions = load_template(BUILT_TEMPLATE).functions.values()
    folders = {folder for spec in functions for folder in (spec.code_dir, *spec.layer_dirs)}
    sizes = {folder: (unzipped_bytes(folder), zipped_bytes(folder)) for folder in sorted(folders)}
    layers = {folder.name: {"unzipped_mb": round(unzipped / MB, 1),
                            "zipped_mb": round(zipped / MB, 1)}
              for folder, (unzipped, zipped) in sizes.items()}
    rows = []
    for spec in functions:
        parts = (spec.code_dir, *spec.layer_dirs)
        unzipped = sum(sizes[part][0] for part in parts) / MB
        rows.append({"function": spec.logical_id, "layers": [p.name for p in spec.layer_dirs],
                     "unzipped_mb": round(unzipped, 1),
                     "zipped_mb": round(sum(sizes[part][1] for part in parts) / MB, 1),
                     "limit_share": round(unzipped / LAMBDA_LIMIT_MB, 2)})
    return {"limit_mb": LAMBDA_LIMIT_MB, "target_mb": TARGET_MB, "functions": rows,
            "folders": layers}
