"""The serving library's core knows no AWS: only model_api.aws (the Lambda adapter, the router,
Lambda invoke, the invoked repository) imports boto3, botocore or Powertools, or builds an API
Gateway event; the core runs the same in Lambda, the local API, a batch job and the tools."""

from __future__ import annotations

import ast

from tests.architecture.import_graph import build

AWS_PACKAGES = {"boto3", "botocore", "aws_lambda_powertools", "aws_xray_sdk", "awslambdaric"}
# The keys only an API Gateway proxy event (or a Lambda proxy response) has.
API_GATEWAY_KEYS = {"httpMethod", "requestContext", "multiValueHeaders", "isBase64Encoded",
                    "pathParameters", "statusCode"}


def core_modules() -> dict[str, ast.Module]:
    modules = build()
    return {name: ast.parse(module.path.read_text()) for name, module in modules.items()
            if module.package == "model_api" and not name.startswith("model_api.aws")}


def test_the_core_is_most_of_the_library() -> None:
    names = set(core_modules())
    assert {"model_api.codec", "model_api.model", "model_api.service", "model_api.manifest",
            "model_api.errors", "model_api.routes", "model_api.limits", "model_api.datatypes",
            "model_api.repository", "model_api.catalog"} <= names


def test_the_core_imports_nothing_of_aws() -> None:
    modules = build()
    for name in core_modules():
        module = modules[name]
        assert not module.external & AWS_PACKAGES, (name, module.external & AWS_PACKAGES)
        glue = {imported for imported in module.imports if imported.startswith("model_api.aws")}
        assert not glue, (name, glue)


def test_the_core_builds_no_api_gateway_event() -> None:
    for name, tree in core_modules().items():
        keys = {node.value for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        assert not keys & API_GATEWAY_KEYS, (name, keys & API_GATEWAY_KEYS)
