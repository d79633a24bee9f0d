"""Write the model catalog (model_api.catalog) from models.yaml: every model, its versions, its
current version and its group (and, from the exported manifests, the versions that take JSON
Lines jobs only), the file the catalog layer holds at /opt/catalog/models.json.

`sam build` runs it (layers/Makefile, build-CatalogLayer); the local batch loop writes one for
its registry too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model_api.catalog import Catalog, CatalogModel, npy_refusal
from model_api.manifest import MANIFEST_FILE, load_manifest

from model_registry.registry import EXPORTED, REGISTRY, Locate, ModelEntry, load
from model_registry.registry import run as registry_run


def catalog(entries: list[ModelEntry], locate: Locate = EXPORTED) -> Catalog:
    """The catalog of the registry `entries`, in registry order; the versions that take JSON
    Lines jobs only from their manifests where `locate` finds them (a version not exported
    yet is not listed)."""
    return Catalog(tuple(CatalogModel(e.name, tuple(e.versions), e.current, e.group,
                                      jsonl_only(e, locate)) for e in entries))


def jsonl_only(entry: ModelEntry, locate: Locate) -> tuple[tuple[str, str], ...]:
    """(version, reason) for each exported version of `entry` that no .npy job can serve."""
    found = []
    for version in entry.versions:
        path = locate(entry.name, version) / MANIFEST_FILE
        reason = npy_refusal(load_manifest(path)) if path.is_file() else None
        if reason is not None:
            found.append((version, reason))
    return tuple(found)


def write(entries: list[ModelEntry], path: Path, locate: Locate = EXPORTED) -> Path:
    """Write the catalog of `entries` to `path` (JSON); returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(catalog(entries, locate).document(), indent=1) + "\n")
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
