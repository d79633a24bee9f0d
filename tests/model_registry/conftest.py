"""Fixtures of the registry tests (add-model, optimize)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def registry_path(tmp_path: Path) -> Path:
    """A models.yaml of its own with a header comment and the seed breast-cancer-mlp."""
    path = tmp_path / "models.yaml"
    path.write_text("# header kept\nmodels:\n"
                    "  - {name: breast-cancer-mlp, source: seed, versions: ['1'], current: '1'}\n")
    return path
