"""The model a batch job serves: which version, on which execution provider, checked.

The version is the one the input key names, else the registry's current one
(batch.models), chosen by the serving library's rule, as the API chooses it. onnxruntime-gpu
falls back to the CPU silently when its CUDA libraries do not match: the ACTIVE providers are
checked and a missing GPU is said loudly, or fails the attempt when one was required.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import time
from pathlib import Path

import onnxruntime as ort
from model_api.aws import hooks, model_store
from model_api.errors import ModelAPIError
from model_api.manifest import STORE_FIELD
from model_api.model import COPY, LoadedModel
from model_api.pipeline import Pipeline
from model_api.service import resolve_version, version_folders

from batch.failures import HostError, PermanentError
from batch.models import capture_configs, current_version

LOG = logging.getLogger("batch.runner")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def choose_providers(use_gpu: bool) -> list[str]:
    """CUDA first when this onnxruntime build has it (its CUDA libraries loaded first:
    preload_cuda), the CPU always as the fallback."""
    if cpu_only(use_gpu):
        return [CPU]
    preload_cuda()
    return [CUDA, CPU]


def cpu_only(use_gpu: bool) -> bool:
    """Whether a job runs on the CPU for sure: no GPU asked for, or no CUDA in this
    onnxruntime build (choose_providers then gives the CPU alone)."""
    return not (use_gpu and CUDA in ort.get_available_providers())


@functools.cache
def preload_cuda() -> None:
    """Load onnxruntime-gpu's CUDA and cuDNN libraries from the nvidia-* wheels installed
    beside it (the image's: batch/Dockerfile), once per process, before the first CUDA
    session: onnxruntime's CUDA provider has no search path of its own to them, so without
    this it finds none and onnxruntime falls back to the CPU
    (`onnxruntime.preload_dlls`, https://onnxruntime.ai/docs/install/#cuda-and-cudnn). What
    it prints (a library that did not load) is logged as a warning; load_model then says
    whether CUDA is active. A build without preload_dlls relies on the system's paths."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    said = io.StringIO()
    with contextlib.redirect_stdout(said):  # stdout is the job's metrics (EMF) lines
        preload()
    if said.getvalue().strip():
        LOG.warning("loading CUDA's libraries for onnxruntime: %s", said.getvalue().strip())


def version_dir(models_dir: Path, model: str, version: str | None,
                registry: Path | None = None) -> Path:
    """The folder of the version a job serves: `version`, else the registry's current one,
    chosen among the exported versions by the serving library's rule (as the API chooses).
    PermanentError says why there is none."""
    try:
        installed = [folder.name for folder in version_folders(models_dir / model)]
    except OSError:
        installed = []
    if not installed:
        raise PermanentError(f"unknown model {model!r}: no versions of it under {models_dir}")
    try:
        current = current_version(model, registry) if version is None else None
    except (OSError, ValueError) as error:  # no registry, or model_registry.RegistryError
        raise PermanentError(f"cannot read the registry of current versions: {error}") from None
    if version is None and current is None:
        raise PermanentError(f"model {model!r} is not in the registry (models.yaml), so it has "
                             "no current version; name one in the key: "
                             f"batch/input/{model}/versions/<version>/<job>")
    try:
        return models_dir / model / resolve_version(model, version, current, installed)
    except ModelAPIError as error:
        raise PermanentError(error.message) from None


def load_model(models_dir: Path, model: str, version: str | None, registry: Path | None,
               use_gpu: bool, require_gpu: bool, threads: int | None = None) -> LoadedModel:
    """Load the version a job serves with the best provider and check what is ACTIVE (a version
    kept in the model store is read from it, sha256-checked: model_api.store); `threads`:
    onnxruntime's intra-op threads (None: one per CPU, model_api.model.intra_op_threads).
    Raises PermanentError when it cannot load; HostError when `require_gpu` and CUDA is not
    active (another host may have it)."""
    providers = choose_providers(use_gpu)
    folder = version_dir(models_dir, model, version, registry)
    loaded = load_version(folder, providers, threads)
    active = list(loaded.providers)
    if CUDA in active:
        LOG.info("model %s version %s runs on the GPU (active providers %s)", model,
                 folder.name, active)
    elif require_gpu:
        raise HostError(f"a GPU was required but CUDA is not active (active {active}, "
                        f"available {ort.get_available_providers()})")
    else:
        LOG.warning("!!! model %s runs on the CPU: CUDA is not active (active %s, available "
                    "%s) !!!", model, active, ort.get_available_providers())
    return loaded


def load_version(folder: Path, providers: list[str], threads: int | None = None
                 ) -> LoadedModel:
    """Load and check one version folder on `providers`, as every process of a job loads it
    (the runner, and each of its JSON Lines workers: batch.workers): the sha256 checked, a
    version kept in the model store read from it (model_api.store), onnxruntime's threads not
    spinning, weights copied, `threads` intra-op threads (None: the default). Raises
    PermanentError when it cannot load."""
    model = folder.parent.name
    try:
        # A large model's file is read from the model store ($MODEL_STORE_BUCKET), the same
        # object and sha256 check as its API function's: no copy baked into the image.
        # No spinning: between model runs the job's reader and writer threads (batch.overlap)
        # need the cores that spinning onnxruntime threads would hold (measured: 0.32-0.36x
        # of the raw job with spinning, 0.38-0.54x without, breast-cancer-mlp on 2 cores)
        # Copied weights, pre-packed: a job is paid by its throughput, and its container holds
        # twice the largest model a function serves (docs/performance.md, "Large models")
        store = model_store.from_environment()
        started = time.perf_counter()
        loaded = LoadedModel.load(folder, providers=providers, store=store, spinning=False,
                                  weights_mode=COPY, threads=threads)
    except Exception as error:  # ModelLoadError, or onnxruntime's own: no retry loads it
        raise PermanentError(f"model {model!r} version {folder.name!r} failed to load: "
                             f"{error}") from error
    stored = loaded.manifest.extra.get(STORE_FIELD)
    LOG.info("model %s version %s loaded from %s in %.2f s", model, folder.name,
             f"the model store s3://{store.bucket}/{stored['key']}"
             if store is not None and isinstance(stored, dict) else folder,
             time.perf_counter() - started)
    return loaded


def job_pipeline(registry: Path | None, job_id: str | None = None) -> Pipeline:
    """The pipeline a job's rows go through: the batch path's limits and the installed hooks
    (class counts; data capture as the registry configures each model: batch.models, its
    records those of `job_id`), new for each process that works the job's rows (the runner,
    each JSON Lines worker)."""
    from model_api.limits import BATCH_RECORD

    return Pipeline(BATCH_RECORD, hooks.installed(capture_configs(registry), job_id),
                    path="batch")
