"""The AWS quotas a deployment grows into as models are added, and how close a template is.

Every number here is a default quota of an AWS account (none is raised by this project); each
comes with the page that states it. `usage` measures one template as CloudFormation receives it
(after AWS::LanguageExtensions and the SAM transform, `translate`), so SAM's implicit resources
(versions, aliases, permissions, deployment groups, the API's deployment and stage) count.

GROUP_SIZE, the models of one nested stack and its REST API, is chosen from these numbers: see
docs/architecture.md ("Hundreds of models") for the per-model costs it rests on.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

CFN_QUOTAS = "https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/cloudformation-limits.html"
APIGW_QUOTAS = ("https://docs.aws.amazon.com/apigateway/latest/developerguide/"
                "api-gateway-execution-service-limits-table.html")
LAMBDA_QUOTAS = "https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html"

# CloudFormation (CFN_QUOTAS).
STACK_RESOURCES = 500
STACK_OUTPUTS = 200
STACK_PARAMETERS = 200
PARAMETER_VALUE_BYTES = 4096
TEMPLATE_BODY_BYTES = 51_200       # a template passed in the request (TemplateBody)
TEMPLATE_S3_BYTES = 1_000_000      # a template read from S3 (TemplateURL): sam deploy's way
# API Gateway REST APIs (APIGW_QUOTAS): resources (path segments) per API.
API_RESOURCES = 300
REGIONAL_APIS = 600
# Lambda (LAMBDA_QUOTAS).
FUNCTION_POLICY_BYTES = 20_480      # resource-based policy of one function
CODE_STORAGE_BYTES = 75 * 1024**3   # functions and layers, per region
ACCOUNT_CONCURRENCY = 1000          # concurrent executions per region
UNRESERVED_MINIMUM = 100            # what reservations must leave to unreserved functions

# Models per nested stack and REST API: 9 shared + 20 x 17 stack resources = 349 of 500 (30%
# spare) and 3 + 20 x 9 API resources = 183 of 300 (39% spare); room for two more per-model
# routes (+2 stack and API resources each: 389 and 223); 25 groups make 500 models.
# (tests/template/test_scale.py measures both.)
GROUP_SIZE = 20

PSEUDO_PARAMETERS = {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012",
                     "AWS::Partition": "aws", "AWS::StackName": "model-api",
                     "AWS::URLSuffix": "amazonaws.com"}


def translate(template: dict[str, Any], parameters: dict[str, str] | None = None
              ) -> dict[str, Any]:
    """`template` (parsed by samtranslator.yaml_helper.yaml_parse) as plain CloudFormation, the
    way `sam deploy` has CloudFormation expand it: AWS::LanguageExtensions first (resolving `!If`
    on parameters), then the SAM transform. Local code paths become S3 URIs, as `sam package`
    would upload them. The template is not modified."""
    import boto3
    from samcli.lib.cfn_language_extensions.sam_integration import expand_language_extensions
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    values = dict(parameters or {})
    expanded = expand_language_extensions(copy.deepcopy(template),
                                          {**PSEUDO_PARAMETERS, **values}, enabled=True)
    document = expanded.expanded_template
    for resource in document["Resources"].values():
        properties = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri", "Location"):
            if isinstance(properties.get(key), str):
                properties[key] = f"s3://artifacts/{key}"
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name="us-east-1"))
    translated: dict[str, Any] = translator.translate(
        document, parameter_values=values, get_managed_policy_map=dict)
    return translated


@dataclass(frozen=True)
class Usage:
    """What one translated template uses of each per-stack and per-API quota.

    `api_resources`: REST API logical ID -> its resources (distinct path prefixes of its
    OpenAPI body, the root `/` included, as API Gateway counts them); `permissions`: function
    logical ID -> its AWS::Lambda::Permission resources; `body_bytes`: the translated template
    as compact JSON (what CloudFormation stores after the transform)."""

    resources: int
    outputs: int
    parameters: int
    body_bytes: int
    api_resources: dict[str, int]
    permissions: dict[str, int]
    types: dict[str, int]


def api_resource_count(paths: list[str]) -> int:
    """The resources API Gateway creates for these paths: one per distinct prefix, and `/`."""
    prefixes = {"/"}
    for path in paths:
        parts = [part for part in path.split("/") if part]
        prefixes.update("/" + "/".join(parts[:n]) for n in range(1, len(parts) + 1))
    return len(prefixes)


def usage(translated: dict[str, Any]) -> Usage:
    """Measure a template `translate` returned."""
    resources = translated.get("Resources") or {}
    types: dict[str, int] = {}
    apis: dict[str, int] = {}
    permissions: dict[str, int] = {}
    for logical_id, resource in resources.items():
        kind = resource.get("Type", "")
        types[kind] = types.get(kind, 0) + 1
        properties = resource.get("Properties") or {}
        if kind == "AWS::ApiGateway::RestApi":
            paths = list((properties.get("Body") or {}).get("paths") or {})
            apis[logical_id] = api_resource_count(paths)
        elif kind == "AWS::Lambda::Permission":
            target = properties.get("FunctionName")
            name = str(target.get("Ref") if isinstance(target, dict) else target)
            permissions[name] = permissions.get(name, 0) + 1
    return Usage(
        resources=len(resources), outputs=len(translated.get("Outputs") or {}),
        parameters=len(translated.get("Parameters") or {}),
        body_bytes=len(json.dumps(translated, separators=(",", ":")).encode()),
        api_resources=apis, permissions=permissions, types=types)
