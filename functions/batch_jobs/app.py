"""Lambda entry point of `GET /v2/batch/jobs/{job_id}`: a batch job's state and counts.

Reads the jobs table the trigger and the runner write; an unknown id is 404 `{"error": ...}`
like every other error of the API.
"""

import json
import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from batch.jobs import JobStore
from batch.keys import JOB_ID

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = APIGatewayRestResolver()
store = JobStore(os.environ["JOBS_TABLE"])
# Internal bookkeeping of the trigger's claim: not part of the job's public record.
PRIVATE = ("claim_token", "claim_expires_at")


def answer(status: int, payload: dict[str, Any]) -> Response:
    return Response(status_code=status, content_type="application/json",
                    body=json.dumps(payload))


@app.get("/v2/batch/jobs/<job_id>")
@tracer.capture_method(capture_response=False)
def get_job(job_id: str) -> Response:
    if not JOB_ID.fullmatch(job_id):
        return answer(404, {"error": f"no batch job {job_id!r}: ids look like <job>-<12 hex>"})
    job = store.get(job_id)
    if job is None:
        return answer(404, {"error": f"no batch job {job_id!r}"})
    return answer(200, {k: v for k, v in job.items() if k not in PRIVATE})


@app.exception_handler(Exception)
def unexpected_error(_: Exception) -> Response:
    logger.exception("unexpected error")
    request_id = app.lambda_context.aws_request_id if app.lambda_context else "unknown"
    return answer(500, {"error": f"internal error (request id {request_id})"})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
