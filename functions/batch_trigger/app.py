"""Lambda entry point of the batch trigger: an S3 "Object Created" event from EventBridge
starts one batch job for that object version (logic in batch.trigger, shipped in BatchLayer).

A submission that fails raises, so Lambda retries the event and dead-letters it at the end;
uploads that can never run are answered here, recorded as failed jobs, and not retried.
"""

import os
import time
from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import (
    S3EventBridgeNotificationEvent,
    event_source,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from model_api.aws.dependencies import JOBS_TABLE_ENV

from batch import submit, trigger
from batch.aws import client
from batch.jobs import JobStore

logger = Logger()
tracer = Tracer()
metrics = Metrics()

settings = trigger.TriggerConfig.from_environment()
store = JobStore(os.environ[JOBS_TABLE_ENV])
discard = trigger.delete_version(client("s3"))  # an upload no job will ever erase
submitter = submit.from_environment()
METRIC = {"submitted": "JobsSubmitted", "duplicate": "DuplicateEvents",
          "rejected": "RejectedObjects"}


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
@event_source(data_class=S3EventBridgeNotificationEvent)
def lambda_handler(event: S3EventBridgeNotificationEvent, context: LambdaContext) -> dict[str, Any]:
    expires_at = time.time() + context.get_remaining_time_in_millis() / 1000
    outcome = trigger.handle(event, store, submitter, settings,
                             token=context.aws_request_id, claim_expires_at=expires_at,
                             discard=discard)
    metrics.add_metric(name=METRIC[outcome.status], unit=MetricUnit.Count, value=1)
    log = logger.warning if outcome.status == "rejected" else logger.info
    log("batch object", extra={"key": event.detail.object.key, **asdict(outcome)})
    return asdict(outcome)
