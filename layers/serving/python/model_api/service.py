"""The protocol's operations for the models one function serves: what every route calls.

A function serves one model (every version folder under `$MODELS_DIR/$MODEL_NAME/`) or, with no
MODEL_NAME, none (the server routes). Loading happens once, at construction, and never raises:
a version that fails its checks is kept as "not ready" and answers 503 with the reason logged,
so a bad deployment shows up in health checks and alarms instead of as a crashing container.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import model_api.examples as model_examples
from model_api import __version__
from model_api.codec import InferResult
from model_api.errors import NotFound, NotReady, echoed
from model_api.limits import API_REQUEST
from model_api.manifest import Manifest
from model_api.model import LoadedModel, ModelIntegrityError, ModelLoadError
from model_api.names import version_key
from model_api.pipeline import Hook, Pipeline

__all__ = ["InferResult", "InferenceService"]

logger = logging.getLogger(__name__)

SERVER_NAME = "serverless-model-api"
DEFAULT_MODELS_DIR = "/opt/models"
# The protocol extensions this API serves: Triton's binary tensor data and model repository
# (index only: models are deployed with the stack, not loaded at run time).
EXTENSIONS = ("binary_tensor_data", "model_repository")


def version_folders(model_dir: Path) -> list[Path]:
    """A model's version folders in version_key order; hidden ones (a half-written export is
    `.<version>-…`) are not versions. OSError when `model_dir` cannot be listed."""
    return sorted((path for path in model_dir.iterdir()
                   if path.is_dir() and not path.name.startswith(".")),
                  key=lambda path: version_key(path.name))


def resolve_version(name: str, version: str | None, current: str | None,
                    installed: Sequence[str]) -> str:
    """The version of model `name` that serves a request for `version` (None: the current one),
    among the `installed` ones (in version_key order). The API's functions and the batch runner
    both choose with this, so the two paths serve the same version for the same ask.

    Raises NotFound when `version` is not installed; NotReady when there is no current version
    or it is not installed.
    """
    if version is None:
        if current is None:
            raise NotReady(f"model {name!r} has no current version: MODEL_VERSION is not set")
        if current not in installed:
            raise NotReady(
                f"model {name!r}: its current version {current!r} is not "
                f"installed (installed: {_listed(installed)})"
            )
        return current
    if version not in installed:
        raise NotFound(f"model {echoed(name)} has no version {echoed(version)}; versions: "
                       f"{_listed(installed)}")
    return version


class InferenceService:
    """Metadata, health and inference for one model's versions (or for none)."""

    def __init__(self, model_name: str | None = None,
                 versions: Mapping[str, LoadedModel | str] | None = None,
                 current_version: str | None = None,
                 examples: Mapping[str, dict[str, Any]] | None = None,
                 hooks: Sequence[Hook] = ()) -> None:
        """`versions` maps each version to its model, or to why it is not ready; `examples`
        maps a version to its example inputs (examples.json's document, `{"inputs": {...}}`);
        `hooks` run around the model on every infer and explain request (model_api.pipeline).
        """
        self.model_name = model_name
        self.pipeline = Pipeline(API_REQUEST, hooks, path="api")
        given = dict(versions or {})
        self.versions = {version: given[version] for version in sorted(given, key=version_key)}
        self.current_version = current_version
        self.examples = dict(examples or {})

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ,
                         hooks: Sequence[Hook] = ()) -> InferenceService:
        """The service of a function's MODELS_DIR, MODEL_NAME and MODEL_VERSION."""
        return cls.from_directory(
            Path(environ.get("MODELS_DIR") or DEFAULT_MODELS_DIR),
            environ.get("MODEL_NAME") or None,
            environ.get("MODEL_VERSION") or None,
            hooks,
        )

    @classmethod
    def from_directory(cls, models_dir: Path, model_name: str | None,
                       current_version: str | None,
                       hooks: Sequence[Hook] = ()) -> InferenceService:
        """Load every version folder of `models_dir/model_name`; failures become not-ready."""
        if model_name is None:
            return cls(hooks=hooks)
        model_dir = models_dir / model_name
        try:
            folders = version_folders(model_dir)
        except OSError as exc:
            logger.error("model %s: cannot list its versions in %s: %s", model_name, model_dir, exc)
            folders = []
        versions = {folder.name: _load_version(model_name, folder) for folder in folders}
        examples = {folder.name: _load_examples(folder, loaded.manifest) for folder in folders
                    if not isinstance(loaded := versions[folder.name], str)}
        if current_version is None:
            logger.error("model %s: MODEL_VERSION is not set; unversioned routes answer 503",
                         model_name)
        elif current_version not in versions:
            logger.error("model %s: MODEL_VERSION %s has no folder in %s", model_name,
                         current_version, model_dir)
        return cls(model_name, versions, current_version, examples, hooks)

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def live(self) -> dict[str, Any]:
        return {"live": True}

    def ready(self) -> dict[str, Any]:
        """Ready when every version of the model loaded and the current one exists."""
        if self.model_name is not None:
            self.model(self.model_name)
            for version in self.versions:
                self.model(self.model_name, version)
        return {"ready": True}

    def model_metadata(self, model: str, version: str | None = None) -> dict[str, Any]:
        """The protocol's model metadata; `parameters` adds what the manifest knows (labels,
        task, description, metrics on held-back rows and on the whole dataset, a tabular
        input's column names: `feature_names`, `{"<input>": [names]}`) and the version's
        example inputs (`examples`: `{"inputs": {"<input>": [rows]}}`)."""
        manifest = self.model(model, version).manifest
        metadata: dict[str, Any] = {
            "name": model,
            "versions": list(self.versions),
            "platform": manifest.platform,
            "inputs": [spec.metadata() for spec in manifest.inputs],
            "outputs": [spec.metadata() for spec in manifest.outputs],
        }
        parameters: dict[str, Any] = {}
        if manifest.labels is not None:
            parameters["labels"] = list(manifest.labels)
        for key in ("task", "description"):
            if getattr(manifest, key):
                parameters[key] = getattr(manifest, key)
        if manifest.metrics:
            parameters["metrics"] = dict(manifest.metrics)
        if isinstance(manifest.extra.get("feature_names"), dict):
            parameters["feature_names"] = manifest.extra["feature_names"]
        if manifest.version in self.examples:
            parameters["examples"] = self.examples[manifest.version]
        if parameters:
            metadata["parameters"] = parameters
        return metadata

    def model_ready(self, model: str, version: str | None = None) -> dict[str, Any]:
        self.model(model, version)
        return {"name": model, "ready": True}

    def infer(self, model: str, version: str | None, body: bytes,
              headers: Mapping[str, str], request_id: str = "") -> InferResult:
        """The answer to an infer request for `model` (at `version`, else the current one),
        through the pipeline; its `id` is `request_id` when the request has none. Raises the
        protocol's ModelAPIError (4xx, 503)."""
        return self.pipeline.handle(self.model(model, version), body, headers,
                                    request_id=request_id)

    def explain(self, name: str, version: str | None, body: bytes,
                headers: Mapping[str, str], request_id: str = "") -> InferResult:
        """An infer request answered with explanations (model_api.explainers): the outputs it
        names (default: the model's and the explanation's) and `parameters.method`."""
        return self.pipeline.handle(self.model(name, version), body, headers, explain=True,
                                    request_id=request_id)

    def model(self, name: str, version: str | None = None) -> LoadedModel:
        """The loaded model of `name` (at `version`, else the current one); 404 or 503 if none."""
        if name != self.model_name:
            served = f"'{self.model_name}'" if self.model_name else "no model (server routes only)"
            raise NotFound(f"unknown model {echoed(name)}; this endpoint serves {served}")
        version = resolve_version(name, version, self.current_version, list(self.versions))
        loaded = self.versions[version]
        if isinstance(loaded, str):
            raise NotReady(loaded)
        return loaded


def _load_version(name: str, folder: Path) -> LoadedModel | str:
    """The loaded version, or the (client-facing) reason it is not ready, logged in full."""
    not_ready = f"model {name!r} version {folder.name!r} is not ready"
    try:
        model = LoadedModel.load(folder)
    except ModelIntegrityError as exc:
        logger.error("%s: %s", not_ready, exc)
        return f"{not_ready}: its model file failed the sha256 check"
    except ModelLoadError as exc:
        logger.error("%s: %s", not_ready, exc)
        return f"{not_ready}: it failed to load (see the function's log)"
    except Exception:  # construction must never raise: an unforeseen failure is a 503 too
        logger.exception("%s: unexpected error while loading %s", not_ready, folder)
        return f"{not_ready}: it failed to load (see the function's log)"
    manifest = model.manifest
    if (manifest.name, manifest.version) != (name, folder.name):
        logger.error("%s: %s/manifest.json is for model %r version %r", not_ready, folder,
                     manifest.name, manifest.version)
        return f"{not_ready}: its manifest names another model or version"
    logger.info("model %s version %s loaded (providers %s)", name, folder.name,
                ", ".join(model.providers))
    return model


def _load_examples(folder: Path, manifest: Manifest) -> dict[str, Any]:
    """The version's example inputs as examples.json's document; the signature's own values
    when its file is missing or does not fit (logged: the model itself is still served)."""
    try:
        return model_examples.to_document(model_examples.load(folder, manifest))
    except model_examples.ExamplesError as exc:
        logger.error("model %s version %s: %s; its metadata gives examples built from its "
                     "signature", manifest.name, manifest.version, exc)
        return model_examples.to_document(model_examples.from_signature(manifest.inputs))


def _listed(versions: Iterable[str]) -> str:
    return ", ".join(f"'{version}'" for version in versions) or "none"
