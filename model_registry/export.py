"""`python -m model_registry.export --out build/models`: export every model of models.yaml.

Seed models are trained and exported by their recipe unless their fingerprint shows nothing
changed; models added from an .onnx file (source: onnx), and the versions `make optimize`
published, are copied again from the file that models.yaml records, after checking its sha256.
Progress says which model, which step and how long it took.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from model_export.export import finish
from model_export.fingerprint import fingerprint, is_current
from model_export.seeds import RECIPES, SHARED_SOURCES
from model_export.versions import SKLEARN_FRAMEWORKS
from model_registry import registry
from model_registry.add import AddError, reimport
from model_registry.registry import ModelEntry


def progress(label: str) -> Callable[[str], AbstractContextManager[None]]:
    """A `step(name)` context manager printing `label: name ... 1.2 s` (or `... failed`)."""

    @contextmanager
    def step(name: str) -> Iterator[None]:
        print(f"{label}: {name} ...", end="", flush=True)
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            print(" failed", flush=True)
            raise
        print(f" {time.perf_counter() - started:.1f} s", flush=True)

    return step


def export_seed(entry: ModelEntry, version: str, out: Path, force: bool) -> None:
    recipe = RECIPES.get((entry.name, version))
    if recipe is None:
        raise SystemExit(f"models.yaml lists seed model {entry.name} version {version}, "
                         f"but model_export has no recipe for it (known: {sorted(RECIPES)})")
    version_dir = out / entry.name / version
    label = f"{entry.name}/{version}"
    wanted = fingerprint(SHARED_SOURCES + recipe.sources, SKLEARN_FRAMEWORKS)
    if not force and is_current(version_dir, wanted):
        print(f"{label}: unchanged, skipped", flush=True)
        return
    step = progress(label)
    started = time.perf_counter()
    with step("train and convert"):
        trained = recipe.train()
    manifest = finish(trained, version_dir, wanted, step)
    print(f"{label}: exported in {time.perf_counter() - started:.1f} s, "
          f"metrics {manifest['metrics']}", flush=True)


def import_added(entry: ModelEntry, out: Path) -> None:
    started = time.perf_counter()
    try:
        written = reimport(entry, out)
    except AddError as exc:
        raise SystemExit(f"{entry.name}: {exc}") from exc
    skipped = [v for v in entry.files if v not in written]
    print(f"{entry.name}: imported versions {written or 'none'}, unchanged {skipped or 'none'} "
          f"({time.perf_counter() - started:.1f} s)", flush=True)


def prune(entries: list[ModelEntry], out: Path) -> None:
    """Remove exported models and versions models.yaml no longer lists: a model layer ships
    every folder, and events, OpenAPI and the tests follow models.yaml."""
    listed = {(entry.name, version) for entry in entries for version in entry.versions}
    names = {entry.name for entry in entries}
    for manifest in sorted(out.glob("*/*/manifest.json")):
        version_dir = manifest.parent
        if (version_dir.parent.name, version_dir.name) not in listed:
            shutil.rmtree(version_dir)
            print(f"{version_dir.parent.name}/{version_dir.name}: not in models.yaml, removed",
                  flush=True)
    for folder in sorted(out.iterdir()) if out.is_dir() else []:
        if folder.is_dir() and folder.name not in names and not any(folder.iterdir()):
            folder.rmdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("build/models"),
                        help="folder of <name>/<version>/ exports (default build/models)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="export only this model (repeatable)")
    parser.add_argument("--force", action="store_true", help="export even if unchanged")
    args = parser.parse_args(argv)
    entries = registry.load()
    for entry in entries:
        if args.only and entry.name not in args.only:
            continue
        for version in entry.versions:
            if version not in entry.files:  # a seed recipe's version
                export_seed(entry, version, args.out, args.force)
        if entry.files:
            import_added(entry, args.out)
    if not args.only:
        prune(entries, args.out)
    for entry in entries:  # once every version is there: a rule must fit each one's inputs
        if not args.only or entry.name in args.only:
            registry.check_capture_inputs(entry, registry.exported(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(registry.run(main))
