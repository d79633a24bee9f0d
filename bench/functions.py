"""The built template's inference functions and the environment Lambda would give each.

Both the in-process and the fresh-process measurements run a function with its template
environment plus what Lambda itself sets, tracing included: `Tracing: Active` gives the runtime
an X-Ray trace header, and Powertools then traces for real unless the template turns it off.
Segments go to a closed UDP port on 127.0.0.1, as cheap to send as to Lambda's daemon.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.common import BUILT_TEMPLATE, ROOT
from local_api.sandbox import rewrite_opt
from local_api.template import FunctionSpec, load_template

HANDLER = ROOT / "functions" / "inference" / "app.py"
TRACE_HEADER = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
XRAY_DAEMON = "127.0.0.1:2999"


@dataclass(frozen=True)
class InferenceFunction:
    """A function of the built template that runs the inference handler."""

    spec: FunctionSpec
    model: str | None  # None: the server routes

    @property
    def name(self) -> str:
        return self.spec.logical_id


def inference_functions() -> list[InferenceFunction]:
    """Functions built from functions/inference/app.py (models and server routes), server first.

    Recognised by their built handler file, not by their layers: other functions (batch jobs)
    use the serving layer too.
    """
    handler = HANDLER.read_bytes()
    functions = [InferenceFunction(spec, spec.environment.get("MODEL_NAME") or None)
                 for spec in load_template(BUILT_TEMPLATE).functions.values()
                 if _reads(spec.code_dir / HANDLER.name) == handler]
    return sorted(functions, key=lambda f: (f.model is not None, f.name))


def _reads(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def lambda_environment(function: InferenceFunction, models_dir: Path,
                       opt_dir: Path | None = None) -> dict[str, str]:
    """The template's variables with MODELS_DIR at `models_dir`, plus Lambda's own. With
    `opt_dir` (a function laid out as Lambda mounts it, local_api.sandbox), every other value
    that points into /opt points there instead: the server function's MODEL_CATALOG
    (/opt/catalog/models.json, its catalog layer)."""
    spec = function.spec
    variables = dict(spec.environment)
    if opt_dir is not None:
        variables = {key: rewrite_opt(value, opt_dir) for key, value in variables.items()}
    return {**variables, "MODELS_DIR": str(models_dir),
            "AWS_LAMBDA_FUNCTION_NAME": spec.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_size),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1", "LAMBDA_TASK_ROOT": str(spec.code_dir),
            "_X_AMZN_TRACE_ID": TRACE_HEADER, "AWS_XRAY_DAEMON_ADDRESS": XRAY_DAEMON,
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR", "TZ": ":UTC"}
