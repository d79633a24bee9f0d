"""Render the deployment's templates, whole files, from template.src.yaml, models.yaml and the
route table (model_api.routes): `make template`.

template.src.yaml is written by hand (the root API, shared layers, the server and batch
functions, with their comments); template.yaml, the root stack SAM deploys, is that document
with what the registry and the route table add: the server and batch jobs functions' API events,
one nested stack per group of models, each group's API stage in the usage plan and its URL among
the Outputs. Nothing generated is written into a hand-written file.
Each group of at most GROUP_SIZE models (models.yaml `group`) is one generated nested stack,
stacks/models-<group>.yaml: its own REST API (a copy of the root's ModelApi, with the Parameters
and Conditions it uses; the root's one API key and usage plan cover it), and each model's
layer, function, routes, log group, role and alarms. A model therefore adds nothing to the root
stack but its share of a group, and a group's stack and API stay within their quotas
(model_registry.quotas; docs/architecture.md). The root API serves every model's routes too,
with the model as a path parameter, through the server function (model_api.aws.router).

Both are rendered as data (yaml of dicts, intrinsics in their long form). `--check` fails when
one is stale; `make check-generated` (model_registry.generated) checks every generated file.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import yaml
from model_api.routes import BATCH_JOBS, MODEL, SERVER, Route, routes_of
from samtranslator.yaml_helper import intrinsics_multi_constructor

from model_registry import placement
from model_registry.registry import (
    PROJECT,
    REGISTRY,
    ROOT,
    STACKS,
    ModelEntry,
    Project,
    RegistryError,
    load,
)
from model_registry.registry import run as registry_run
from model_registry.sizing import Sizing

TEMPLATE = ROOT / "template.yaml"
# The hand-written source of template.yaml (its comments say what is added to it).
SOURCE_NAME = "template.src.yaml"
SOURCE = ROOT / SOURCE_NAME
# The functions of the source that serve the route table's routes: their Events are rendered.
SERVER_FUNCTION, BATCH_JOBS_FUNCTION = "ServerFunction", "BatchJobsFunction"
# The usage plan that lists every API stage of the deployment (the groups' are added).
USAGE_PLAN = "ModelApiUsagePlan"
# Every model function is named <ModelFunctionPrefix><model> (the root's parameter, passed to
# each group), so the server function finds any model's function from its name alone
# (model_api.catalog).
PREFIX_PARAMETER = "ModelFunctionPrefix"
# The server function's events for the model routes it forwards (model_api.aws.router).
ROUTER_PREFIX = "Router"
# What a group's stack copies from the root template: its REST API and the API's access log.
GROUP_API = ("ModelApi", "ModelApiAccessLogGroup")
# The root's shared layers, declared again in each group (their `sam build` reuses one build:
# layers/Makefile): a layer passed down as a parameter is not found by `sam local invoke`.
SHARED_LAYERS = ("RuntimeLayer", "ServingLayer")
# The root's ApiGatewayAccount (or ""), passed on so a group's API is set up after it.
ACCOUNT_PARAMETER = "ApiGatewayAccount"
# The root's data capture resources a capturing model's function uses, passed on to its group
# as parameters of the same names (Ref: the bucket's name, the key's id, the secret's ARN).
CAPTURE_PARAMETERS = {
    "CaptureBucket": "The root's capture bucket (records go to capture/<model>/...).",
    "CaptureKey": "The id of the root's KMS key that encrypts the capture bucket and hash key.",
    "CaptureHashKey": "The ARN of the root's secret holding the capture hash key (HMAC).",
    "CaptureFirehoseRole": "The name of the root's role Firehose writes capture records with.",
    "CaptureLogsRole": "The name of the root's role CloudWatch Logs sends to Firehose with.",
}
# The root's model store a store-backed model's function reads (model_registry.placement),
# passed on to its group as parameters of the same names (Ref: the bucket's name, the key's id).
STORE_PARAMETERS = {
    "ModelStoreBucket": "The root's model store (models too large for a layer, "
                        "models/<model>/<version>/model.onnx).",
    "ModelStoreKey": "The id of the root's KMS key that encrypts the model store.",
}
# A store-backed model's function: API Gateway's 29 s integration limit as its timeout, and
# how long a request waits for a version still loading before its 503 with Retry-After
# (model_api.service; under the timeout, with time left to answer).
STORE_TIMEOUT_S, STORE_LOAD_WAIT_S = 29, 20
# A capturing model's log lines that are capture records (model_api/capture/record.py MARKER).
CAPTURE_FILTER_PATTERN = "{ $.capture = 1 }"
# Firehose buffers a model's records this long or this much before one object (what is read
# back first waits for it); CloudWatch Logs delivers within seconds of the function's write.
CAPTURE_BUFFER_S, CAPTURE_BUFFER_MB = 300, 64
# Conditions only model functions use (the root's own functions do not): declared in each group.
GROUP_CONDITIONS: dict[str, Any] = {
    "UseSnapStart": {"Fn::Equals": [{"Ref": "SnapStart"}, "Enabled"]},
    "HasProvisionedConcurrency": {"Fn::Not": [{"Fn::Equals": [
        {"Ref": "ProvisionedConcurrency"}, 0]}]},
}


def group_file(group: int) -> str:
    """A group's template, relative to the repository root."""
    return f"{STACKS}/models-{group}.yaml"


def group_id(group: int) -> str:
    """A group's nested stack in the root template."""
    return f"ModelsGroup{group}"


def api_events(routes: tuple[Route, ...], model: str | None = None,
               prefix: str = "") -> dict[str, Any]:
    """The `Events` of a function serving `routes` on ModelApi (`{model}` filled in when `model`
    is given; `prefix` before each event name)."""
    return {f"{prefix}{route.name}": {"Type": "Api", "Properties": {
        "RestApiId": {"Ref": "ModelApi"},
        "Path": route.for_model(model) if model else route.path,
        "Method": route.method,
        **({"Auth": _keyless_auth()} if route.keyless else {})}} for route in routes}


def _keyless_auth() -> dict[str, Any]:
    """A keyless route (the console's static files) opts out of the API key and, under ApiAuth
    AWS_IAM, of the default IAM authorizer (NONE is only valid where there is a default)."""
    return {"Fn::If": ["UseIamAuth", {"Authorizer": "NONE"}, {"ApiKeyRequired": False}]}


def server_events() -> dict[str, Any]:
    """The server function's events: its own routes, then every model route with the model as a
    path parameter (`Router<route>`), which it forwards to the model's function."""
    return {**api_events(routes_of(SERVER)), **api_events(routes_of(MODEL), prefix=ROUTER_PREFIX)}


def _sub(text: str) -> dict[str, str]:
    return {"Fn::Sub": text}


def _ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def _if(condition: str, then: Any, otherwise: Any) -> dict[str, list[Any]]:
    return {"Fn::If": [condition, then, otherwise]}


NO_VALUE = {"Ref": "AWS::NoValue"}


_CAPTURE_KEY_ARN = _sub(
    "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/${CaptureKey}")


def _capture_statements(name: str) -> list[dict[str, Any]]:
    """A capturing model function's rights: read the hash key's secret (and decrypt it). Its
    records leave as log lines (model_api.aws.capture.LogSink): no right to the bucket."""
    return [
        {"Sid": "DecryptCaptureHashKey", "Effect": "Allow", "Action": "kms:Decrypt",
         "Resource": _CAPTURE_KEY_ARN},
        {"Sid": "ReadCaptureHashKey", "Effect": "Allow",
         "Action": "secretsmanager:GetSecretValue", "Resource": _ref("CaptureHashKey")}]


def capture_resources(entry: ModelEntry) -> dict[str, Any]:
    """A capturing model's delivery: a subscription filter on its function's log group that
    sends the capture record lines to its own Firehose stream, which decompresses them, keeps
    each log event's message (the record) and writes JSON Lines to the capture bucket under
    capture/<model>/<yyyy>/<mm>/<dd>/<HH>/, encrypted with the capture key
    (docs/architecture.md, "Data capture")."""
    c, name = entry.camel, entry.name
    role = "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${%s}"
    return {
        f"{c}CaptureStream": {
            "Type": "AWS::KinesisFirehose::DeliveryStream",
            "Properties": {
                "DeliveryStreamType": "DirectPut",
                "ExtendedS3DestinationConfiguration": {
                    "BucketARN": _sub("arn:${AWS::Partition}:s3:::${CaptureBucket}"),
                    "RoleARN": _sub(role % "CaptureFirehoseRole"),
                    "Prefix": f"capture/{name}/!{{timestamp:yyyy/MM/dd/HH}}/",
                    "ErrorOutputPrefix": (f"capture/{name}/errors/!{{firehose:error-output-type}}"
                                          "/!{timestamp:yyyy/MM/dd}/"),
                    "FileExtension": ".jsonl",
                    "CompressionFormat": "UNCOMPRESSED",
                    "BufferingHints": {"IntervalInSeconds": CAPTURE_BUFFER_S,
                                       "SizeInMBs": CAPTURE_BUFFER_MB},
                    "EncryptionConfiguration": {
                        "KMSEncryptionConfig": {"AWSKMSKeyARN": _CAPTURE_KEY_ARN}},
                    "ProcessingConfiguration": {"Enabled": True, "Processors": [
                        {"Type": "Decompression", "Parameters": [
                            {"ParameterName": "CompressionFormat", "ParameterValue": "GZIP"}]},
                        {"Type": "CloudWatchLogProcessing", "Parameters": [
                            {"ParameterName": "DataMessageExtraction",
                             "ParameterValue": "true"}]}]}}}},
        f"{c}CaptureSubscription": {
            "Type": "AWS::Logs::SubscriptionFilter",
            "Properties": {
                "LogGroupName": _ref(f"{c}FunctionLogGroup"),
                "FilterName": "capture-records",
                "FilterPattern": CAPTURE_FILTER_PATTERN,
                "DestinationArn": {"Fn::GetAtt": [f"{c}CaptureStream", "Arn"]},
                "RoleArn": _sub(role % "CaptureLogsRole")}},
    }


def _store_statements(name: str) -> list[dict[str, Any]]:
    """A store-backed model function's rights: read its own model's objects (ranged GETs) and
    decrypt them; nothing else of the store."""
    return [
        {"Sid": "ReadOwnModelFromStore", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": _sub(f"arn:${{AWS::Partition}}:s3:::${{ModelStoreBucket}}/models/{name}/*")},
        {"Sid": "DecryptOwnModel", "Effect": "Allow", "Action": "kms:Decrypt",
         "Resource": _sub("arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:"
                          "key/${ModelStoreKey}")}]


def _role_policy(log_group: str, capture: str | None = None,
                 store: str | None = None) -> dict[str, Any]:
    """A model function's policy: its own log group's streams, and X-Ray; with `capture` (the
    model's name), its capture prefix too; with `store` (the model's name), its objects in the
    model store."""
    return {"PolicyName": "own-logs-and-traces", "PolicyDocument": {
        "Version": "2012-10-17",
        "Statement": [*(_capture_statements(capture) if capture else []),
                      *(_store_statements(store) if store else []),
            {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": {"Fn::GetAtt": [log_group, "Arn"]}},
            # X-Ray has no resource-level permissions
            {"Effect": "Allow", "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords",
                                           "xray:GetSamplingRules", "xray:GetSamplingTargets"],
             "Resource": "*"}]}}


def _alarm(description: str, namespace: str, metric: str,
           dimensions: list[dict[str, Any]]) -> dict[str, Any]:
    """An alarm on any occurrence of `metric` in a minute (one rolls a deployment back)."""
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": {
        "AlarmDescription": description, "Namespace": namespace, "MetricName": metric,
        "Dimensions": dimensions, "Statistic": "Sum", "Period": 60, "EvaluationPeriods": 1,
        "Threshold": 0, "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching"}}


def resources(entry: ModelEntry) -> dict[str, Any]:
    """One model's resources in its group's stack (logical id -> resource; paths relative to
    stacks/): its layer, function, log group, role and two alarms; when it captures, its Firehose
    stream and log subscription (capture_resources)."""
    c, name = entry.camel, entry.name
    capture = entry.capture_config
    capture_environment = {
        "CAPTURE": capture.to_environment(),
        "CAPTURE_HASH_KEY_SECRET": _ref("CaptureHashKey")} if capture.active else {}
    reserved = (entry.reserved_concurrency if entry.reserved_concurrency else
                _if("HasReservedConcurrency", _ref("FunctionReservedConcurrency"), NO_VALUE))
    stored = stored_versions(entry)
    store_environment = {"MODEL_STORE_BUCKET": _ref("ModelStoreBucket"),
                         "MODEL_LOAD_WAIT_S": str(STORE_LOAD_WAIT_S)} if stored else {}
    # Sized from the model (model_registry.placement.memory_mb: the measured peaks of its
    # store versions, model_registry.sizing) when any version is in the store; else the
    # template's ModelMemorySize.
    records = list(entry.files.values())
    sizing = {"MemorySize": placement.memory_mb(
        [int(record.get("bytes", 0)) for record in records],
        [Sizing.from_record(record["sizing"]) if "sizing" in record else None
         for record in records]),
        "Timeout": STORE_TIMEOUT_S} if stored else {}
    function = {
        "Description": f"Open Inference Protocol routes of model {name}.",
        "FunctionName": _sub(f"${{{PREFIX_PARAMETER}}}{name}"),
        "CodeUri": "../functions/inference/",
        "Handler": "app.lambda_handler",
        **sizing,
        "Role": {"Fn::GetAtt": [f"{c}FunctionRole", "Arn"]},
        "LoggingConfig": {"LogGroup": _ref(f"{c}FunctionLogGroup")},
        "ReservedConcurrentExecutions": reserved,
        "Layers": [_ref("RuntimeLayer"), _ref("ServingLayer"), _ref(f"{c}ModelLayer")],
        "AutoPublishAlias": "live",
        "SnapStart": _if("UseSnapStart", {"ApplyOn": "PublishedVersions"}, NO_VALUE),
        "ProvisionedConcurrencyConfig": _if("HasProvisionedConcurrency", {
            "ProvisionedConcurrentExecutions": _ref("ProvisionedConcurrency")}, NO_VALUE),
        "DeploymentPreference": {"Type": _ref("DeploymentStrategy"), "Alarms": [
            _ref(f"{c}ErrorsAlarm"), _ref(f"{c}ServerErrorsAlarm")]},
        "Environment": {"Variables": {"POWERTOOLS_SERVICE_NAME": name, "MODEL_NAME": name,
                                      "MODEL_VERSION": entry.current,
                                      **capture_environment, **store_environment}},
        "Events": api_events(routes_of(MODEL), name),
    }
    return {
        f"{c}ModelLayer": {
            "Type": "AWS::Serverless::LayerVersion",
            "Properties": {
                "LayerName": _sub(f"${{AWS::StackName}}-model-{name}"),
                "Description": f"Model {name}, versions {', '.join(entry.versions)}, at "
                               f"/opt/models/{name}/<version>/.",
                "ContentUri": "../layers/",
                "CompatibleRuntimes": ["python3.12"],
                "RetentionPolicy": "Delete"},
            "Metadata": {"BuildMethod": "makefile"}},
        f"{c}Function": {
            "Type": "AWS::Serverless::Function",
            "Metadata": {"checkov": {"skip": [
                {"id": "CKV_AWS_116", "comment": "Invoked synchronously by API Gateway only; a "
                 "DLQ only ever receives asynchronous events."},
                {"id": "CKV_AWS_115", "comment": "Reserved concurrency is opt-in (models.yaml "
                 "reserved_concurrency, or FunctionReservedConcurrency); new accounts cannot "
                 "reserve any."}]}},
            "Properties": function},
        f"{c}FunctionLogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {
                "LogGroupName": _sub(f"/aws/lambda/${{AWS::StackName}}/models/{name}"),
                "RetentionInDays": _ref("LogRetentionDays"),
                "KmsKeyId": _if("HasLogKmsKey", _ref("LogKmsKeyArn"), NO_VALUE)}},
        f"{c}FunctionRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Description": f"Model {name}'s function writes its own logs and traces"
                               + (", and reads the capture hash key" if capture.active else "")
                               + (", and reads its model from the model store" if stored
                                  else "") + "; no other AWS access.",
                "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                    "Action": "sts:AssumeRole"}]},
                "Policies": [_role_policy(f"{c}FunctionLogGroup",
                                          name if capture.active else None,
                                          name if stored else None)]}},
        f"{c}ErrorsAlarm": _alarm(
            f"Invocation errors (crash, timeout, init failure) of model {name}'s live alias; "
            "rolls a deployment back.", "AWS/Lambda", "Errors", [
                {"Name": "FunctionName", "Value": _ref(f"{c}Function")},
                {"Name": "Resource", "Value": _sub(f"${{{c}Function}}:live")}]),
        f"{c}ServerErrorsAlarm": _alarm(
            f"5xx answers of model {name} (model not ready, unexpected error); rolls a "
            "deployment back.", "ServerlessModelApi", "ServerErrors",
            [{"Name": "service", "Value": name}]),
        **(capture_resources(entry) if capture.active else {}),
    }


def stored_versions(entry: ModelEntry) -> list[str]:
    """The versions of a model served from the model store (models.yaml files[v].home)."""
    return [version for version, record in entry.files.items()
            if record.get("home") == placement.STORE]


def groups_of(entries: Iterable[ModelEntry]) -> dict[int, list[ModelEntry]]:
    """The models of each group, in registry order, by group number (ascending)."""
    found: dict[int, list[ModelEntry]] = {}
    for entry in entries:
        found.setdefault(entry.group, []).append(entry)
    return dict(sorted(found.items()))


def _names(node: Any) -> Iterator[tuple[str, str]]:
    """("ref", name) for each Ref, GetAtt and ${name} in a Sub; ("condition", name) for each
    condition an Fn::If or a Condition names, anywhere in a parsed template fragment."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                yield "ref", value
            elif key == "Fn::GetAtt":
                yield "ref", (value[0] if isinstance(value, list) else value.split(".")[0])
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) else value
                for part in text.split("${")[1:]:
                    yield "ref", part.split("}")[0].split(".")[0]
            elif key == "Fn::If":
                yield "condition", value[0]
            elif key == "Condition" and isinstance(value, str):
                yield "condition", value
            yield from _names(value)
    elif isinstance(node, list):
        for item in node:
            yield from _names(item)


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """yaml's safe dumper that also writes OrderedDicts as plain mappings (SAM CLI's yamlhelper,
    imported by the local API and the tests, makes the safe loader build them) and never writes
    an alias: a value used twice is written twice, as CloudFormation expects to read it."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    """A string of several lines as a literal block (`|`), one ending in a line break as a
    folded one (`>`, wrapped), as a reader would write them; any other as yaml chooses."""
    style = "|" if "\n" in data.rstrip("\n") else ">" if data.endswith("\n") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(OrderedDict, lambda dumper, data: dumper.represent_dict(data.items()))
_Dumper.add_representer(str, _text)


class _CfnLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml's safe loader (where PyYAML has it) with CloudFormation's short-form intrinsics
    read as samtranslator's yaml_parse reads them ({"Fn::If": [...]}): the same documents, about
    ten times faster than yaml_parse's pure-Python parser on a root of hundreds of models."""

    yaml_constructors: ClassVar[dict[Any, Any]] = dict(
        yaml.constructor.SafeConstructor.yaml_constructors)
    yaml_multi_constructors: ClassVar[dict[Any, Any]] = {"!": intrinsics_multi_constructor}


def _parse(text: str) -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.load(text, Loader=_CfnLoader)  # a safe loader
    return parsed


def group_template(group: int, entries: list[ModelEntry], root: dict[str, Any]) -> str:
    """The nested stack of one group of models (YAML text): see group_document; `root` is
    template.src.yaml, parsed."""
    return dump_group(group, group_document(group, entries, root))


def dump_group(group: int, document: dict[str, Any]) -> str:
    header = (f"# {group_file(group)}: generated from models.yaml, {SOURCE_NAME} and "
              "model_api/routes.py\n# by `make template`; edit those, not this file. "
              "`make check-generated` fails when it is stale.\n"
              "# One group of models (models.yaml `group`): a nested stack of template.yaml.\n")
    return header + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100)


def group_document(group: int, entries: list[ModelEntry], root: dict[str, Any]
                   ) -> dict[str, Any]:
    """The nested stack of one group of models: its REST API (the root's ModelApi and access log
    group, copied) and each model's resources, with the root's Parameters, Conditions and
    Globals they use; `root` is template.src.yaml as samtranslator's yaml_parse reads it."""
    body: dict[str, Any] = {name: dict(root["Resources"][name]) for name in GROUP_API}
    for layer in SHARED_LAYERS:  # paths are relative to the template: stacks/ is one down
        found = root["Resources"][layer]
        body[layer] = {**found, "Properties": {
            **found["Properties"], "ContentUri": f"../{found['Properties']['ContentUri']}"}}
    # As in the root: a Ref in Metadata orders the access log group (so the stage) after the
    # account's logging role is set; the root passes the account on as a parameter.
    body["ModelApiAccessLogGroup"]["Metadata"] = {
        "AfterApiGatewayAccount": {"Ref": ACCOUNT_PARAMETER}}
    for entry in entries:
        body.update(resources(entry))
    body["ModelApi"] = {**body["ModelApi"], "Properties": {
        **body["ModelApi"]["Properties"],
        "Description": "Open Inference Protocol (KServe V2 REST) for the models of group "
                       f"{group}."}}
    outputs = {
        "ApiUrl": {"Description": f"Base URL of the API of group {group} (append /v2/...).",
                   "Value": root["Outputs"]["ApiUrl"]["Value"]},
        "ApiId": {"Description": f"ID of group {group}'s REST API (the root's usage plan lists "
                                 "its stage).", "Value": {"Ref": "ModelApi"}},
        **{f"{e.camel}FunctionName": {
            "Description": f"Lambda function serving model {e.name} (alias live).",
            "Value": {"Ref": f"{e.camel}Function"}} for e in entries},
    }
    wanted = {"Globals": root.get("Globals", {}), "Resources": body, "Outputs": outputs}
    known = {**root["Conditions"], **GROUP_CONDITIONS}
    refs = {name for kind, name in _names(wanted) if kind == "ref"}
    conditions: dict[str, Any] = {}
    pending = [name for kind, name in _names(wanted) if kind == "condition"]
    while pending:
        name = pending.pop()
        if name not in conditions:
            conditions[name] = known[name]
            for kind, found in _names(conditions[name]):
                (pending.append(found) if kind == "condition" else refs.add(found))
    parameters = {name: spec for name, spec in root["Parameters"].items() if name in refs}
    for name, description in {**CAPTURE_PARAMETERS, **STORE_PARAMETERS}.items():
        if name in refs:
            parameters[name] = {"Type": "String", "Description": description}
    parameters[ACCOUNT_PARAMETER] = {
        "Type": "String", "Default": "",
        "Description": "The root's ApiGatewayAccount when it sets the account's logging role "
                       "(its API logs only after that), else empty."}
    document = {
        "AWSTemplateFormatVersion": root["AWSTemplateFormatVersion"],
        "Transform": root["Transform"],
        # Names are left to models.yaml: a group's could pass the description's 1,024 bytes.
        "Description": f"Group {group} of the model API: {len(entries)} models' REST API and "
                       "functions (models.yaml lists them). Nested stack of template.yaml.",
        "Parameters": parameters,
        "Conditions": dict(sorted(conditions.items())),
        "Globals": root.get("Globals", {}),
        "Resources": body,
        "Outputs": outputs,
    }
    return document


def group_resource(group: int, parameters: Iterable[str]) -> dict[str, Any]:
    """A group's nested stack in the root template, passing on the parameters it declares."""
    return {"Type": "AWS::Serverless::Application", "Properties": {
        "Location": group_file(group),
        "Parameters": {name: _if("CreateApiGatewayLoggingRole", _ref(name), "")
                       if name == ACCOUNT_PARAMETER else _ref(name) for name in parameters}}}


def group_output(group: int) -> dict[str, Any]:
    """A group's URL among the root's Outputs."""
    return {"Description": f"Base URL of the REST API serving the models of group {group} "
                           "directly (append /v2/models/...; the root's ApiUrl serves them too, "
                           "through the server function).",
            "Value": {"Fn::GetAtt": [group_id(group), "Outputs.ApiUrl"]}}


def group_stage(group: int) -> dict[str, Any]:
    """A group's API stage in the root's usage plan: the deployment's one API key opens it."""
    return {"ApiId": {"Fn::GetAtt": [group_id(group), "Outputs.ApiId"]},
            "Stage": _ref("StageName")}


def _add(where: str, mapping: dict[str, Any], generated: dict[str, Any]) -> None:
    """Add generated entries to a mapping of the source; RegistryError if the source (or a
    model) already declares one of them."""
    clashes = sorted(set(mapping) & set(generated))
    if clashes:
        raise RegistryError(f"{SOURCE_NAME} declares {', '.join(clashes)} in {where}, which "
                            "`make template` generates: rename it")
    mapping.update(generated)


def root_document(entries: list[ModelEntry], source: dict[str, Any],
                  group_parameters: dict[int, list[str]]) -> dict[str, Any]:
    """template.yaml as a document: the source (template.src.yaml, parsed) with what the route
    table and the registry add: the server's and the batch jobs function's Events, one nested
    stack per group of `entries` (passing on `group_parameters`, the parameters each group's
    stack declares), its stage in the usage plan and its URL among the Outputs. RegistryError
    when the source declares a name that is generated."""
    root = copy.deepcopy(source)
    resources = root["Resources"]
    groups = sorted(groups_of(entries))
    for function, events in ((SERVER_FUNCTION, server_events()),
                             (BATCH_JOBS_FUNCTION, api_events(routes_of(BATCH_JOBS)))):
        properties = resources[function]["Properties"]
        _add(f"{function}'s Events", properties.setdefault("Events", {}), events)
    resources[USAGE_PLAN]["Properties"]["ApiStages"].extend(group_stage(g) for g in groups)
    _add("Resources", resources, {group_id(g): group_resource(g, group_parameters[g])
                                  for g in groups})
    _add("Outputs", root.setdefault("Outputs", {}),
         {f"{group_id(g)}ApiUrl": group_output(g) for g in groups})
    return root


def dump_root(document: dict[str, Any]) -> str:
    """template.yaml's text: a header naming its sources and the command, then the document."""
    header = (f"# template.yaml: generated from {SOURCE_NAME}, models.yaml and "
              "model_api/routes.py\n"
              f"# by `make template`; edit those, not this file ({SOURCE_NAME} has the comments).\n"
              "# `make check-generated` fails when it is stale.\n")
    return header + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100)


def render(entries: list[ModelEntry], source: str, project: Project = PROJECT,
           only: set[int] | None = None) -> dict[Path, str]:
    """The root template and the group stacks for `entries` (path -> text), from `source`
    (template.src.yaml's text); with `only`, just those groups' stacks (and the root), so a
    change to one model renders one group: the other groups' parameters are read from their
    stacks as they are."""
    parsed = _parse(source)
    texts: dict[Path, str] = {}
    parameters: dict[int, list[str]] = {}
    for group, members in groups_of(entries).items():
        path = project.root / group_file(group)
        if only is None or group in only:
            document = group_document(group, members, parsed)
            texts[path] = dump_group(group, document)
            parameters[group] = list(document["Parameters"])
        else:  # as the group's stack declares them now: it is left as it is
            parameters[group] = list(_parse(path.read_text())["Parameters"])
    texts[project.template] = dump_root(root_document(entries, parsed, parameters))
    return texts


def source_of(project: Project) -> Path:
    """The hand-written source of a project's template.yaml."""
    return project.root / SOURCE_NAME


def stale_groups(entries: list[ModelEntry], project: Project = PROJECT) -> list[Path]:
    """Group stacks on disk that no group of `entries` has any more."""
    wanted = {project.root / group_file(g) for g in groups_of(entries)}
    return sorted(p for p in project.stacks.glob("models-*.yaml") if p not in wanted) \
        if project.stacks.is_dir() else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--check", action="store_true",
        help="fail if template.yaml or a stacks/ file is not up to date")
    args = parser.parse_args(argv)
    entries = load(REGISTRY)
    wanted = render(entries, SOURCE.read_text())
    stale = stale_groups(entries)
    changed = [path for path, text in wanted.items()
               if not path.exists() or path.read_text() != text]
    if args.check:
        if changed or stale:
            print(f"{', '.join(str(p.relative_to(ROOT)) for p in [*changed, *stale])} out of "
                  f"date with {SOURCE_NAME}, models.yaml or the route table: run `make template`",
                  file=sys.stderr)
            return 1
        return 0
    for path in changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(wanted[path])
        print(f"rendered {path.relative_to(ROOT)}")
    for path in stale:
        path.unlink()
        print(f"removed {path.relative_to(ROOT)}: its group has no model left")
    return 0


if __name__ == "__main__":
    sys.exit(registry_run(main))
