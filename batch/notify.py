"""The job-end notification: one EventBridge event on the account's default bus when a job
reaches `succeeded` or `failed`, like SageMaker Asynchronous Inference's success and error
topics. Subscribe with a rule matching

    {"source": ["serverless-model-api.batch"], "detail-type": ["Batch Job Finished"]}

(add `"detail": {"model": [...], "status": ["failed"]}` to narrow it) and any EventBridge target:
SNS, SQS, Lambda, Step Functions. The detail holds the job's id, model, version, status, reason,
counts and output prefix, never its data. A notification that cannot be sent is logged and
never fails the job (the jobs API still answers its state).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from batch.aws import client

LOG = logging.getLogger(__name__)
SOURCE = "serverless-model-api.batch"
DETAIL_TYPE = "Batch Job Finished"
BUS_VARIABLE = "JOB_EVENTS_BUS"  # the bus to send to; the account's default bus when unset
DETAIL = ("job_id", "model", "model_version", "status", "reason", "rows_read", "outputs_written",
          "errors", "attempts", "output_prefix", "finished_at")


def job_finished(record: dict[str, Any], events: Any = None) -> bool:
    """Send the job-end event for the job `record` (its item as the jobs table holds it)
    through `events` (an EventBridge client; None: a new one); whether EventBridge took it."""
    detail = {key: record[key] for key in DETAIL if record.get(key) is not None}
    try:
        answer = (events or client("events")).put_events(Entries=[{
            "Source": SOURCE, "DetailType": DETAIL_TYPE, "Detail": json.dumps(detail),
            "EventBusName": os.environ.get(BUS_VARIABLE, "default")}])
    except (BotoCoreError, ClientError) as error:
        LOG.warning("job %s: the job-end event was not sent: %s", detail.get("job_id"), error)
        return False
    if answer.get("FailedEntryCount"):
        LOG.warning("job %s: EventBridge refused the job-end event: %s", detail.get("job_id"),
                    answer["Entries"][0].get("ErrorMessage"))
        return False
    return True
