"""The batch path's AWS side for `make serve`: asynchronous jobs over HTTP with no AWS account.

`LocalStack` starts the local S3 (local_api.batch.s3: moto, presigned URLs checked as S3 checks
them) in a process of its own on 127.0.0.1, creates the versioned batch bucket with its
EventBridge notifications on, the jobs table, and an EventBridge rule with the template's
pattern (`Object Created` under batch/input/) whose target is an SQS queue. A thread here plays
EventBridge's Lambda target: it takes each event from the queue and hands it to the REAL
trigger handler (functions/batch_trigger/app.py), whose local submitter runs the runner as a
child process (local_api.batch.submitter), retrying it as Batch would; an event whose handler failed
goes back to the queue and is retried. The functions the local API serves get `overrides()`:
the endpoint, the local credentials and the resource names, so the batch jobs function signs
URLs that this S3 answers. A client then needs nothing but HTTP:

    POST /v2/models/<model>/jobs -> upload_url; curl -T rows.jsonl "$upload_url";
    GET the status_url until succeeded; curl each output URL; DELETE the job.

Local only: neither BatchLayer nor the runner's image carries it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from model_api.aws.dependencies import BATCH_BUCKET_ENV, JOBS_TABLE_ENV

from batch.aws import api_config, client
from batch.keys import INPUT_PREFIX
from batch.models import registry_path
from local_api.batch.loop import (
    BUCKET,
    REGION,
    ROOT,
    TABLE,
    context,
    create_bucket,
    create_table,
    load_handler,
    trigger_environment,
)
from local_api.logs import forward_in_thread
from model_registry.registry import PROJECT

LOG = logging.getLogger(__name__)
HOST = "127.0.0.1"
ACCESS_KEY = SECRET_KEY = "testing"
QUEUE = "local-model-api-batch-events"
RULE = "local-model-api-batch-object-created"


class LocalStack:
    """The local S3/DynamoDB/EventBridge/SQS and the EventBridge -> trigger delivery."""

    _port = 0
    _queue_url = ""

    def __init__(self, models_dir: Path = PROJECT.models_dir,
                 registry: Path | None = None, bucket: str = BUCKET, table: str = TABLE) -> None:
        self.models_dir, self.registry = models_dir.resolve(), registry or registry_path()
        self.bucket, self.table = bucket, table
        self.endpoint = ""
        self._server: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._trigger: ModuleType | None = None

    # ------------------------------------------------------------------------ life cycle
    def _launch(self, port: int) -> None:
        """The local S3 process on `port`, once it answers."""
        from local_api.background import wait_until_answering

        self._server = subprocess.Popen(
            [sys.executable, "-m", "local_api.batch.s3", "--host", HOST, "--port", str(port),
             "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
            start_new_session=True,  # a Ctrl-C stops the API first, then it stops this
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # whole lines (local_api.logs)
        forward_in_thread(self._server.stdout, "local-s3-log")
        wait_until_answering(port, self._server, "/moto-api/")

    def start(self) -> LocalStack:
        from local_api.background import free_port

        port = free_port()
        self._port = port
        self._launch(port)
        self.endpoint = f"http://{HOST}:{port}"
        os.environ.update({"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                           "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION})
        os.environ.pop("AWS_PROFILE", None)
        self._queue_url = self._create()
        os.environ.update(trigger_environment(self.models_dir, self.bucket, self.table,
                                              self.registry))
        self._trigger = load_handler("batch_trigger")
        self._thread = threading.Thread(target=self._deliver, name="eventbridge-to-trigger",
                                        daemon=True)
        self._thread.start()
        LOG.info("local S3, DynamoDB, EventBridge at %s: bucket %s, jobs table %s",
                 self.endpoint, self.bucket, self.table)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._server is not None:
            self._server.terminate()
            self._server.wait(timeout=20)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def credentials(self) -> dict[str, str]:
        """The local S3's credentials, as a function's environment carries them."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}

    def overrides(self, environments: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
        """For each function of the batch path among `environments` (function id -> its
        template environment), the variables that point it at this stack."""
        values = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                  "AWS_SECRET_ACCESS_KEY": SECRET_KEY, JOBS_TABLE_ENV: self.table,
                  BATCH_BUCKET_ENV: self.bucket, "BATCH_SUBMITTER": "local"}
        return {function: {k: v for k, v in values.items()
                           if k in environment or k.startswith("AWS_")}
                for function, environment in environments.items()
                if JOBS_TABLE_ENV in environment}  # the batch path's functions

    # ------------------------------------------------------------------------ resources
    def _create(self) -> str:
        """Bucket, queue, the rule, then the jobs table; the queue's URL. The table comes last:
        until it exists the jobs API answers 503, so no job can be created (after a restart of
        the local S3, say) whose upload's event would find no rule to deliver it."""
        create_bucket(self.bucket)
        s3, events, sqs = client("s3"), client("events"), client("sqs")
        s3.put_bucket_notification_configuration(
            Bucket=self.bucket,
            NotificationConfiguration={"EventBridgeConfiguration": {}})
        # A message taken by a receive whose caller is gone (one the local S3 answers late,
        # after it was stopped) is hidden this long: kept short, so the event is delivered
        # again within seconds (the trigger takes well under one).
        queue_url = sqs.create_queue(QueueName=QUEUE,
                                     Attributes={"VisibilityTimeout": "5"})["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"]
                                             )["Attributes"]["QueueArn"]
        # The pattern of the template's BatchTriggerFunction ObjectCreated rule.
        events.put_rule(Name=RULE, EventPattern=json.dumps({
            "source": ["aws.s3"], "detail-type": ["Object Created"],
            "detail": {"bucket": {"name": [self.bucket]},
                       "object": {"key": [{"prefix": INPUT_PREFIX}]}}}))
        events.put_targets(Rule=RULE, Targets=[{"Id": "trigger", "Arn": queue_arn}])
        create_table(self.table)
        return str(queue_url)

    # ------------------------------------------------------------------------ recovery
    def _recover(self, error: Exception) -> None:
        """After a failed read of the event queue: start the local S3 again if its process
        ended (on the same port, so every client's endpoint still holds), and set up its
        resources again if they are gone (it restarted empty: the jobs created before are gone
        too, and their status requests answer 404). Anything else (it is stopped or slow) is
        waited out: the next read tries again."""
        assert self._server is not None
        if self._server.poll() is not None:
            LOG.warning("the local S3 ended (exit status %s); starting it again on %s, empty: "
                        "jobs created before are gone", self._server.returncode, self.endpoint)
            try:
                self._launch(self._port)
            except (OSError, RuntimeError) as failure:
                LOG.error("the local S3 did not start again (%s); retrying", failure)
                return
        elif _code(error) != "AWS.SimpleQueueService.NonExistentQueue":
            return
        try:
            self._queue_url = self._create()
            LOG.warning("the local S3's bucket %s, jobs table %s and event queue were set up "
                        "again", self.bucket, self.table)
        except Exception as failure:  # botocore's: it went away again; the next read retries
            LOG.error("setting up the local S3 again failed (%s: %s); retrying",
                      type(failure).__name__, failure)

    # ------------------------------------------------------------------------ delivery
    def _deliver(self) -> None:
        sqs = client("sqs", api_config())  # a stopped S3 is noticed in seconds, not minutes
        failing = False
        while not self._stop.is_set():
            try:
                messages = sqs.receive_message(QueueUrl=self._queue_url, MaxNumberOfMessages=10,
                                               WaitTimeSeconds=1).get("Messages", [])
            except Exception as error:  # botocore's: the local S3 stopped, restarted, is slow
                if self._stop.is_set():
                    continue
                if not failing:  # one line per outage, not one a second
                    LOG.warning("reading the event queue failed (%s: %s); retrying every "
                                "second", type(error).__name__, error)
                failing = True
                self._recover(error)
                self._stop.wait(1)
                continue
            if failing:
                LOG.warning("the local S3 answers again; events are delivered")
                failing = False
            for message in messages:
                if self._invoke(json.loads(message["Body"])):
                    sqs.delete_message(QueueUrl=self._queue_url,
                                       ReceiptHandle=message["ReceiptHandle"])

    def _invoke(self, event: dict[str, Any]) -> bool:
        """The trigger on one event, as EventBridge's Lambda target; False to retry it."""
        detail_object = event.get("detail", {}).get("object", {})
        if "eTag" in detail_object:  # moto writes eTag; S3's EventBridge events say etag
            detail_object["etag"] = detail_object.pop("eTag")
        assert self._trigger is not None
        try:
            outcome = self._trigger.lambda_handler(event, context("batch-trigger"))
        except Exception:
            LOG.exception("the trigger failed on %s; the event will be retried",
                          detail_object.get("key"))
            return False
        LOG.info("trigger: %s", outcome)
        return True


def _code(error: Exception) -> str:
    """botocore's error code of `error` ("" when it is not an answer of the service)."""
    response = getattr(error, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
