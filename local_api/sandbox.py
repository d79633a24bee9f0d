"""Lay a function out as Lambda does: its code first on sys.path, every layer merged into /opt.

Lambda extracts a function's layers, in order, into /opt (a later layer's file replaces an
earlier one's, folders merge) and starts python with /var/task, then /opt/python, then the
runtime's own packages on sys.path. Locally, /opt is `<state>/<FunctionId>/opt` in the serving
process's own temporary folder, a tree of symlinks into the built layer folders, and
environment values that point into /opt are rewritten to point there, so
MODELS_DIR=/opt/models finds the model layer's files.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from local_api.template import FunctionSpec

LOG = logging.getLogger(__name__)

LAMBDA_OPT = "/opt"
ACCOUNT_ID = "123456789012"
# What Lambda's python runtime holds besides the standard library: boto3 and its dependencies.
# Only these are taken from the local API's own venv, so a package missing from the layers fails
# locally as it would in Lambda instead of being found in the venv.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")


@dataclass(frozen=True)
class Sandbox:
    """Everything a worker process needs to run one function as Lambda would."""

    function: FunctionSpec
    opt_dir: Path
    python_path: tuple[str, ...]
    environment: dict[str, str]
    # Where the worker's data capture lines go (local_api.worker plays the CloudWatch Logs
    # subscription of a deployed model function); None: its output is passed through untouched.
    capture_dir: Path | None = None


def merge_tree(target: Path, sources: Sequence[Path]) -> None:
    """Merge folders as layer extraction does: a later source's file wins, folders merge."""
    entries: dict[str, list[Path]] = {}
    for source in sources:
        for entry in sorted(source.iterdir()):
            entries.setdefault(entry.name, []).append(entry)
    target.mkdir(parents=True, exist_ok=True)
    for name, found in entries.items():
        # Only the folders extracted after the last plain file of that name survive.
        folders: list[Path] = []
        for entry in reversed(found):
            if not entry.is_dir():
                break
            folders.insert(0, entry)
        if len(folders) > 1:
            merge_tree(target / name, folders)
        else:
            (target / name).symlink_to(found[-1].resolve())


def _runtime_dir(state_dir: Path) -> Path:
    """A folder holding only the packages Lambda's runtime ships (symlinks into this venv)."""
    runtime = state_dir / "runtime" / "python"
    shutil.rmtree(runtime, ignore_errors=True)
    runtime.mkdir(parents=True)
    for name in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (runtime / source.name).symlink_to(source)
    return runtime


def rewrite_opt(value: str, opt_dir: Path) -> str:
    """`value` with a leading /opt replaced by `opt_dir` (a path into a layer: MODELS_DIR,
    MODEL_CATALOG); any other value as it is."""
    if value == LAMBDA_OPT or value.startswith(LAMBDA_OPT + "/"):
        return str(opt_dir) + value[len(LAMBDA_OPT):]
    return value


def lambda_environment(function: FunctionSpec, opt_dir: Path, region: str) -> dict[str, str]:
    """The environment Lambda gives the function, then the template's, with /opt rewritten."""
    name = function.function_name
    env = {
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(function.timeout),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "$LATEST-local",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{function.runtime}",
        "AWS_SAM_LOCAL": "true",
        "LAMBDA_TASK_ROOT": str(function.code_dir),
        "_HANDLER": function.handler,
        "TZ": ":UTC",
        "LANG": "en_US.UTF-8",
        "PATH": f"/usr/local/bin:/usr/bin:/bin:{opt_dir}/bin",
        "LD_LIBRARY_PATH": f"{function.code_dir}/lib:{opt_dir}/lib",
    }
    env.update({key: rewrite_opt(value, opt_dir) for key, value in function.environment.items()})
    # No X-Ray daemon runs locally: Powertools' Tracer would only log failed sends.
    env["POWERTOOLS_TRACE_DISABLED"] = "true"
    return env


def prepare(functions: Iterable[FunctionSpec], state_dir: Path, region: str,
            given: Mapping[str, str] | None = None,
            overrides: Mapping[str, Mapping[str, str]] | None = None,
            capture_dir: Path | None = None) -> dict[str, Sandbox]:
    """Build each function's merged /opt under state_dir (rebuilt every time: symlinks only).
    `given` is added to every function's environment after the template's, as Lambda adds its
    own (the local Lambda endpoint and credentials, local_api.lambda_endpoint); `overrides`
    (function id -> variables) replace or add variables last, like SAM CLI's --env-vars: the
    local AWS endpoints of the batch path (local_api.batch.stack). `capture_dir`: the local
    capture store the workers' capture lines are written to (Sandbox.capture_dir)."""
    runtime = str(_runtime_dir(state_dir).absolute())
    sandboxes = {}
    for function in functions:
        opt_dir = (state_dir / function.logical_id / "opt").absolute()
        shutil.rmtree(opt_dir, ignore_errors=True)
        layers = [layer for layer in function.layer_dirs if layer.is_dir()]
        for missing in set(function.layer_dirs) - set(layers):
            LOG.warning("%s: layer folder %s does not exist", function.logical_id, missing)
        merge_tree(opt_dir, layers)
        if function.layer_dirs and not (opt_dir / "python").is_dir():
            LOG.warning("%s: its layers hold no python/ folder: were they built (`sam build`)?",
                        function.logical_id)
        python_path = (str(function.code_dir), str(opt_dir / "python"), runtime)
        environment = {**lambda_environment(function, opt_dir, region), **(given or {}),
                       **(overrides or {}).get(function.logical_id, {})}
        sandboxes[function.logical_id] = Sandbox(function, opt_dir, python_path, environment,
                                                 capture_dir)
    return sandboxes


def default_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
