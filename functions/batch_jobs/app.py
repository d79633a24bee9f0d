"""Lambda entry point of the batch jobs routes (model_api.routes, BATCH_JOBS): a job's state
and counts.

Reads the jobs table the trigger and the runner write; a record that has shown an unfinished
job for a while is checked against AWS Batch first (batch.state.reconcile), so a job Batch has
failed or forgotten is answered `failed`, never `running`. Errors are the serving library's
(`model_api.lambda_adapter.answer_errors`, from ServingLayer), like every other error of the API:
an unknown or malformed id is 404 `{"error": ...}`, and so is a path no route matches.
"""

import os
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from model_api.errors import NotFound
from model_api.lambda_adapter import (
    answer_errors,
    bind_routes,
    json_response,
    logger,
    metrics,
    tracer,
)
from model_api.routes import BATCH_JOBS

from batch.aws import client
from batch.jobs import JobStore
from batch.keys import JOB_ID
from batch.state import reconcile

tracer.patch(["botocore"])  # the shared tracer patches nothing; the jobs table calls show in X-Ray
app = answer_errors(APIGatewayRestResolver())
store = JobStore(os.environ["JOBS_TABLE"])
batch = client("batch")
# Internal bookkeeping of the trigger's claim: not part of the job's public record.
PRIVATE = ("claim_token", "claim_expires_at")


@tracer.capture_method(capture_response=False)
def get_job(job_id: str) -> Response:
    if not JOB_ID.fullmatch(job_id):
        raise NotFound(f"no batch job {job_id!r}: ids look like <job>-<12 hex>")
    job = store.get(job_id)
    if job is None:
        raise NotFound(f"no batch job {job_id!r}")
    job = reconcile(store, job, batch)
    return json_response(200, {k: v for k, v in job.items() if k not in PRIVATE})


bind_routes(app, BATCH_JOBS, {"get_job": get_job})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
