"""Lambda entry point of the batch jobs routes (model_api.routes, BATCH_JOBS): asynchronous jobs
created with an upload URL, read back with their progress and output URLs, and erased
(logic in batch.jobs_api).

Reads and writes the jobs table the trigger and the runner write; a record that has shown an
unfinished job for a while is checked against AWS Batch first (batch.state.reconcile), so a
job Batch has failed or forgotten is answered `failed`, never `running`. Errors are the serving
library's (`model_api.aws.lambda_adapter.answer_errors`, from ServingLayer), like every other error
of the API: an unknown or malformed id, or a job of another model, is 404 `{"error": ...}`, and
so is a path no route matches.
"""

import os
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from model_api.aws.dependencies import JOBS_TABLE_ENV
from model_api.aws.lambda_adapter import (
    Response,
    RestApiResolver,
    answer_errors,
    bind_routes,
    json_response,
    logger,
    metrics,
    raw_body,
    tracer,
)
from model_api.errors import BadRequest
from model_api.routes import BATCH_JOBS

from batch.aws import api_config, client
from batch.jobs import JobStore
from batch.jobs_api import JobsApi, JobsApiConfig, invoked_readiness, presigner, store_faults

tracer.patch(["botocore"])  # the shared tracer patches nothing; the jobs table calls show in X-Ray
app = answer_errors(RestApiResolver())
settings = JobsApiConfig.from_environment()
# Short timeouts and one retry: a client is waiting (batch.aws.api_config).
jobs = JobsApi(settings, JobStore(os.environ[JOBS_TABLE_ENV], api_config()),
               presigner(api_config()), client("batch", api_config()),
               invoked_readiness(settings.models))


@tracer.capture_method(capture_response=False)
def create_job(model: str, version: str | None = None) -> Response:
    with store_faults(settings, jobs.store.table_name):
        return json_response(201, jobs.create(model, version,
                                              raw_body(app.current_event.raw_event)))


@tracer.capture_method(capture_response=False)
def get_job(job_id: str, model: str | None = None) -> Response:
    start = app.current_event.get_query_string_value("start", "0") or "0"
    if not start.isdigit():
        raise BadRequest(f"start={start!r}: expected the index of the first output (0, 1, ...)")
    with store_faults(settings, jobs.store.table_name):
        return json_response(200, jobs.describe(job_id, model, int(start)))


@tracer.capture_method(capture_response=False)
def delete_job(job_id: str, model: str | None = None) -> Response:
    with store_faults(settings, jobs.store.table_name):
        return json_response(200, jobs.erase(job_id, model))


bind_routes(app, BATCH_JOBS, {"create_job": create_job, "get_job": get_job,
                              "delete_job": delete_job})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
