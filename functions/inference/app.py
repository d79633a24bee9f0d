"""Lambda entry point of every model function (and of the server routes).

Which model a function serves comes from its environment (MODEL_NAME, MODEL_VERSION) and its
model layer under /opt/models, so a new model needs a template entry, never new Python code.
The model is loaded and checked once per container, here at module scope, before any request;
a model too large for a layer is read from the model store ($MODEL_STORE_BUCKET) in the
background instead, its routes answering 503 with Retry-After until it is loaded.
The server function (no MODEL_NAME) learns the deployment's models from its catalog layer
(model_api.catalog), asks their functions for their readiness
(model_api.aws.invoked_repository) and forwards the root API's model routes to them
(model_api.aws.router); its console layer holds the pages.
"""

import os
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from model_api.aws.lambda_adapter import create_app, logger, metrics, tracer
from model_api.server import CATALOG_ENV

if not os.environ.get(CATALOG_ENV):  # a model function: its model, loaded and checked now
    from model_api.aws import hooks, model_store
    from model_api.service import InferenceService

    service = InferenceService.from_environment(hooks=hooks.installed(),
                                                store=model_store.from_environment())
    app = create_app(service)
else:  # the server function holds no model: neither numpy nor onnxruntime is imported
    from model_api.aws import invoked_repository
    from model_api.aws.router import ModelRouter
    from model_api.catalog import Catalog

    catalog = Catalog.required(os.environ)
    app = create_app(None, invoked_repository.for_catalog(catalog), router=ModelRouter(catalog))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
