"""Every generated file of the tree, rendered again in memory and compared with the tree's:
`make check-generated` (which `make lint`, so `make test` and CI, run).

The generated files are whole files, never edited by hand (.gitattributes marks them):
- template.yaml and stacks/models-<g>.yaml: `make template` (model_registry.template), from
  template.src.yaml, models.yaml and the route table (model_api/routes.py);
- events/<function>/<route>.json, all but events.HAND_WRITTEN: `make events`
  (model_registry.events), from the route table and each model's exported examples;
- docs/openapi.json: `make openapi` (model_registry.openapi), from the route table and each
  model's exported manifest.
They are rendered as add-model renders them (changes.derived over the whole registry), so what
the check wants is what a registry change writes. It fails naming each file whose content
differs, each that is missing, and each among the generated ones that nothing generates.
"""

from __future__ import annotations

import difflib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from model_registry import changes, events, registry
from model_registry.registry import PROJECT, Locate, Project, exported

# The command that writes each generated file, by its first path component.
COMMANDS = {"template.yaml": "make template", "stacks": "make template",
            "events": "make events", "docs": "make openapi"}
DIFF_LINES = 40  # of each file's diff, printed


@dataclass(frozen=True)
class Difference:
    """A generated file that is not what its generator writes: `reason` is "differs",
    "missing" or "not generated" (a file among the generated ones that nothing writes); `diff`
    is a unified diff from the tree's text to the rendered one ("" unless it differs)."""

    path: Path
    reason: str
    diff: str = ""


def expected(project: Project, locate: Locate) -> dict[Path, str]:
    """Every generated file of `project` (path -> text), rendered from its registry and the
    exported versions `locate` finds; raises what a render raises (RegistryError,
    ManifestError, ExamplesError)."""
    change = changes.derived(project, registry.load(project.registry), locate)
    return {path: text for path, text in change.writes.items()
            if path != project.registry and isinstance(text, str)}


def differences(project: Project = PROJECT, locate: Locate | None = None) -> list[Difference]:
    """The generated files of `project` that differ from what their generators write now
    (from build/models unless `locate` is given), by path; empty when all are up to date."""
    wanted = expected(project, locate or exported(project.models_dir))
    found: list[Difference] = []
    for path, text in sorted(wanted.items()):
        if not path.exists():
            found.append(Difference(path, "missing"))
            continue
        have = path.read_text()
        if have != text:
            name = str(path.relative_to(project.root))
            diff = difflib.unified_diff(have.splitlines(keepends=True),
                                        text.splitlines(keepends=True),
                                        f"{name} (in the tree)", f"{name} (regenerated)", n=1)
            found.append(Difference(path, "differs", "".join(diff)))
    extra = [*events.stale(wanted, project.events),
             *(sorted(project.stacks.iterdir()) if project.stacks.is_dir() else [])]
    found.extend(Difference(path, "not generated") for path in extra
                 if path.is_file() and path not in wanted)
    return found


def command(project: Project, path: Path) -> str:
    """The make target that writes a generated file."""
    return COMMANDS.get(path.relative_to(project.root).parts[0], "make template events openapi")


def report(project: Project, found: list[Difference]) -> str:
    """What `make check-generated` prints: each file, why, the command that fixes it, and the
    start of its diff."""
    lines = [f"{len(found)} generated file(s) out of date (edit the sources, not these files):"]
    for item in found:
        lines.append(f"  {item.path.relative_to(project.root)}: {item.reason}: "
                     f"run `{command(project, item.path)}`")
    for item in found:
        if item.diff:
            diff = item.diff.splitlines()
            lines.extend(diff[:DIFF_LINES])
            if len(diff) > DIFF_LINES:
                lines.append(f"... ({len(diff) - DIFF_LINES} more lines)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Check every generated file of the tree (the exported models from build/models, or the
    folder given); 1 with a report on stderr when any differs."""
    args = sys.argv[1:] if argv is None else argv
    started = time.perf_counter()
    found = differences(PROJECT, exported(Path(args[0])) if args else None)
    if found:
        print(report(PROJECT, found), file=sys.stderr)
        return 1
    print(f"every generated file is up to date ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(registry.run(main))
