"""The step itself: build, measure and judge each candidate of a model's version, print the table
and publish the best one that passes."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import msgspec
from model_api.integrity import IntegrityError, read_verified
from model_api.manifest import MANIFEST_FILE, Manifest, ManifestError, load_manifest

from model_registry import registry
from model_registry.optimize.candidates import METHODS, build
from model_registry.optimize.data import (
    OptimizeError,
    file_dataset,
    random_dataset,
    seed_dataset,
)
from model_registry.optimize.gate import Gate
from model_registry.optimize.measure import Parent, control, measure
from model_registry.optimize.publish import publish_version
from model_registry.optimize.report import describe, table_header, table_row
from model_registry.optimize.result import Result
from model_registry.optimize.timing import Timing, load_average
from model_registry.registry import PROJECT, Project


@dataclass
class Outcome:
    """What a run of the step measured and, where a candidate passed, what it published."""

    name: str
    parent: Manifest
    results: list[Result]
    published: str | None = None  # the new version
    best: Result | None = None


def optimize(name: str, version: str | None = None, rows: Path | None = None,
             methods: tuple[str, ...] = tuple(METHODS), timing: Timing = Timing(),
             gate: Gate = Gate(), publish: bool = True, task: str | None = None,
             project: Project = PROJECT, out: TextIO = sys.stdout) -> Outcome:
    """Build, measure and judge each method on `name` `version` (default: current); publish the
    best passing candidate as a new version unless `publish` is False. The table goes to `out`
    row by row; OptimizeError (or AddError when publishing) says why the step cannot run."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise OptimizeError(f"unknown methods {unknown}; known: {list(METHODS)}")
    entries = {e.name: e for e in registry.load(project.registry)}
    entry = entries.get(name)
    if entry is None:
        raise OptimizeError(f"no model {name!r} in {project.registry.name} "
                            f"(known: {sorted(entries)})")
    models_dir = project.models_dir
    version = version or entry.current
    if version not in entry.versions:
        raise OptimizeError(f"{name} has no version {version!r} (versions {entry.versions})")
    try:
        parent = load_manifest(models_dir / name / version / MANIFEST_FILE)
        parent_bytes = read_verified(models_dir / name / version / parent.model_file,
                                     parent.sha256)
    except (ManifestError, OSError, IntegrityError):
        raise OptimizeError(f"{models_dir / name / version} is missing or fails its sha256 "
                            "check: run `make models`") from None
    if task is not None and parent.task is None:
        parent = msgspec.structs.replace(parent, task=task)  # (a Manifest is a msgspec Struct)
    data = (file_dataset(rows, parent) if rows is not None
            else seed_dataset(name, version, parent) or random_dataset(parent))
    if parent.task is None and data.test.targets is not None:
        raise OptimizeError(f"{name} {version} has no task in its manifest (add-model sets "
                            "one with LABELS): give TASK=classification or regression (--task) "
                            "to measure its metric")
    reference = Parent.load(parent, parent_bytes, data, timing)
    reference = replace(reference, control=control(reference, data, timing))
    print(f"optimize {name} version {version} ({len(parent_bytes) / 1024:.1f} KB): rows from "
          f"{data.source}; {timing.passes} interleaved passes, session options of a "
          f"{timing.lambda_memory_mb or 'non-Lambda'} MB function; load average "
          f"{load_average()} on {os.cpu_count()} CPUs", file=out, flush=True)
    print(table_header(), file=out, flush=True)
    print(table_row(("parent itself", f"{len(parent_bytes) / 1024:.1f}", "", "", "",
                     "", "", "", "", "", "", "control: "
                     + ", ".join(f"{r:.2f}x at {rows:,} row{'s' if rows > 1 else ''}"
                                 for rows, r in reference.control.items())
                     + " against a second session of itself")), file=out, flush=True)
    results = []
    for method in methods:
        result = build(method, parent_bytes, data)
        if result.error is None:
            measure(result, reference, data, timing, gate)
        results.append(result)
        print(describe(result, parent.task), file=out, flush=True)
    outcome = Outcome(name, parent, results)
    passing = [r for r in results if r.passed]
    if not passing:
        print("no candidate passed the gate: nothing published", file=out, flush=True)
        return outcome
    outcome.best = max(passing, key=lambda r: r.score)
    if not publish:
        print(f"best: {outcome.best.method} (not published: dry run)", file=out, flush=True)
        return outcome
    outcome.published = publish_version(entry, reference, outcome.best, data, timing, project)
    print(f"published {name} version {outcome.published} ({outcome.best.method}), not current: "
          f"serve it at /v2/models/{name}/versions/{outcome.published}", file=out, flush=True)
    return outcome
