"""The protocol's operations for the models one function serves: what every route calls.

A function serves one model (every version folder under `$MODELS_DIR/$MODEL_NAME/`) or, with no
MODEL_NAME, none (the server routes). Loading happens once, at construction, and never raises:
a version that fails its checks is kept as "not ready" and answers 503 with the reason logged,
so a bad deployment shows up in health checks and alarms instead of as a crashing container.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

import model_api.examples as model_examples
from model_api.codec import InferResult
from model_api.errors import Loading, NotFound, NotReady, echoed, no_version
from model_api.limits import API_REQUEST
from model_api.manifest import MANIFEST_FILE, Manifest, ManifestError, load_manifest
from model_api.model import LoadedModel, ModelIntegrityError, ModelLoadError
from model_api.names import version_key
from model_api.pipeline import Hook, Pipeline

if TYPE_CHECKING:  # model_api.store is imported where a stored version is read (_stored_version)
    from model_api.store import Progress, RangeReader

__all__ = ["InferResult", "InferenceService"]

logger = logging.getLogger(__name__)

DEFAULT_MODELS_DIR = "/opt/models"
# How long an infer or explain request waits for a version still loading from the model store
# before it is answered 503 with Retry-After (must stay under the function's timeout: the
# template sets it with the timeout of a store-backed function). On Lambda the environment is
# frozen between invocations, so the load advances only while requests wait
# (docs/architecture.md, "Large models").
LOAD_WAIT_VARIABLE = "MODEL_LOAD_WAIT_S"
DEFAULT_LOAD_WAIT_S = 10.0
# Lambda's own: how this execution environment was started. Where nothing waits on the init
# (provisioned concurrency, SnapStart's snapshot at publish time), a store-backed model loads
# before the init ends instead of in the background.
INITIALIZATION_VARIABLE = "AWS_LAMBDA_INITIALIZATION_TYPE"
LOAD_DURING_INIT = frozenset({"provisioned-concurrency", "snap-start"})
# A read that has not started yet is expected to take its size at this rate (the low end of
# single-stream downloads into Lambda measured by others: docs/performance.md, "Large models"),
# for its first Retry-After; once bytes arrive, their own rate says
EXPECTED_READ_BYTES_PER_S = 50e6


# one read in progress: compared by identity
class Pending(msgspec.Struct, eq=False):
    """A version being read from the model store (or waiting its turn): its manifest (for the
    metadata routes), how far the read is, and when it started."""

    manifest: Manifest
    progress: Progress
    started: float = msgspec.field(default_factory=time.monotonic)
    finished: threading.Event = msgspec.field(default_factory=threading.Event)

    def retry_after(self) -> int:
        """Seconds until the read is likely done (at least 1): from its rate so far, else
        (nothing read yet) from its size at EXPECTED_READ_BYTES_PER_S."""
        elapsed = time.monotonic() - self.started
        fraction = self.progress.fraction()
        if fraction <= 0 or elapsed <= 0:
            return max(1, math.ceil(self.progress.total / EXPECTED_READ_BYTES_PER_S))
        return max(1, math.ceil(elapsed * (1 - fraction) / fraction))

    def loading(self, name: str) -> Loading:
        """The 503 of a request for it now: its message and Retry-After give the same seconds."""
        from model_api.store import size_text  # (imported already: the version is stored)

        seconds = self.retry_after()
        return Loading(f"model {name!r} version {self.manifest.version!r} is loading: "
                       f"{self.progress.fraction():.0%} of {size_text(self.progress.total)} "
                       f"read from the model store; retry after {seconds} s", seconds)


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
        raise no_version(name, version, installed)
    return version


class InferenceService:
    """Metadata, health and inference for one model's versions (or for none)."""

    def __init__(self, model_name: str | None = None,
                 versions: Mapping[str, LoadedModel | str | Pending] | None = None,
                 current_version: str | None = None,
                 examples: Mapping[str, dict[str, Any]] | None = None,
                 hooks: Sequence[Hook] = ()) -> None:
        """`versions` maps each version to its model, or to why it is not ready; `examples`
        maps a version to its example inputs (examples.json's document, `{"inputs": {...}}`);
        `hooks` run around the model on every infer and explain request (model_api.pipeline);
        a Pending version is still loading (503 with Retry-After until it is loaded).
        """
        self.model_name = model_name
        self.pipeline = Pipeline(API_REQUEST, hooks, path="api")
        given = dict(versions or {})
        self.versions = {version: given[version] for version in sorted(given, key=version_key)}
        self.current_version = current_version
        self.examples = dict(examples or {})
        # Seconds an infer or explain request waits for a version still loading (Pending).
        self.load_wait_s = DEFAULT_LOAD_WAIT_S

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ,
                         hooks: Sequence[Hook] = (),
                         store: RangeReader | None = None) -> InferenceService:
        """The service of a function's MODELS_DIR, MODEL_NAME and MODEL_VERSION; versions kept
        in the model store are read from `store` in the background, except where nothing
        waits on the init ($AWS_LAMBDA_INITIALIZATION_TYPE provisioned-concurrency or
        snap-start: loaded before it ends)."""
        service = cls.from_directory(
            Path(environ.get("MODELS_DIR") or DEFAULT_MODELS_DIR),
            environ.get("MODEL_NAME") or None,
            environ.get("MODEL_VERSION") or None,
            hooks, store,
            background=environ.get(INITIALIZATION_VARIABLE) not in LOAD_DURING_INIT)
        wait = environ.get(LOAD_WAIT_VARIABLE, "")
        try:
            service.load_wait_s = float(wait) if wait else DEFAULT_LOAD_WAIT_S
        except ValueError:
            logger.warning("%s=%r is not a number of seconds; waiting %s s", LOAD_WAIT_VARIABLE,
                           wait, DEFAULT_LOAD_WAIT_S)
        return service

    @classmethod
    def from_directory(cls, models_dir: Path, model_name: str | None,
                       current_version: str | None,
                       hooks: Sequence[Hook] = (), store: RangeReader | None = None,
                       background: bool = False) -> InferenceService:
        """Load every version folder of `models_dir/model_name`; failures become not-ready.
        A version whose manifest names a stored object is read from `store` (model_api.store);
        with `background`, in one thread, one version at a time (so the memory a function
        needs is its largest version's load peak, not the sum: model_registry.placement),
        the version answering 503 with Retry-After until it is loaded."""
        if model_name is None:
            return cls(hooks=hooks)
        model_dir = models_dir / model_name
        try:
            folders = version_folders(model_dir)
        except OSError as exc:
            logger.error("model %s: cannot list its versions in %s: %s", model_name, model_dir, exc)
            folders = []
        stored = {folder.name: pending for folder in folders
                  if (pending := _stored_version(folder, store)) is not None} \
            if background else {}
        versions: dict[str, LoadedModel | str | Pending] = {
            folder.name: stored.get(folder.name) or _load_version(model_name, folder, store)
            for folder in folders}
        examples = {folder.name: _load_examples(folder, manifest) for folder in folders
                    if (manifest := _manifest_of(versions[folder.name])) is not None}
        if current_version is None:
            logger.error("model %s: MODEL_VERSION is not set; unversioned routes answer 503",
                         model_name)
        elif current_version not in versions:
            logger.error("model %s: MODEL_VERSION %s has no folder in %s", model_name,
                         current_version, model_dir)
        service = cls(model_name, versions, current_version, examples, hooks)
        if stored:
            threading.Thread(target=service._load_stored,
                             args=([folder for folder in folders if folder.name in stored],
                                   store), name="model-store-load", daemon=True).start()
        return service

    def _load_stored(self, folders: list[Path], store: RangeReader | None) -> None:
        """Read each stored version in turn (the background thread of from_directory)."""
        assert self.model_name is not None
        for folder in folders:
            pending = self.versions[folder.name]
            assert isinstance(pending, Pending)
            pending.started = time.monotonic()
            loaded = _load_version(self.model_name, folder, store, pending.progress)
            self.versions[folder.name] = loaded
            pending.finished.set()
            if not isinstance(loaded, str):
                logger.info("model %s version %s read from the model store in %.1f s",
                            self.model_name, folder.name, time.monotonic() - pending.started)

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
        manifest = self.manifest(model, version)
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
        return self.pipeline.handle(self.model(model, version, wait=True), body, headers,
                                    request_id=request_id)

    def explain(self, name: str, version: str | None, body: bytes,
                headers: Mapping[str, str], request_id: str = "") -> InferResult:
        """An infer request answered with explanations (model_api.explainers): the outputs it
        names (default: the model's and the explanation's) and `parameters.method`."""
        return self.pipeline.handle(self.model(name, version, wait=True), body, headers,
                                    explain=True, request_id=request_id)

    def model(self, name: str, version: str | None = None, wait: bool = False) -> LoadedModel:
        """The loaded model of `name` (at `version`, else the current one); 404 or 503 if none.
        A version still loading from the model store raises Loading (503 with Retry-After),
        after waiting for it up to `load_wait_s` seconds when `wait` (infer and explain)."""
        version = self._version(name, version)
        loaded = self.versions[version]
        if isinstance(loaded, Pending):
            if wait:
                loaded.finished.wait(self.load_wait_s)
            current = self.versions[version]
            if isinstance(current, Pending):
                raise current.loading(name)
            loaded = current
        if isinstance(loaded, str):
            raise NotReady(loaded)
        return loaded

    def manifest(self, name: str, version: str | None = None) -> Manifest:
        """The manifest of `name` at `version` (else the current one), loaded or still loading;
        404 or 503 (failed to load) as `model`."""
        found = self.versions[self._version(name, version)]
        return found.manifest if isinstance(found, Pending) else self.model(name, version).manifest

    def _version(self, name: str, version: str | None) -> str:
        if name != self.model_name:
            served = f"'{self.model_name}'" if self.model_name else "no model (server routes only)"
            raise NotFound(f"unknown model {echoed(name)}; this endpoint serves {served}")
        return resolve_version(name, version, self.current_version, list(self.versions))


def _stored_version(folder: Path, store: RangeReader | None) -> Pending | None:
    """A Pending for a version whose file is in the model store (and a store is given); None
    for any other (loaded at once, its failures reported by _load_version)."""
    if store is None:
        return None
    from model_api.store import Progress, StoredObject, external_data

    try:
        manifest = load_manifest(folder / MANIFEST_FILE)
        stored = StoredObject.from_manifest(dict(manifest.extra), manifest.sha256)
        data = external_data(dict(manifest.extra))
    except (ManifestError, ValueError):
        return None
    if stored is None:
        return None
    return Pending(manifest, Progress(stored.size + (data.size if data is not None else 0)))


def _manifest_of(found: LoadedModel | str | Pending) -> Manifest | None:
    return None if isinstance(found, str) else found.manifest


def _load_version(name: str, folder: Path, store: RangeReader | None = None,
                  progress: Progress | None = None) -> LoadedModel | str:
    """The loaded version, or the (client-facing) reason it is not ready, logged in full."""
    not_ready = f"model {name!r} version {folder.name!r} is not ready"
    try:
        model = LoadedModel.load(folder, store=store, progress=progress)
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
