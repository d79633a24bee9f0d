"""The API part of the deployment as CloudFormation deploys it: who may call it, what its
functions may do, what it logs. Read from each translated stack (the root and every group of
models: each group has its own REST API), so SAM's implicit resources count."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from model_api.routes import ROUTES

from tests.conftest import ROOT, STACKS
from tests.security.conftest import TEMPLATE, source_template, translate

MODES = ("API_KEY", "AWS_IAM")
LOGS_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents"}
XRAY_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords",
                "xray:GetSamplingRules", "xray:GetSamplingTargets"}
INVOKE = "lambda:InvokeFunction"
READINESS_PROBES = {"dynamodb:DescribeTable", "s3:ListBucket"}
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"


def inference_functions(path: Path = TEMPLATE) -> list[str]:
    """The functions of one stack running the protocol handler: ServerFunction in the root,
    one per model in each group."""
    return [name for name, r in source_template(path)["Resources"].items()
            if r["Type"] == "AWS::Serverless::Function"
            and r["Properties"].get("CodeUri", "").endswith("functions/inference/")]


STACK_IDS = [path.name for path in STACKS]


def of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


CAPTURE_KEY_ACTIONS = {"kms:Decrypt", "secretsmanager:GetSecretValue"}
REPORT_ACTIONS = {"s3:GetObject", "s3:ListBucket", "kms:Decrypt"}  # the server's drift reports


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_the_inference_functions_are_found() -> None:
    assert inference_functions() == ["ServerFunction"]
    models = [f for path in STACKS[1:] for f in inference_functions(path)]
    assert len(STACKS) >= 2 and len(models) >= 1, models


@pytest.mark.parametrize("path", STACKS, ids=STACK_IDS)
@pytest.mark.parametrize("mode", MODES)
def test_inference_functions_may_only_write_their_own_logs_and_traces(
        mode: str, path: Path) -> None:
    resources = translate(path, ApiAuth=mode)["Resources"]
    for name in inference_functions(path):
        properties = resources[name]["Properties"]
        role_name = properties["Role"]["Fn::GetAtt"][0]
        log_group = properties["LoggingConfig"]["LogGroup"]["Ref"]
        role = resources[role_name]["Properties"]
        assert not role.get("ManagedPolicyArns"), f"{name}: no managed policy (they are broad)"
        (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Principal"] == {"Service": "lambda.amazonaws.com"}, name
        statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
        assert all(s["Effect"] == "Allow" for s in statements), name
        actions = {a for s in statements for a in as_list(s["Action"])}
        # The server function also asks each model version whether it is ready: it may invoke
        # exactly the alias API Gateway invokes (live) of each model function, nothing else.
        invokes = {INVOKE} if name == "ServerFunction" else set()
        # Its readiness also asks whether the jobs table and bucket answer: DescribeTable on
        # that table and ListBucket (HeadBucket) on that bucket, nothing more.
        probes = READINESS_PROBES if name == "ServerFunction" else set()
        # A capturing model function reads the capture hash key (its records leave as log
        # lines: no right to the capture bucket), and nothing else of capture's.
        captures = "CAPTURE" in properties.get("Environment", {}).get("Variables", {})
        reads_key = CAPTURE_KEY_ACTIONS if captures else set()
        # The server function answers GET /v2/models/{model}/monitoring: it may read the drift
        # reports (capture bucket, monitoring/ only, decrypted through S3), never the records.
        reports = REPORT_ACTIONS if name == "ServerFunction" else set()
        assert actions == LOGS_ACTIONS | XRAY_ACTIONS | invokes | reads_key | reports | probes, \
            f"{name}: {sorted(actions)}"
        for statement in statements:
            probe = statement["Resource"] == {"Fn::GetAtt": ["BatchBucket", "Arn"]} and set(
                as_list(statement["Action"])) <= READINESS_PROBES  # HeadBucket: no object read
            if set(as_list(statement["Action"])) & {"s3:GetObject", "s3:ListBucket"} and not probe:
                assert "monitoring/" in json.dumps(statement), f"{name}: {statement}"
                assert "capture/" not in json.dumps(statement), f"{name}: {statement}"
            if "kms:Decrypt" in as_list(statement["Action"]) and name == "ServerFunction":
                assert "kms:ViaService" in json.dumps(statement["Condition"]), name
            if set(as_list(statement["Action"])) & CAPTURE_KEY_ACTIONS and not reports:
                assert "CaptureHashKey" in str(statement["Resource"]) or ":key/" in str(
                    statement["Resource"]), f"{name}: {statement['Resource']}"
            if set(as_list(statement["Action"])) & READINESS_PROBES and "monitoring/" not in \
                    json.dumps(statement):
                assert statement["Resource"] in ({"Fn::GetAtt": ["BatchJobsTable", "Arn"]},
                                                 {"Fn::GetAtt": ["BatchBucket", "Arn"]}), name
            if set(as_list(statement["Action"])) & LOGS_ACTIONS:
                assert statement["Resource"] == {"Fn::GetAtt": [log_group, "Arn"]}, name
            if INVOKE in as_list(statement["Action"]):
                # Only the alias live of this deployment's model functions (named with its
                # prefix: below), however many models there are.
                assert as_list(statement["Action"]) == [INVOKE]
                assert statement["Resource"] == (
                    "arn:aws:lambda:us-east-1:123456789012:function:model-api-*:live"), name
        attached = [p for p, r in resources.items()
                    if r["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
                    and {"Ref": role_name} in r["Properties"].get("Roles", [])]
        assert not attached, f"{name}: policies attached to its role from outside: {attached}"


@pytest.mark.parametrize("path", STACKS[1:], ids=STACK_IDS[1:])
def test_every_model_function_is_named_with_the_prefix_the_server_may_invoke(
        path: Path) -> None:
    resources = translate(path, ModelFunctionPrefix="model-api-")["Resources"]
    for name in inference_functions(path):
        model = source_template(path)["Resources"][name]["Properties"]["Environment"][
            "Variables"]["MODEL_NAME"]
        assert resources[name]["Properties"]["FunctionName"] == f"model-api-{model}", name


@pytest.mark.parametrize("path", STACKS, ids=STACK_IDS)
@pytest.mark.parametrize("mode", MODES)
def test_every_route_needs_the_api_key_or_a_sigv4_signature(mode: str, path: Path) -> None:
    root = path.name == TEMPLATE.name
    resources = translate(path, ApiAuth=mode)["Resources"]
    body = resources["ModelApi"]["Properties"]["Body"]
    expected = [{"api_key": []}] if mode == "API_KEY" else [{"AWS_IAM": []}]
    methods = [(path, verb, spec) for path, verbs in body["paths"].items()
               for verb, spec in verbs.items()]
    assert len(methods) > 3
    # Only the console's static files go without: they carry no data (docs/security.md)
    keyless = {(r.method.lower(), r.path) for r in ROUTES if r.keyless}
    assert keyless == {("get", "/"), ("get", "/docs"), ("get", "/static/{asset}")}
    for path, verb, spec in methods:
        wanted = ([] if mode == "API_KEY" else [{"NONE": []}]) if (verb, path) in keyless \
            else expected
        assert spec.get("security") == wanted, f"{verb.upper()} {path}: {spec.get('security')}"
        # API Gateway invokes through the function's resource policy, never as the caller.
        assert "credentials" not in spec["x-amazon-apigateway-integration"], path
    plans = of_type(resources, "AWS::ApiGateway::UsagePlan")
    keys = of_type(resources, "AWS::ApiGateway::ApiKey")
    if not root:  # a group's API: the root's one key and usage plan cover it
        assert not plans and not keys
    elif mode == "API_KEY":
        (plan,) = plans.values()
        assert plan["Properties"]["Throttle"] and plan["Properties"]["Quota"]["Period"] == "DAY"
        assert len(keys) == 1 and of_type(resources, "AWS::ApiGateway::UsagePlanKey")
    else:  # declared for API_KEY only: UseApiKey is false under AWS_IAM
        for found in (*plans.values(), *keys.values()):
            assert found["Condition"] == "UseApiKey"


@pytest.mark.parametrize("path", STACKS, ids=STACK_IDS)
@pytest.mark.parametrize("mode", MODES)
def test_the_stage_throttles_and_writes_json_access_logs_without_bodies(
        mode: str, path: Path) -> None:
    resources = translate(path, ApiAuth=mode)["Resources"]
    (stage,) = of_type(resources, "AWS::ApiGateway::Stage").values()
    (settings,) = stage["Properties"]["MethodSettings"]
    assert (settings["ResourcePath"], settings["HttpMethod"]) == ("/*", "*")
    assert settings["ThrottlingRateLimit"] and settings["ThrottlingBurstLimit"]
    assert settings["DataTraceEnabled"] is False, "execution logs would hold request bodies"
    access = stage["Properties"]["AccessLogSetting"]
    group = access["DestinationArn"]["Fn::GetAtt"][0]
    assert resources[group]["Properties"]["RetentionInDays"]
    fields = json.loads(access["Format"])
    assert {"requestId", "ip", "status", "latency", "apiKeyId"} <= set(fields), fields
    assert not any("body" in value.lower() for value in fields.values()), fields


@pytest.mark.parametrize("path", STACKS, ids=STACK_IDS)
def test_kms_key_and_reserved_concurrency_reach_every_inference_function_when_set(
        path: Path) -> None:
    default = translate(path)["Resources"]
    hardened = translate(path, LogKmsKeyArn=KMS_KEY,
                         FunctionReservedConcurrency="5")["Resources"]
    groups = ["ModelApiAccessLogGroup"] + [
        default[f]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        for f in inference_functions(path)]
    for group in groups:
        assert "KmsKeyId" not in default[group]["Properties"], group
        assert hardened[group]["Properties"]["KmsKeyId"] == KMS_KEY, group
    for function in inference_functions(path):
        assert "ReservedConcurrentExecutions" not in default[function]["Properties"], function
        assert str(hardened[function]["Properties"]["ReservedConcurrentExecutions"]) == "5"


@pytest.mark.parametrize("create", ["true", "false"])
def test_the_account_logging_role_exists_before_the_stage_logs_and_outlives_the_stack(
        create: str) -> None:
    resources = translate(CreateApiGatewayLoggingRole=create)["Resources"]
    after = resources["ModelApiAccessLogGroup"]["Metadata"]["AfterApiGatewayAccount"]
    # Each group's stack gets the account as a parameter, and its access log group (so its
    # stage) waits for it the same way.
    groups = [name for name, r in resources.items() if r["Type"] == "AWS::CloudFormation::Stack"]
    assert groups
    for group in groups:
        passed = resources[group]["Properties"]["Parameters"]["ApiGatewayAccount"]
        assert passed == after, group
    for path in STACKS[1:]:
        log_group = source_template(path)["Resources"]["ModelApiAccessLogGroup"]
        assert log_group["Metadata"]["AfterApiGatewayAccount"] == {"Ref": "ApiGatewayAccount"}
    for name in ("ApiGatewayAccount", "ApiGatewayLoggingRole"):
        assert resources[name]["Condition"] == "CreateApiGatewayLoggingRole"
        assert resources[name]["DeletionPolicy"] == "Retain", "other APIs may log through it"
    # A Ref orders the access log group (so the stage) after the account's role is set.
    assert after == ({"Ref": "ApiGatewayAccount"} if create == "true" else "")


def test_the_deployed_api_compresses_at_the_threshold_the_local_api_reads() -> None:
    """Payload compression is API Gateway's (MinimumCompressionSize on the RestApi), and the
    local API applies the same threshold it reads from the same template."""
    from local_api.template import load_template

    (api,) = of_type(translate()["Resources"], "AWS::ApiGateway::RestApi").values()
    deployed = api["Properties"]["MinimumCompressionSize"]
    assert int(deployed) == 1024
    assert load_template(ROOT / "template.yaml").minimum_compression_size == int(deployed)
