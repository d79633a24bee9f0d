"""template.yaml and the model groups' stacks (stacks/): valid for SAM and cfn-lint, and one
function, one model layer and every protocol route for each exported model, in its group's stack
with its REST API; the built layers hold what the functions load."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode
from model_api.routes import BATCH_JOBS, MODEL, SERVER, routes_of

from tests.conftest import BUILT_TEMPLATE, CFN_LINT, ROOT, SAM, STACKS

TEMPLATE = ROOT / "template.yaml"
STACK_IDS = [path.name for path in STACKS]


def stack_resources(path: Path) -> dict[str, Any]:
    template, errors = decode(str(path))
    assert not errors, errors
    resources: dict[str, Any] = template["Resources"]
    return resources


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    """The root stack's resources."""
    return stack_resources(TEMPLATE)


@pytest.fixture(scope="module")
def model_resources() -> dict[str, Any]:
    """The resources of every group's stack (their ModelApi copies are alike)."""
    return {name: resource for path in STACKS[1:]
            for name, resource in stack_resources(path).items()}


def camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("-"))


def api_routes(function: dict[str, Any]) -> set[tuple[str, str]]:
    return {(e["Properties"]["Method"].upper(), e["Properties"]["Path"])
            for e in function["Properties"]["Events"].values() if e["Type"] == "Api"}


@pytest.mark.parametrize("path", STACKS, ids=STACK_IDS)
def test_sam_validate_lint_passes(path: Path) -> None:
    result = subprocess.run([SAM, "validate", "--lint", "--template", str(path)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_passes() -> None:
    result = subprocess.run([CFN_LINT, *map(str, STACKS)], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_model_has_its_function_layer_and_routes(
        model_resources: dict[str, Any], manifests: dict[str, Any]) -> None:
    resources = model_resources
    for name in manifests:
        function = resources[f"{camel(name)}Function"]
        layers = [layer["Ref"] for layer in function["Properties"]["Layers"]]
        assert layers == ["RuntimeLayer", "ServingLayer", f"{camel(name)}ModelLayer"]
        assert resources[f"{camel(name)}ModelLayer"]["Type"] == "AWS::Serverless::LayerVersion"
        variables = function["Properties"]["Environment"]["Variables"]
        assert variables["MODEL_NAME"] == name
        assert api_routes(function) == {(r.method, r.for_model(name)) for r in routes_of(MODEL)}


def test_server_routes(resources: dict[str, Any], manifests: dict[str, Any]) -> None:
    # The root API serves the server's routes, and every model route with the model as a path
    # parameter (forwarded by the server function, model_api.aws.router): no model is named in
    # the root, so it does not grow with the models; the groups' APIs name them.
    assert api_routes(resources["ServerFunction"]) == {
        (r.method, r.path) for r in (*routes_of(SERVER), *routes_of(MODEL))}
    assert api_routes(resources["BatchJobsFunction"]) == {
        (r.method, r.path) for r in routes_of(BATCH_JOBS)}


def test_one_key_and_usage_plan_cover_the_root_api_and_every_groups(
        resources: dict[str, Any]) -> None:
    plan = resources["ModelApiUsagePlan"]
    assert plan["Condition"] == "UseApiKey" and plan["Properties"]["Quota"]["Limit"]
    assert plan["Properties"]["Throttle"]["RateLimit"] == {"Ref": "ThrottleRateLimit"}
    stages = [stage["ApiId"] for stage in plan["Properties"]["ApiStages"]]
    groups = sorted(name for name, r in resources.items()
                    if r["Type"] == "AWS::Serverless::Application")
    assert groups and stages == [{"Ref": "ModelApi"},
                                 *({"Fn::GetAtt": [g, "Outputs.ApiId"]} for g in groups)]
    key = resources["ModelApiUsagePlanKey"]["Properties"]
    assert key["KeyId"] == {"Ref": "ModelApiApiKey"}
    assert key["UsagePlanId"] == {"Ref": "ModelApiUsagePlan"}


@pytest.mark.parametrize("path", STACKS, ids=STACK_IDS)
def test_api_requires_a_key_or_sigv4_accepts_binary_and_answers_in_the_error_format(
        path: Path) -> None:
    api = stack_resources(path)["ModelApi"]["Properties"]
    condition, iam, key = api["Auth"]["Fn::If"]  # ApiAuth: AWS_IAM or API_KEY
    assert condition == "UseIamAuth"
    assert iam["DefaultAuthorizer"] == "AWS_IAM"
    assert key["ApiKeyRequired"] is True
    assert "UsagePlan" not in key  # the root's one usage plan covers every API: below
    assert api["BinaryMediaTypes"] == ["*~1*"]
    for kind, response in api["GatewayResponses"].items():
        body = response["ResponseTemplates"]["application/json"]
        assert body.startswith('{"error": '), kind
    statuses = {k: r.get("StatusCode") for k, r in api["GatewayResponses"].items()}
    assert statuses["MISSING_AUTHENTICATION_TOKEN"] == 404
    assert statuses["REQUEST_TOO_LARGE"] == 413
    assert statuses["THROTTLED"] == 429


@pytest.mark.parametrize("path", STACKS, ids=STACK_IDS)
def test_every_function_has_a_log_group_with_retention(path: Path) -> None:
    resources = stack_resources(path)
    functions = {k: r for k, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
    for name, function in functions.items():
        group = resources[f"{name}LogGroup"]["Properties"]
        # Either the function logs to it explicitly, or it bears Lambda's default name.
        logging = function["Properties"].get("LoggingConfig", {})
        assert (logging.get("LogGroup") == {"Ref": f"{name}LogGroup"}
                or group["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{{name}}}"}), name
        assert "RetentionInDays" in group


def test_built_model_layers_hold_the_exported_models_unchanged(manifests: dict[str, Any]) -> None:
    build = BUILT_TEMPLATE.parent
    assert BUILT_TEMPLATE.exists(), "run `make build` (make test does)"
    for name, manifest in manifests.items():
        (layer,) = build.glob(f"*/{camel(name)}ModelLayer")  # in its group's folder
        folder = layer / "models" / name / manifest["version"]
        built = json.loads((folder / "manifest.json").read_text())
        assert built == manifest
        digest = hashlib.sha256((folder / built["model_file"]).read_bytes()).hexdigest()
        assert digest == built["sha256"]


def test_built_runtime_layer_is_trimmed_and_precompiled() -> None:
    site = BUILT_TEMPLATE.parent / "RuntimeLayer" / "python"
    assert (site / "onnxruntime").is_dir() and (site / "numpy").is_dir()
    assert not (site / "onnxruntime" / "transformers").exists()
    assert list((site / "onnxruntime" / "__pycache__").glob("__init__.cpython-312.pyc"))


def test_sizes_stay_under_lambdas_limit() -> None:
    """A function and its layers must fit Lambda's 250 MB unzipped."""
    def size(path: Path) -> int:
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

    build = BUILT_TEMPLATE.parent
    shared = size(build / "RuntimeLayer") + size(build / "ServingLayer")
    layers = list(build.glob("ModelsGroup*/*ModelLayer"))
    assert layers
    for layer in layers:
        assert shared + size(layer) < 250 * 1024 * 1024, layer.name
