"""Write the model catalog (model_api.catalog) from models.yaml: every model, its versions, its
current version and its group, the file the catalog layer holds at /opt/catalog/models.json.

`sam build` runs it (layers/Makefile, build-CatalogLayer); the local batch loop writes one for
its registry too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model_api.catalog import Catalog, CatalogModel

from model_registry.registry import REGISTRY, ModelEntry, load
from model_registry.registry import run as registry_run


def catalog(entries: list[ModelEntry]) -> Catalog:
    """The catalog of the registry `entries`, in registry order."""
    return Catalog(tuple(CatalogModel(e.name, tuple(e.versions), e.current, e.group)
                         for e in entries))


def write(entries: list[ModelEntry], path: Path) -> Path:
    """Write the catalog of `entries` to `path` (JSON); returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(catalog(entries).document(), indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--registry", type=Path, default=REGISTRY, help="models.yaml to read")
    parser.add_argument("--out", type=Path, required=True, help="the catalog file to write")
    args = parser.parse_args(argv)
    write(load(args.registry), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(registry_run(main))
