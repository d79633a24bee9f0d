"""What a seed model's export depends on, hashed, so `make models` can skip unchanged models.

The fingerprint covers the recipe's source files and data, the pinned requirements and the
installed framework versions; it is stored in the manifest (training.fingerprint) and a version
whose manifest, model file and fingerprint all still agree is not trained again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from model_export.artifact import read_intact

PACKAGE = Path(__file__).resolve().parent


def fingerprint(sources: Iterable[str], frameworks: Mapping[str, str]) -> str:
    """sha256 over the named files of model_export/ (relative paths) and framework versions."""
    digest = hashlib.sha256()
    for relative in sorted(set(sources)):
        digest.update(relative.encode() + b"\0" + (PACKAGE / relative).read_bytes() + b"\0")
    digest.update(json.dumps(dict(frameworks), sort_keys=True).encode())
    return digest.hexdigest()


def is_current(version_dir: Path, wanted: str) -> bool:
    """True when version_dir holds an intact export made with fingerprint `wanted`."""
    manifest = read_intact(version_dir)
    return manifest is not None and manifest.extra.get("training", {}).get("fingerprint") == wanted
