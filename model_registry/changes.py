"""A registry change, computed whole before anything is written: models.yaml, template.yaml and
the group stacks (stacks/; both rendered from template.src.yaml), events/, docs/openapi.json,
the exported versions under build/models and the stored model files.

`make add-model` and `make remove-model` build a `Changeset` (every check and every render runs
while building it: a new version is exported into a staging folder first), then `apply` it. A
refusal therefore leaves the tree byte-identical, and an applied change leaves every generated
file in step with models.yaml, so `make test` is green with no other command.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from model_api.routes import TENSOR_REQUESTS

from model_registry import events, openapi, registry, template
from model_registry.registry import Locate, ModelEntry, Project


@dataclass
class Changeset:
    """Files to write (path -> text or bytes), folders to move into place (staged -> final)
    and paths to delete (files or folders), applied in that order by `apply`; folders emptied
    by a delete are removed up to `root`."""

    root: Path
    writes: dict[Path, str | bytes] = field(default_factory=dict)
    moves: dict[Path, Path] = field(default_factory=dict)
    deletes: list[Path] = field(default_factory=list)

    def apply(self) -> None:
        for path, content in self.writes.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            staged = path.with_name(f".{path.name}.new")
            if isinstance(content, bytes):
                staged.write_bytes(content)
            else:
                staged.write_text(content)
            staged.replace(path)
        for source, target in self.moves.items():
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            source.rename(target)
        for path in self.deletes:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            _remove_empty_parents(path.parent, self.root)

    def paths(self) -> list[Path]:
        """Every path this change writes, moves into place or deletes."""
        return [*self.writes, *self.moves.values(), *self.deletes]


def derived(project: Project, entries: list[ModelEntry], locate: Locate,
            touched: Iterable[ModelEntry] | None = None) -> Changeset:
    """models.yaml and every file generated from it for `entries`: template.yaml and the group
    stacks under stacks/, the events/ of every route, docs/openapi.json; event folders of models
    no longer listed and stacks of groups left empty are deleted. Raises what a render raises
    (RegistryError, ManifestError, ExamplesError).

    `touched`: the only models that changed (as they were, or as they are now). Then only their
    groups' stacks and their own events are rendered (with the server's and the jobs
    function's, which name the first model and read no file), and the OpenAPI document keeps
    the other models' request schemas, so a change costs the same however many models exist.
    None renders everything (`make template`, `make events` and `make openapi` do too)."""
    change = Changeset(project.root)
    change.writes[project.registry] = registry.dump(entries, project.registry)
    known: dict[str, Any] = {}
    groups: set[int] | None = None
    changed: set[str] | None = None
    if touched is not None:
        touched = list(touched)
        changed = {entry.name for entry in touched}
        groups = {entry.group for entry in touched}
        known = _known_schemas(project, changed)
    for entry in entries:  # capture rules against the exported inputs (check cannot see them)
        if changed is None or entry.name in changed:
            registry.check_capture_inputs(entry, locate)
    change.writes.update(template.render(entries, template.source_of(project).read_text(),
                                         project, groups))
    change.deletes.extend(template.stale_groups(entries, project))
    change.writes.update(events.render(entries, locate, project.events, only=changed))
    change.writes[project.openapi] = openapi.render(entries, locate, known)
    generated = {path.parent for path in change.writes if path.is_relative_to(project.events)}
    names = {entry.name for entry in entries}
    for folder in sorted(project.events.iterdir()) if project.events.is_dir() else []:
        if folder.is_dir() and folder not in generated and _is_model_folder(folder, names):
            change.deletes.append(folder)
    return change


def _known_schemas(project: Project, changed: set[str]) -> dict[str, Any]:
    """The previous OpenAPI document's request schemas of the models that did not change."""
    if not project.openapi.exists():
        return {}
    schemas: dict[str, Any] = orjson.loads(project.openapi.read_bytes())["components"]["schemas"]
    prefixes = tuple(openapi.request_schema(request, "") for request in TENSOR_REQUESTS)
    return {key: schema for key, schema in schemas.items()
            if key.startswith(prefixes) and key.split(".", 1)[1] not in changed}


def _is_model_folder(folder: Path, names: set[str]) -> bool:
    """An events folder of a model that is no longer registered (its events name a model)."""
    return folder.name not in names and (folder / "metadata.json").exists()


def staging(project: Project) -> Path:
    """A fresh folder beside build/models for versions not yet accepted."""
    project.models_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".staging-", dir=project.models_dir))


def _remove_empty_parents(folder: Path, root: Path) -> None:
    """Remove `folder` and its parents while they are empty, up to (not including) `root`."""
    while folder != root and folder.is_relative_to(root) and folder.is_dir() \
            and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
