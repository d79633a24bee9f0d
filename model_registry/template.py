"""Render template.yaml's generated blocks, between its `# >>> ...` markers: each registry entry's
resources and outputs, every function's API events from the route table (model_api.routes),
and the models a batch job may run.

Only the marked blocks are generated; the rest of the template (API, shared layers, batch) is
written by hand and keeps its comments. `--check` fails when the template is stale, so a
registry edit without `make template` cannot land.
"""

from __future__ import annotations

import argparse
import sys

from model_api.routes import BATCH_JOBS, MODEL, SERVER, Route, routes_of

from model_registry.registry import REGISTRY, ROOT, ModelEntry, load

TEMPLATE = ROOT / "template.yaml"
GENERATED = "generated from models.yaml by `make template`; edit models.yaml, not this block"
RESOURCES = ("  # >>> model resources: " + GENERATED + "\n", "  # <<< model resources\n")
GENERATED_ROUTES = "generated from model_api/routes.py by `make template`"
OUTPUTS = ("  # >>> model outputs: " + GENERATED + "\n", "  # <<< model outputs\n")

SERVER_EVENTS = (f"        # >>> server routes: {GENERATED_ROUTES}\n",
                 "        # <<< server routes\n")
BATCH_JOBS_EVENTS = (f"        # >>> batch jobs routes: {GENERATED_ROUTES}\n",
                     "        # <<< batch jobs routes\n")
BATCH_MODELS = (f"    # >>> batch models: {GENERATED}\n", "    # <<< batch models\n")
SERVER_MODELS = (f"          # >>> server models: {GENERATED}\n",
                 "          # <<< server models\n")
SERVER_INVOKES = (f"              # >>> server invokes: {GENERATED}\n",
                  "              # <<< server invokes\n")
# A keyless route (the console's static files) opts out of the API key and, under ApiAuth
# AWS_IAM, of the default IAM authorizer (NONE is only valid where there is a default).
KEYLESS_AUTH = ("!If [UseIamAuth, {Authorizer: NONE}, "
                "{ApiKeyRequired: false}]")


def api_events(routes: tuple[Route, ...], model: str | None = None, prefix: str = "") -> str:
    """The `Events` entries of a function serving `routes` on ModelApi (`{model}` filled in;
    `prefix` before each event name)."""
    return "".join(
        f"        {prefix}{route.name}:\n"
        f"          Type: Api\n"
        f'          Properties: {{RestApiId: !Ref ModelApi, Path: "{route.for_model(model) if model else route.path}", Method: {route.method}'
        + (f", Auth: {KEYLESS_AUTH}" if route.keyless else "") + "}\n"
        for route in routes
    )


def server_models(entries: list[ModelEntry]) -> str:
    """The server function's MODEL_FUNCTIONS: each model's function and versions, the registry
    the repository index and server readiness come from (model_api.repository)."""
    models = ",\n".join(
        f'            "{e.name}": {{"function": "${{{e.camel}Function}}", "versions": '
        f'[{", ".join(f'"{v}"' for v in e.versions)}]}}' for e in entries)
    return f"          MODEL_FUNCTIONS: !Sub >-\n            {{\n{models}}}\n"


def server_invokes(entries: list[ModelEntry]) -> str:
    """The server role's one permission beyond logs: invoke each model function's alias live."""
    if not entries:
        return ""
    arns = "".join(f'                  - !Sub "${{{e.camel}Function.Arn}}:live"\n'
                   for e in entries)
    return ("              - Effect: Allow  # ask each model version whether it is ready\n"
            "                Action: lambda:InvokeFunction\n"
            f"                Resource:\n{arns}")


def batch_jobs_events(entries: list[ModelEntry]) -> str:
    """The batch jobs function's events: its routes that name a model once per model, with
    the model in the path as a model function's are (API Gateway then routes /v2/models/<name>/
    by literal resources only, never a `{model}` variable beside them)."""
    routes = routes_of(BATCH_JOBS)
    shared = tuple(route for route in routes if not route.per_model)
    per_model = tuple(route for route in routes if route.per_model)
    return api_events(shared) + "".join(api_events(per_model, e.name, e.camel) for e in entries)


def resources(entry: ModelEntry) -> str:
    c, name = entry.camel, entry.name
    events = api_events(routes_of(MODEL), name)
    return f"""\
  {c}ModelLayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      LayerName: !Sub "${{AWS::StackName}}-model-{name}"
      Description: "Model {name}, versions {", ".join(entry.versions)}, at /opt/models/{name}/<version>/."
      ContentUri: layers/
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
              Reserved concurrency is opt-in (FunctionReservedConcurrency); new accounts
              cannot reserve any.
    Properties:
      Description: Open Inference Protocol routes of model {name}.
      CodeUri: functions/inference/
      Handler: app.lambda_handler
      Role: !GetAtt {c}FunctionRole.Arn
      LoggingConfig:
        LogGroup: !Ref {c}FunctionLogGroup
      ReservedConcurrentExecutions:
        !If [HasReservedConcurrency, !Ref FunctionReservedConcurrency, !Ref AWS::NoValue]
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


def outputs(entry: ModelEntry) -> str:
    return f"""\
  {entry.camel}FunctionName:
    Description: Lambda function serving model {entry.name} (alias live).
    Value: !Ref {entry.camel}Function
"""


def replace_block(text: str, markers: tuple[str, str], block: str) -> str:
    begin, end = markers
    start = text.index(begin) + len(begin)
    return text[:start] + block + text[text.index(end, start) :]


def render(entries: list[ModelEntry], template: str) -> str:
    """The template with its model blocks rendered from `entries`."""
    template = replace_block(template, RESOURCES, "\n".join(resources(e) for e in entries))
    template = replace_block(template, SERVER_EVENTS, api_events(routes_of(SERVER)))
    template = replace_block(template, SERVER_MODELS, server_models(entries))
    template = replace_block(template, SERVER_INVOKES, server_invokes(entries))
    template = replace_block(template, BATCH_JOBS_EVENTS, batch_jobs_events(entries))
    template = replace_block(template, BATCH_MODELS,
                             f"    Default: {','.join(e.name for e in entries)}\n")
    return replace_block(template, OUTPUTS, "".join(outputs(e) for e in entries))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="fail if template.yaml is not up to date"
    )
    args = parser.parse_args(argv)
    current = TEMPLATE.read_text()
    wanted = render(load(REGISTRY), current)
    if args.check:
        if wanted != current:
            print(
                "template.yaml is out of date with models.yaml: run `make template`",
                file=sys.stderr,
            )
            return 1
        return 0
    if wanted != current:
        TEMPLATE.write_text(wanted)
        print(f"rendered {TEMPLATE.name} from {REGISTRY.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
