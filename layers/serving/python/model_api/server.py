"""The server's own answers in the Open Inference Protocol: its metadata (`GET /v2`) and its
liveness (`GET /v2/health/live`).

They hold for every function, the server function included, which serves no model: this module
imports neither numpy nor onnxruntime, so neither does that function's cold start
(functions/inference/app.py; docs/performance.md, "Cold start").
"""

from __future__ import annotations

from typing import Any

from model_api import __version__

SERVER_NAME = "serverless-model-api"
# The protocol extensions this API serves: Triton's binary tensor data and model repository
# (index only: models are deployed with the stack, not loaded at run time).
EXTENSIONS = ("binary_tensor_data", "model_repository")
# The variable naming the deployment's model catalog (model_api.catalog): set on the server
# function and the batch functions, never on a model function, which is how
# functions/inference/app.py tells them apart without importing the catalog's module.
CATALOG_ENV = "MODEL_CATALOG"


def server_metadata() -> dict[str, Any]:
    """The protocol's server metadata: `{"name", "version", "extensions"}`."""
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def live() -> dict[str, Any]:
    """The protocol's server liveness: `{"live": true}` whenever the function answers."""
    return {"live": True}
