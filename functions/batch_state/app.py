"""Lambda entry point of AWS Batch's "Batch Job State Change" events (EventBridge): a job that
Batch gave up on is recorded `failed` in the jobs table with Batch's reason and its attempt
count (logic in batch.state, shipped in BatchLayer).

The rule sends only FAILED events of the stack's queue; anything the handler cannot apply (no
job of ours, a job that has since succeeded) is logged and dropped, never retried.
"""

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext
from model_api.aws.dependencies import JOBS_TABLE_ENV

from batch import state
from batch.jobs import JobStore

logger = Logger()
tracer = Tracer()
metrics = Metrics()
store = JobStore(os.environ[JOBS_TABLE_ENV])


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
@event_source(data_class=EventBridgeEvent)
def lambda_handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    outcome = state.on_batch_event(store, dict(event.detail))
    if outcome.endswith(" failed"):
        metrics.add_metric(name="JobsFailedByBatch", unit=MetricUnit.Count, value=1)
    logger.info("batch job state change", extra={"batch_job_id": event.detail.get("jobId"),
                                                  "status": event.detail.get("status"),
                                                  "outcome": outcome})
    return {"outcome": outcome}
