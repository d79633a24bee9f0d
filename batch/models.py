"""Exported models on disk (`<models dir>/<model>/<version>/manifest.json`), without the serving
library: `python -m batch.sample` runs where `model_api` is not on the path."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVING = ROOT / "layers" / "serving" / "python"  # ServingLayer's /opt/python: model_api


def versions(folder: Path) -> list[str]:
    """The versions exported under a model's folder, lowest first, numbers compared as numbers
    ("9" before "10")."""
    return sorted((p.parent.name for p in folder.glob("*/manifest.json")),
                  key=lambda v: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", v)])


def serving_importable() -> None:
    """Make `model_api` importable from the source tree, as its layer makes it on Lambda."""
    if str(SERVING) not in sys.path:
        sys.path.append(str(SERVING))
