"""Render the deployment's templates from models.yaml and the route table (model_api.routes).

template.yaml is the root stack: its `# >>> ...` blocks are generated (one nested stack per group
of models, their API stages in the usage plan and their URLs, the server and batch jobs
functions' API events); the rest (the root API, shared layers, batch) is written by hand and
keeps its comments.
Each group of at most GROUP_SIZE models (models.yaml `group`) is one generated nested stack,
stacks/models-<group>.yaml: its own REST API (a copy of the root's ModelApi, with the Parameters
and Conditions it uses; the root's one API key and usage plan cover it), and each model's
layer, function, routes, log group, role and alarms. A model therefore adds nothing to the root
stack but its share of a group, and a group's stack and API stay within their quotas
(model_registry.quotas; docs/architecture.md). The root API serves every model's routes too,
with the model as a path parameter, through the server function (model_api.aws.router).

`--check` fails when any of them is stale, so a registry edit without `make template` cannot land.
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import yaml
from model_api.routes import BATCH_JOBS, MODEL, SERVER, Route, routes_of
from samtranslator.yaml_helper import intrinsics_multi_constructor

from model_registry.registry import PROJECT, REGISTRY, ROOT, STACKS, ModelEntry, Project, load
from model_registry.registry import run as registry_run

TEMPLATE = ROOT / "template.yaml"
GENERATED = "generated from models.yaml by `make template`; edit models.yaml, not this block"
RESOURCES = ("  # >>> model resources: " + GENERATED + "\n", "  # <<< model resources\n")
GENERATED_ROUTES = "generated from model_api/routes.py by `make template`"
OUTPUTS = ("  # >>> model outputs: " + GENERATED + "\n", "  # <<< model outputs\n")

SERVER_EVENTS = (f"        # >>> server routes: {GENERATED_ROUTES}\n",
                 "        # <<< server routes\n")
BATCH_JOBS_EVENTS = (f"        # >>> batch jobs routes: {GENERATED_ROUTES}\n",
                     "        # <<< batch jobs routes\n")
GROUP_STAGES = (f"        # >>> group stages: {GENERATED}\n", "        # <<< group stages\n")
# A keyless route (the console's static files) opts out of the API key and, under ApiAuth
# AWS_IAM, of the default IAM authorizer (NONE is only valid where there is a default).
KEYLESS_AUTH = ("!If [UseIamAuth, {Authorizer: NONE}, "
                "{ApiKeyRequired: false}]")
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


def api_events(routes: tuple[Route, ...], model: str | None = None, prefix: str = "") -> str:
    """The `Events` entries of a function serving `routes` on ModelApi (`{model}` filled in
    when `model` is given; `prefix` before each event name)."""
    return "".join(
        f"        {prefix}{route.name}:\n"
        f"          Type: Api\n"
        f'          Properties: {{RestApiId: !Ref ModelApi, Path: "{route.for_model(model) if model else route.path}", Method: {route.method}'
        + (f", Auth: {KEYLESS_AUTH}" if route.keyless else "") + "}\n"
        for route in routes
    )


def server_events() -> str:
    """The server function's events: its own routes, then every model route with the model as a
    path parameter (`Router<route>`), which it forwards to the model's function."""
    return api_events(routes_of(SERVER)) + api_events(routes_of(MODEL), prefix=ROUTER_PREFIX)


def resources(entry: ModelEntry) -> str:
    """One model's resources in its group's stack (YAML text, paths relative to stacks/)."""
    c, name = entry.camel, entry.name
    events = api_events(routes_of(MODEL), name)
    reserved = (str(entry.reserved_concurrency) if entry.reserved_concurrency else
                "!If [HasReservedConcurrency, !Ref FunctionReservedConcurrency, !Ref AWS::NoValue]")
    return f"""\
  {c}ModelLayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      LayerName: !Sub "${{AWS::StackName}}-model-{name}"
      Description: "Model {name}, versions {", ".join(entry.versions)}, at /opt/models/{name}/<version>/."
      ContentUri: ../layers/
      CompatibleRuntimes: [python3.12]
      RetentionPolicy: Delete
    Metadata:
      BuildMethod: makefile

  {c}Function:
    Type: AWS::Serverless::Function
    Metadata:
      checkov:
        skip:
          - id: CKV_AWS_116
            comment: >-
              Invoked synchronously by API Gateway only; a DLQ only ever receives
              asynchronous events.
          - id: CKV_AWS_115
            comment: >-
              Reserved concurrency is opt-in (models.yaml reserved_concurrency, or
              FunctionReservedConcurrency); new accounts cannot reserve any.
    Properties:
      Description: Open Inference Protocol routes of model {name}.
      FunctionName: !Sub "${{{PREFIX_PARAMETER}}}{name}"
      CodeUri: ../functions/inference/
      Handler: app.lambda_handler
      Role: !GetAtt {c}FunctionRole.Arn
      LoggingConfig:
        LogGroup: !Ref {c}FunctionLogGroup
      ReservedConcurrentExecutions: {reserved}
      Layers: [!Ref RuntimeLayer, !Ref ServingLayer, !Ref {c}ModelLayer]
      AutoPublishAlias: live
      SnapStart: !If [UseSnapStart, {{ApplyOn: PublishedVersions}}, !Ref AWS::NoValue]
      ProvisionedConcurrencyConfig:
        !If [HasProvisionedConcurrency, {{ProvisionedConcurrentExecutions: !Ref ProvisionedConcurrency}}, !Ref AWS::NoValue]
      DeploymentPreference:
        Type: !Ref DeploymentStrategy
        Alarms: [!Ref {c}ErrorsAlarm, !Ref {c}ServerErrorsAlarm]
      Environment:
        Variables:
          POWERTOOLS_SERVICE_NAME: {name}
          MODEL_NAME: {name}
          MODEL_VERSION: "{entry.current}"
      Events:
{events}
  {c}FunctionLogGroup:
    Type: AWS::Logs::LogGroup
    Properties:
      LogGroupName: !Sub "/aws/lambda/${{AWS::StackName}}/models/{name}"
      RetentionInDays: !Ref LogRetentionDays
      KmsKeyId: !If [HasLogKmsKey, !Ref LogKmsKeyArn, !Ref AWS::NoValue]

  {c}FunctionRole:
    Type: AWS::IAM::Role
    Properties:
      Description: Model {name}'s function writes its own logs and traces; no other AWS access.
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal: {{Service: lambda.amazonaws.com}}
            Action: sts:AssumeRole
      Policies:
        - PolicyName: own-logs-and-traces
          PolicyDocument:
            Version: "2012-10-17"
            Statement:
              - Effect: Allow
                Action: [logs:CreateLogStream, logs:PutLogEvents]
                Resource: !GetAtt {c}FunctionLogGroup.Arn
              - Effect: Allow  # X-Ray has no resource-level permissions
                Action:
                  - xray:PutTraceSegments
                  - xray:PutTelemetryRecords
                  - xray:GetSamplingRules
                  - xray:GetSamplingTargets
                Resource: "*"

  {c}ErrorsAlarm:
    Type: AWS::CloudWatch::Alarm
    Properties:
      AlarmDescription: Invocation errors (crash, timeout, init failure) of model {name}'s live alias; rolls a deployment back.
      Namespace: AWS/Lambda
      MetricName: Errors
      Dimensions:
        - {{Name: FunctionName, Value: !Ref {c}Function}}
        - {{Name: Resource, Value: !Sub "${{{c}Function}}:live"}}
      Statistic: Sum
      Period: 60
      EvaluationPeriods: 1
      Threshold: 0
      ComparisonOperator: GreaterThanThreshold
      TreatMissingData: notBreaching

  {c}ServerErrorsAlarm:
    Type: AWS::CloudWatch::Alarm
    Properties:
      AlarmDescription: 5xx answers of model {name} (model not ready, unexpected error); rolls a deployment back.
      Namespace: ServerlessModelApi
      MetricName: ServerErrors
      Dimensions:
        - {{Name: service, Value: {name}}}
      Statistic: Sum
      Period: 60
      EvaluationPeriods: 1
      Threshold: 0
      ComparisonOperator: GreaterThanThreshold
      TreatMissingData: notBreaching
"""


def replace_block(text: str, markers: tuple[str, str], block: str) -> str:
    begin, end = markers
    start = text.index(begin) + len(begin)
    return text[:start] + block + text[text.index(end, start) :]


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
    """yaml's safe dumper that also writes OrderedDicts as plain mappings: SAM CLI's yamlhelper
    (imported by the local API and the tests) makes the safe loader build them."""


_Dumper.add_representer(OrderedDict, lambda dumper, data: dumper.represent_dict(data.items()))


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
    """The nested stack of one group of models (YAML text): see group_document."""
    return dump_group(group, group_document(group, entries, root))


def dump_group(group: int, document: dict[str, Any]) -> str:
    header = (f"# {group_file(group)}: generated from models.yaml by `make template`; edit "
              "models.yaml, not this file.\n"
              "# One group of models (models.yaml `group`): a nested stack of template.yaml.\n")
    return header + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100)


def group_document(group: int, entries: list[ModelEntry], root: dict[str, Any]
                   ) -> dict[str, Any]:
    """The nested stack of one group of models: its REST API (the root's ModelApi and access log
    group, copied) and each model's resources, with the root's Parameters, Conditions and
    Globals they use; `root` is template.yaml as samtranslator's yaml_parse reads it."""
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
        body.update(_parse(resources(entry)))
    body["ModelApi"] = {**body["ModelApi"], "Properties": {
        **body["ModelApi"]["Properties"],
        "Description": f"Open Inference Protocol (KServe V2 REST) for the models of group {group}."}}
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


def group_resource(group: int, parameters: Iterable[str]) -> str:
    """A group's nested stack in the root template, passing on the parameters it declares."""
    passed = "".join(
        f"        {name}: !If [CreateApiGatewayLoggingRole, !Ref {name}, \"\"]\n"
        if name == ACCOUNT_PARAMETER else f"        {name}: !Ref {name}\n"
        for name in parameters)
    return f"""\
  {group_id(group)}:
    Type: AWS::Serverless::Application
    Properties:
      Location: {group_file(group)}
      Parameters:
{passed}"""


def group_outputs(group: int) -> str:
    g = group_id(group)
    return f"""\
  {g}ApiUrl:
    Description: Base URL of the REST API serving the models of group {group} directly (append /v2/models/...; the root's ApiUrl serves them too, through the server function).
    Value: !GetAtt {g}.Outputs.ApiUrl
"""


def group_stage(group: int) -> str:
    """A group's API stage in the root's usage plan: the deployment's one API key opens it."""
    return (f"        - ApiId: !GetAtt {group_id(group)}.Outputs.ApiId\n"
            f"          Stage: !Ref StageName\n")


def render_root(entries: list[ModelEntry], template: str,
                group_parameters: dict[int, list[str]]) -> str:
    """template.yaml with its generated blocks for `entries`; `group_parameters` holds the
    parameters each group's stack declares."""
    groups = sorted(groups_of(entries))
    template = replace_block(template, RESOURCES, "\n".join(
        group_resource(g, group_parameters[g]) for g in groups))
    template = replace_block(template, SERVER_EVENTS, server_events())
    template = replace_block(template, GROUP_STAGES, "".join(group_stage(g) for g in groups))
    template = replace_block(template, BATCH_JOBS_EVENTS, api_events(routes_of(BATCH_JOBS)))
    return replace_block(template, OUTPUTS, "".join(group_outputs(g) for g in groups))


def render(entries: list[ModelEntry], template: str, project: Project = PROJECT,
           only: set[int] | None = None) -> dict[Path, str]:
    """The root template and the group stacks for `entries` (path -> text); with `only`, just
    those groups' stacks (and the root), so a change to one model renders one group."""
    root = _parse(template)
    texts: dict[Path, str] = {}
    parameters: dict[int, list[str]] = {}
    for group, members in groups_of(entries).items():
        if only is None or group in only:
            document = group_document(group, members, root)
            texts[project.root / group_file(group)] = dump_group(group, document)
            parameters[group] = list(document["Parameters"])
        else:  # as the root passes them now: the group's stack is left as it is
            parameters[group] = list(root["Resources"][group_id(group)]["Properties"]
                                     ["Parameters"])
    texts[project.template] = render_root(entries, template, parameters)
    return texts


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
    wanted = render(entries, TEMPLATE.read_text())
    stale = stale_groups(entries)
    changed = [path for path, text in wanted.items()
               if not path.exists() or path.read_text() != text]
    if args.check:
        if changed or stale:
            print(f"{', '.join(str(p.relative_to(ROOT)) for p in [*changed, *stale])} out of "
                  "date with models.yaml: run `make template`", file=sys.stderr)
            return 1
        return 0
    for path in changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(wanted[path])
        print(f"rendered {path.relative_to(ROOT)} from {REGISTRY.name}")
    for path in stale:
        path.unlink()
        print(f"removed {path.relative_to(ROOT)}: its group has no model left")
    return 0


if __name__ == "__main__":
    sys.exit(registry_run(main))
