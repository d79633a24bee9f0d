"""The Batch section of template.yaml: what issue 4 asks of each resource, least privilege."""

from __future__ import annotations

from typing import Any

import pytest
from cfnlint.decode import decode

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    found, errors = decode(str(ROOT / "template.yaml"))
    assert not errors, errors
    return dict(found)


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return dict(template["Resources"])


def actions(role: dict[str, Any]) -> set[str]:
    """Every action a role allows, but its own logs and X-Ray (which every function has)."""
    found = set()
    for policy in role["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            action = statement["Action"]
            found |= {action} if isinstance(action, str) else set(action)
    return {a for a in found if not a.startswith(("logs:", "xray:"))}


def test_bucket_is_private_encrypted_versioned_tls_only_and_tells_eventbridge(
        resources: dict[str, Any]) -> None:
    bucket = resources["BatchBucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["NotificationConfiguration"]["EventBridgeConfiguration"] == {
        "EventBridgeEnabled": True}
    [deny] = resources["BatchBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}}


def test_rule_sends_input_uploads_to_the_trigger_with_retries_and_a_dlq(
        resources: dict[str, Any]) -> None:
    function = resources["BatchTriggerFunction"]["Properties"]
    rule = function["Events"]["ObjectCreated"]["Properties"]
    assert rule["Pattern"]["detail-type"] == ["Object Created"]
    assert rule["Pattern"]["detail"]["object"]["key"] == [{"prefix": "batch/input/"}]
    assert rule["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["BatchDeadLetterQueue", "Arn"]}
    assert rule["RetryPolicy"]["MaximumRetryAttempts"] > 0
    assert function["DeadLetterQueue"]["TargetArn"] == {
        "Fn::GetAtt": ["BatchDeadLetterQueue", "Arn"]}
    assert function["EventInvokeConfig"]["MaximumRetryAttempts"] > 0


def test_trigger_may_only_claim_read_submit_and_dead_letter(resources: dict[str, Any]) -> None:
    assert actions(resources["BatchTriggerFunctionRole"]) == {
        "dynamodb:PutItem", "dynamodb:GetItem", "batch:SubmitJob", "sqs:SendMessage",
        "s3:DeleteObjectVersion"}
    # ... the delete only of an issued upload (batch/input/<model>/jobs/) whose job is gone
    statements = resources["BatchTriggerFunctionRole"]["Properties"]["Policies"][0][
        "PolicyDocument"]["Statement"]
    (delete,) = [s for s in statements if s["Action"] == "s3:DeleteObjectVersion"]
    assert delete["Resource"] == {"Fn::Sub": "${BatchBucket.Arn}/batch/input/*/jobs/*"}
    # The jobs API finishes a stale job that Batch has failed or forgotten (batch.state);
    # it creates jobs, signs their upload and output URLs, and erases them (batch.jobs_api);
    # (with a running .npy job's multipart uploads); it asks a model's function whether the
    # version is ready before it creates a job
    assert actions(resources["BatchJobsFunctionRole"]) == {
        "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:DeleteItem",
        "batch:DescribeJobs", "batch:TerminateJob", "s3:PutObject", "s3:GetObject",
        "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:ListBucket", "s3:ListBucketVersions",
        "s3:ListBucketMultipartUploads", "s3:AbortMultipartUpload", "events:PutEvents",
        "lambda:InvokeFunction"}
    (ask,) = [s for p in resources["BatchJobsFunctionRole"]["Properties"]["Policies"]
              for s in p["PolicyDocument"]["Statement"] if s.get("Sid") == "AskModelsReady"]
    assert str(ask["Resource"]).endswith("${ModelFunctionPrefix}*:live'}"), ask  # alias live
    # Both finish jobs Batch gave up on, so both send the job-end event (batch.notify)
    assert actions(resources["BatchStateFunctionRole"]) == {
        "dynamodb:GetItem", "dynamodb:UpdateItem", "sqs:SendMessage", "events:PutEvents"}
    for function in ("BatchTriggerFunction", "BatchJobsFunction", "BatchStateFunction"):
        assert resources[function]["Properties"]["Role"] == {
            "Fn::GetAtt": [f"{function}Role", "Arn"]}


def test_listing_multipart_uploads_is_never_conditioned_on_a_prefix(
        resources: dict[str, Any]) -> None:
    # IAM evaluates no s3:prefix for ListBucketMultipartUploads (only ListBucket and
    # ListBucketVersions have the key): a statement conditioned on it never matches, and every
    # erase (which aborts a job's uploads first) would be refused in AWS, not on moto.
    found = 0
    for role in ("BatchJobsFunctionRole", "BatchJobRole"):
        for policy in resources[role]["Properties"]["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                action = statement["Action"]
                if "s3:ListBucketMultipartUploads" in ([action] if isinstance(action, str)
                                                       else action):
                    found += 1
                    assert "Condition" not in statement, (role, statement)
    assert found == 2


def test_runner_role_reads_inputs_writes_outputs_and_updates_jobs(
        resources: dict[str, Any]) -> None:
    [policy] = resources["BatchJobRole"]["Properties"]["Policies"]
    by_sid = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert by_sid["ReadInputs"]["Resource"] == {"Fn::Sub": "${BatchBucket.Arn}/batch/input/*"}
    assert "s3:PutObject" not in by_sid["ReadInputs"]["Action"]
    assert by_sid["WriteOutputsAndCheckpoints"]["Resource"] == {
        "Fn::Sub": "${BatchBucket.Arn}/batch/output/*"}
    assert set(by_sid["RecordJobState"]["Action"]) == {"dynamodb:UpdateItem", "dynamodb:GetItem"}


def test_job_definition_needs_a_gpu_retries_and_times_out(resources: dict[str, Any]) -> None:
    definition = resources["BatchJobDefinition"]["Properties"]
    assert {"Type": "GPU", "Value": "1"} in definition["ContainerProperties"][
        "ResourceRequirements"]
    assert definition["RetryStrategy"]["Attempts"] >= 2
    assert definition["Timeout"]["AttemptDurationSeconds"] == {"Ref": "BatchJobTimeout"}
    environment = {e["Name"]: e["Value"] for e in definition["ContainerProperties"]["Environment"]}
    assert environment["REQUIRE_GPU"] == "true"
    compute = resources["BatchComputeEnvironment"]["Properties"]["ComputeResources"]
    # the AMI whose NVIDIA driver runs the image's CUDA 13 (batch/Dockerfile)
    assert compute["Ec2Configuration"] == [{"ImageType": "ECS_AL2023_NVIDIA"}]


def test_batch_gives_up_on_a_job_and_the_state_function_hears_it(
        resources: dict[str, Any]) -> None:
    function = resources["BatchStateFunction"]["Properties"]
    rule = function["Events"]["JobFailed"]["Properties"]
    assert rule["Pattern"] == {"source": ["aws.batch"], "detail-type": ["Batch Job State Change"],
                               "detail": {"jobQueue": [{"Ref": "BatchJobQueue"}],
                                          "status": ["FAILED"]}}
    assert rule["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["BatchDeadLetterQueue", "Arn"]}
    assert {"Ref": "BatchLayer"} in function["Layers"]
    [statement] = resources["BatchDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"][
        "Statement"]
    assert {"Fn::GetAtt": ["BatchStateFunctionJobFailed", "Arn"]} in statement["Condition"][
        "ArnEquals"]["aws:SourceArn"]


def test_batch_functions_have_log_groups_and_the_jobs_route(resources: dict[str, Any]) -> None:
    for function in ("BatchTriggerFunction", "BatchJobsFunction", "BatchStateFunction"):
        assert "RetentionInDays" in resources[f"{function}LogGroup"]["Properties"]
    assert "RetentionInDays" in resources["BatchRunnerLogGroup"]["Properties"]
    event = resources["BatchJobsFunction"]["Properties"]["Events"]["GetJob"]["Properties"]
    assert (event["Method"], event["Path"]) == ("GET", "/v2/batch/jobs/{job_id}")
    assert event["RestApiId"] == {"Ref": "ModelApi"}


def test_the_batch_functions_read_the_models_from_the_catalog_layer(
        resources: dict[str, Any]) -> None:
    # However many models: no list of them in a parameter or an environment variable
    for function in ("BatchTriggerFunction", "BatchJobsFunction"):
        properties = resources[function]["Properties"]
        assert {"Ref": "CatalogLayer"} in properties["Layers"]
        assert properties["Environment"]["Variables"]["MODEL_CATALOG"] == \
            "/opt/catalog/models.json"
        assert "BATCH_MODELS" not in properties["Environment"]["Variables"]
