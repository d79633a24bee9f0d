"""Which version of a model a batch job serves: the current one from the registry, the API's rule.

`current` is declared in one place, models.yaml (model_registry): the API's functions get it as
MODEL_VERSION rendered from there into template.yaml, and the runner reads it from the same
file, copied into the image beside the exported models (batch/Dockerfile) and read from the
repository locally. Reading the registry itself rather than a copy written at export time
means there is no second record of `current` to go stale. The choice between the current
version and a named one, and the version order, are the serving library's
(model_api.service.resolve_version, version_folders), so both paths answer alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model_api.capture.config import CaptureConfig

ROOT = Path(__file__).resolve().parent.parent


def registry_path() -> Path:
    """models.yaml: MODELS_REGISTRY when set (the image sets /app/models.yaml), else the
    repository's."""
    from model_registry.registry import REGISTRY  # the image copies model_registry too

    return Path(os.environ.get("MODELS_REGISTRY") or REGISTRY)


def current_version(model: str, registry: Path | None = None) -> str | None:
    """The registry's current version of `model`; None when the registry does not list it.

    Raises OSError when the registry cannot be read, model_registry.RegistryError when it is
    not valid.
    """
    from model_registry.registry import load  # pyyaml: the runner's image and the venv only

    for entry in load(registry or registry_path()):
        if entry.name == model:
            return entry.current
    return None


def capture_configs(registry: Path | None = None) -> dict[str, CaptureConfig]:
    """Each registered model's data capture settings (models.yaml `capture`), for the batch
    runner's capture hook (model_api.aws.hooks); {} when the registry cannot be read (the job
    then captures nothing and says so; its own model loading reports the registry's fault)."""
    from model_registry.registry import RegistryError, load

    try:
        return {entry.name: entry.capture_config for entry in load(registry or registry_path())}
    except (OSError, RegistryError) as error:
        import logging

        logging.getLogger("batch.runner").warning("no data capture: %s", error)
        return {}
