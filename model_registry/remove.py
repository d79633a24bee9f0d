"""Stop serving a model or one of its versions (`make remove-model NAME=… [VERSION=…]`).

Removes it from models.yaml, renders its group's stack, template.yaml, its events/ and
docs/openapi.json again (the other models' files are left as they are), and
deletes its exported folders under build/models and its stored files under model_store/. The
current version is never removed while other versions exist unless the caller names the version
that becomes current. Like add-model, the whole change is computed before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from model_registry import registry
from model_registry.changes import derived
from model_registry.registry import PROJECT, ModelEntry, Project, exported


class RemoveError(ValueError):
    """The removal cannot be done as asked; the message says what to do instead."""


def remove(name: str, version: str | None = None, new_current: str | None = None,
           project: Project = PROJECT) -> ModelEntry | None:
    """Remove model `name` (or only its `version`); returns what remains of the entry (None when
    the whole model went). RemoveError: unknown model or version, or the current version asked
    for while others remain and `new_current` does not name one of them."""
    entries = registry.load(project.registry)
    entry = next((e for e in entries if e.name == name), None)
    if entry is None:
        raise RemoveError(f"no model {name!r} in {project.registry.name}; models: "
                          f"{', '.join(e.name for e in entries) or 'none'}")
    if version is not None and version not in entry.versions:
        raise RemoveError(f"model {name!r} has no version {version!r}; versions: "
                          f"{', '.join(entry.versions)}")
    remaining: ModelEntry | None = None
    if version is not None and entry.versions != [version]:
        others = [v for v in entry.versions if v != version]
        current = entry.current
        if version == entry.current:
            if new_current not in others:
                raise RemoveError(
                    f"version {version!r} is the current version of {name!r}: name the version "
                    f"that becomes current (NEW_CURRENT=…, one of {', '.join(others)})")
            current = str(new_current)
        files = {v: f for v, f in entry.files.items() if v != version}
        # A seed model's labels are recorded only for its versions added from files.
        labels = None if entry.source == "seed" and not files else entry.labels
        remaining = replace(entry, versions=others, current=current, files=files, labels=labels)
    elif new_current is not None:
        raise RemoveError("NEW_CURRENT names the new current version when VERSION is the "
                          "current one; the whole model is being removed")
    new_entries = [remaining or e if e.name == name else e for e in entries
                   if e.name != name or remaining is not None]
    change = derived(project, new_entries, exported(project.models_dir), touched=[entry])
    gone = [version] if remaining is not None and version is not None else entry.versions
    for old in gone:
        change.deletes.append(project.models_dir / name / old)
        if old in entry.files:
            change.deletes.append((project.root / entry.files[old]["path"]).parent)
    change.apply()
    return remaining


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="the model to remove (or remove from)")
    parser.add_argument("--version", help="remove only this version")
    parser.add_argument("--current", help="the version that becomes current, when --version is "
                                          "the current one")
    args = parser.parse_args(argv)
    try:
        remaining = remove(args.name, args.version, args.current)
    except RemoveError as exc:
        print(f"remove-model refused: {exc}", file=sys.stderr)
        return 2
    if remaining is None:
        print(f"removed model {args.name}")
    else:
        print(f"removed {args.name} version {args.version}: versions {remaining.versions}, "
              f"current {remaining.current}")
    print(f"restart `make serve` to stop serving it; what was captured of {args.name}'s "
          f"requests stays until `make capture-erase MODEL={args.name}` (or BUCKET=... in AWS)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
