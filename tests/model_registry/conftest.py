"""A copy of the project's registry-driven files in tmp_path, for add-model and remove-model."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from model_registry.registry import Project
from tests.conftest import MODELS_DIR, ROOT

COPIED = ("models.yaml", "template.src.yaml", "template.yaml", "stacks", "docs/openapi.json",
          "events")


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """models.yaml, template.src.yaml, template.yaml, stacks/, docs/openapi.json, events/ and
    build/models as `make models` left them, copied under tmp_path/project: what add-model and
    remove-model change."""
    root = tmp_path / "project"
    for name in COPIED:
        source, target = ROOT / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    shutil.copytree(MODELS_DIR, root / "build" / "models")
    return Project(root)


def snapshot(project: Project) -> dict[str, str]:
    """sha256 of every file of the project copy, by path."""
    return {str(path.relative_to(project.root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(project.root.rglob("*")) if path.is_file()}
