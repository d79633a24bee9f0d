"""A job always reaches a final state (batch/state.py): AWS Batch's "Job State Change" events
through the real state handler, and the jobs API checking a stale record against Batch itself
(moto's Batch, with the real submitter)."""

from __future__ import annotations

import copy
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from batch import jobs, notify, state
from batch.aws import client
from batch.submit import BatchSubmitter
from local_api.batch.loop import load_handler
from tests.batch.conftest import MODEL, Cloud
from tests.batch.test_batch_trigger import RecordingSubmitter, event_for, handle
from tests.conftest import EVENTS_DIR, LambdaContext, catalog_file

EVENT = json.loads((EVENTS_DIR / "batch" / "job-state-change.json").read_text())


def running_job(cloud: Cloud) -> str:
    """A job the trigger submitted (as Batch job "batch-1") and a runner started, then lost."""
    outcome = handle(cloud, event_for(cloud), RecordingSubmitter())
    assert outcome.status == "submitted" and outcome.job_id is not None
    cloud.store.update(outcome.job_id, jobs.RUNNING, increment_attempts=True,
                       fields={"rows_read": 16_287})
    return outcome.job_id


def batch_event(job_id: str, batch_job_id: str = "batch-1", status: str = "FAILED"
                ) -> dict[str, Any]:
    event = copy.deepcopy(EVENT)
    event["detail"].update(jobId=batch_job_id, status=status)
    for variable in event["detail"]["container"]["environment"]:
        if variable["name"] == "BATCH_JOB_ID":
            variable["value"] = job_id
    return event


@pytest.fixture
def state_handler(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("JOBS_TABLE", cloud.table)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    return load_handler("batch_state")


def test_the_sample_event_is_what_batch_sends_when_it_gives_up() -> None:
    assert (EVENT["source"], EVENT["detail-type"]) == ("aws.batch", "Batch Job State Change")
    detail = EVENT["detail"]
    assert detail["status"] == "FAILED" and len(detail["attempts"]) == 3
    assert state.our_job_id(detail) == "example-3f2a9c1d0e7b"  # the runner's BATCH_JOB_ID


def test_batch_giving_up_marks_the_job_failed_with_its_reason_and_attempts(
        cloud: Cloud, state_handler: Any, lambda_context: LambdaContext) -> None:
    # Given a job whose runner was killed on every attempt: the table still says running
    job_id = running_job(cloud)
    # When Batch's FAILED event for it arrives
    answer = state_handler.lambda_handler(batch_event(job_id), lambda_context)
    # Then the job is failed, with Batch's reason and its three attempts
    assert answer == {"outcome": f"job {job_id} failed"}
    record = cloud.store.get(job_id)
    assert record is not None and record["status"] == "failed" and record["attempts"] == 3
    assert record["reason"] == (
        "AWS Batch gave up after 3 attempt(s): Essential container in task exited; last "
        "attempt exited with code 137; OutOfMemoryError: Container killed due to memory usage")
    assert record["rows_read"] == 16_287 and "finished_at" in record


def test_batch_giving_up_sends_the_job_end_event(
        cloud: Cloud, state_handler: Any, lambda_context: LambdaContext) -> None:
    # Given a rule that sends the job-end events to a queue, as a subscriber would
    job_id = running_job(cloud)
    events, sqs = client("events"), client("sqs")
    queue = sqs.create_queue(QueueName=f"ended-{job_id}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"]
                                   )["Attributes"]["QueueArn"]
    events.put_rule(Name=f"ended-{job_id}", EventPattern=json.dumps({
        "source": [notify.SOURCE], "detail-type": [notify.DETAIL_TYPE],
        "detail": {"job_id": [job_id]}}))
    events.put_targets(Rule=f"ended-{job_id}", Targets=[{"Id": "queue", "Arn": arn}])
    # When Batch gives up on the job
    state_handler.lambda_handler(batch_event(job_id), lambda_context)
    # Then its job-end event says failed, with the reason and the attempts
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                   WaitTimeSeconds=2).get("Messages", [])
    (detail,) = [json.loads(message["Body"])["detail"] for message in messages]
    assert (detail["job_id"], detail["status"], detail["attempts"]) == (job_id, "failed", 3)
    assert detail["reason"].startswith("AWS Batch gave up after 3 attempt(s)")


def test_a_success_or_another_batch_job_is_never_overwritten(
        cloud: Cloud, state_handler: Any, lambda_context: LambdaContext) -> None:
    job_id = running_job(cloud)
    # An event of an older Batch job of ours (the record now names batch-1) is dropped
    stale = state_handler.lambda_handler(batch_event(job_id, "batch-0"), lambda_context)
    assert "now runs as Batch job batch-1" in stale["outcome"]
    assert (cloud.store.get(job_id) or {})["status"] == "running"
    # A job the runner finished keeps its success
    cloud.store.update(job_id, jobs.SUCCEEDED)
    done = state_handler.lambda_handler(batch_event(job_id), lambda_context)
    assert done == {"outcome": f"job {job_id} already succeeded"}
    assert (cloud.store.get(job_id) or {})["status"] == "succeeded"
    # A job that is not ours, or an event of another status, is ignored
    foreign = batch_event(job_id)
    foreign["detail"]["container"]["environment"] = []
    assert "names no BATCH_JOB_ID" in state_handler.lambda_handler(foreign, lambda_context)[
        "outcome"]


def test_a_runner_failure_reason_is_kept_beside_batch_s(cloud: Cloud) -> None:
    job_id = running_job(cloud)
    cloud.store.update(job_id, fields={"reason": "attempt failed, to be retried: SlowDown"})
    assert state.on_batch_event(cloud.store, batch_event(job_id)["detail"]) == (
        f"job {job_id} failed")
    reason = (cloud.store.get(job_id) or {})["reason"]
    assert reason.startswith("AWS Batch gave up after 3 attempt(s)")
    assert reason.endswith("; the runner's last error: attempt failed, to be retried: SlowDown")


# ---------------------------------------------------------------------------- DescribeJobs

def moto_batch_queue(endpoint: str) -> tuple[str, str]:
    """A GPU compute environment, queue and job definition on moto's Batch (no Docker: its
    jobs run to SUCCEEDED at once)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/config", method="POST",
                                     data=json.dumps({"batch": {"use_docker": False}}).encode())
    urllib.request.urlopen(request).read()
    iam, ec2, batch = client("iam"), client("ec2"), client("batch")
    suffix = str(time.time_ns())
    role = iam.create_role(RoleName=f"batch-{suffix}", AssumeRolePolicyDocument="{}")
    profile = iam.create_instance_profile(InstanceProfileName=f"gpu-{suffix}")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"g{suffix}", Description="d", VpcId=vpc)
    environment = batch.create_compute_environment(
        computeEnvironmentName=f"gpu-{suffix}", type="MANAGED", state="ENABLED",
        serviceRole=role["Role"]["Arn"], computeResources={
            "type": "EC2", "minvCpus": 0, "maxvCpus": 4, "instanceTypes": ["g4dn.xlarge"],
            "subnets": [subnet], "securityGroupIds": [group["GroupId"]],
            "instanceRole": profile["InstanceProfile"]["Arn"]})["computeEnvironmentArn"]
    queue = batch.create_job_queue(
        jobQueueName=f"queue-{suffix}", state="ENABLED", priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}])["jobQueueArn"]
    definition = batch.register_job_definition(
        jobDefinitionName=f"runner-{suffix}", type="container", containerProperties={
            "image": "model-batch", "command": ["true"], "resourceRequirements": [
                {"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}]})
    return queue, definition["jobDefinitionArn"]


def test_the_jobs_api_never_shows_running_a_job_batch_failed_or_forgot(
        cloud: Cloud, monkeypatch: pytest.MonkeyPatch, lambda_context: LambdaContext,
        tmp_path: Path) -> None:
    monkeypatch.setenv("JOBS_TABLE", cloud.table)
    monkeypatch.setenv("MODEL_CATALOG", catalog_file(tmp_path, MODEL))
    monkeypatch.setattr(state, "RECONCILE_AFTER_SECONDS", 0)  # every record is stale
    queue, definition = moto_batch_queue(cloud.endpoint)
    # Given three jobs the table shows running: one Batch knows (submitted by the real
    # submitter), one Batch has forgotten, one Batch failed while its event was lost
    known = handle(cloud, event_for(cloud, version="v1"), BatchSubmitter(queue, definition))
    forgotten = handle(cloud, event_for(cloud, version="v2"), RecordingSubmitter())
    failed = handle(cloud, event_for(cloud, version="v3"), BatchSubmitter(queue, definition))
    for outcome in (known, forgotten, failed):
        assert outcome.job_id is not None
        cloud.store.update(outcome.job_id, jobs.RUNNING)
    app = load_handler("batch_jobs")
    app.jobs.batch = FailedBatch(client("batch"), failed.batch_job_id)
    template = json.loads((EVENTS_DIR / "batch" / "get-job.json").read_text())

    def get(job_id: str | None) -> dict[str, Any]:
        event = {**template, "path": f"/v2/batch/jobs/{job_id}",
                 "pathParameters": {"job_id": job_id}}
        answer = app.lambda_handler(event, lambda_context)
        assert answer["statusCode"] == 200
        return dict(json.loads(answer["body"]))

    # Then the one Batch knows (and has not failed) is left as the runner wrote it
    assert get(known.job_id)["status"] == "running"
    # and the others are failed, each with the reason
    gone = get(forgotten.job_id)
    assert gone["status"] == "failed" and "AWS Batch no longer knows job batch-1" in gone["reason"]
    lost = get(failed.job_id)
    assert lost["status"] == "failed" and lost["attempts"] == 3
    assert lost["reason"].startswith("AWS Batch gave up after 3 attempt(s)")


class FailedBatch:
    """moto's Batch, except that one job is reported FAILED as a real Batch reports it (moto
    runs every job to SUCCEEDED): the sample event's detail for that job."""

    def __init__(self, batch: Any, failed_job: str | None) -> None:
        self.batch, self.failed_job = batch, failed_job

    def describe_jobs(self, jobs: list[str]) -> dict[str, Any]:
        found = self.batch.describe_jobs(jobs=jobs)
        for index, job in enumerate(found["jobs"]):
            if job["jobId"] == self.failed_job:
                found["jobs"][index] = {**job, **{k: EVENT["detail"][k] for k in (
                    "status", "statusReason", "attempts")}}
        return dict(found)


def test_a_fresh_unfinished_record_is_not_checked(cloud: Cloud) -> None:
    job_id = running_job(cloud)
    record = cloud.store.get(job_id)
    assert record is not None

    class Unreachable:
        def describe_jobs(self, jobs: list[str]) -> dict[str, Any]:
            raise AssertionError("a live job's record needs no DescribeJobs")

    assert state.reconcile(cloud.store, record, Unreachable()) == record


def test_batch_unreachable_leaves_the_record_as_it_is(cloud: Cloud,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "RECONCILE_AFTER_SECONDS", 0)
    job_id = running_job(cloud)
    record = cloud.store.get(job_id)
    assert record is not None

    class Unreachable:
        def describe_jobs(self, jobs: list[str]) -> dict[str, Any]:
            raise EndpointConnectionError(endpoint_url="https://batch.us-east-1.amazonaws.com")

    assert state.reconcile(cloud.store, record, Unreachable()) == record


def test_a_stale_local_job_is_not_checked_against_batch(cloud: Cloud,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its `compute` field says where it runs: a local job has no Batch job to ask about."""
    monkeypatch.setattr(state, "RECONCILE_AFTER_SECONDS", 0)
    local = RecordingSubmitter()
    local.compute = jobs.LOCAL
    outcome = handle(cloud, event_for(cloud), local)
    assert outcome.job_id is not None
    record = cloud.store.get(outcome.job_id)
    assert record is not None and record["compute"] == jobs.LOCAL

    class Unreachable:
        def describe_jobs(self, jobs: list[str]) -> dict[str, Any]:
            raise AssertionError("a local job needs no DescribeJobs")

    assert state.reconcile(cloud.store, record, Unreachable()) == record
