"""Hundreds of models in one deployment: 200 synthetic models (a tiny ONNX graph made here and
exported through add-model's own import, model_registry.synthetic) render into a root stack and
one nested stack per group of GROUP_SIZE models; every stack, translated as CloudFormation
receives it, stays within its quotas with the margins asserted below, and the root grows by a
constant per model.

Limits and sources: model_registry/quotas.py; the figures are discussed in docs/architecture.md.
"""

from __future__ import annotations

import json
import math

import pytest
import yaml
from model_api.routes import MODEL, SERVER, routes_of
from samtranslator.yaml_helper import yaml_parse

from model_registry import openapi, quotas, template
from model_registry.quotas import GROUP_SIZE, Usage, translate, usage
from model_registry.registry import ModelEntry, Project, exported
from model_registry.synthetic import entries as synthetic
from model_registry.synthetic import export

MODELS = 200
# Spare room each stack and API keeps at 200 models and at 500 (a fraction of the quota).
STACK_MARGIN = 0.20
API_MARGIN = 0.35
# The most Lambda permissions of one function: the server's own routes and the model routes it
# forwards.
ROUTER_PERMISSIONS = len(routes_of(SERVER)) + len(routes_of(MODEL))


def measure(text: str) -> Usage:
    """The stack's use of each quota, in the ApiAuth mode with more resources (API_KEY)."""
    return usage(translate(yaml_parse(text), {"ApiAuth": "API_KEY"}))


SOURCE = yaml_parse(template.SOURCE.read_text())


def group_text(entries: list[ModelEntry]) -> str:
    return template.group_template(0, entries, SOURCE)


# What a group's stack declares, passed on by the root.
PARAMETERS = list(yaml_parse(group_text(synthetic(1)))["Parameters"])


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, list[ModelEntry]]:
    """200 models exported (manifest, examples) and every template rendered under tmp_path."""
    project = Project(tmp_path_factory.mktemp("scale"))
    entries = synthetic(MODELS)
    export(entries, project.models_dir)
    for path, text in template.render(entries, template.SOURCE.read_text(), project).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return project, entries


def test_200_models_make_a_root_and_one_stack_per_group(
        deployment: tuple[Project, list[ModelEntry]]) -> None:
    project, entries = deployment
    stacks = sorted(project.stacks.glob("models-*.yaml"))
    assert len(stacks) == math.ceil(MODELS / GROUP_SIZE) == 10
    # Every group holds the same resources but for the models' names (one is translated below);
    # cfn-lint reads the real stacks in test_template.
    # (The renderer writes intrinsics in their long form: no tags, so libyaml's loader reads it.)
    shapes = {len(yaml.load(path.read_text(), Loader=yaml.CSafeLoader)["Resources"])
              for path in stacks}
    assert len(shapes) == 1, shapes
    # The OpenAPI document renders from the same 200 exports: a model's routes once, each model
    # two request schemas, so it stays far under Lambda's 6 MB answer (GET /openapi.json).
    text = openapi.render(entries, exported(project.models_dir))
    document = json.loads(text)
    (model,) = document["paths"]["/v2/models/{model}/infer"]["parameters"]
    assert model["schema"]["enum"][-1] == entries[-1].name
    assert f"infer_request.{entries[-1].name}" in document["components"]["schemas"]
    assert len(text.encode()) <= 6_000_000 * (1 - STACK_MARGIN) * MODELS / 500


@pytest.fixture(scope="module")
def measured(deployment: tuple[Project, list[ModelEntry]]) -> dict[str, tuple[str, Usage]]:
    """Every stack of the deployment, translated as CloudFormation receives it: the root and
    each group's (name -> (text, usage))."""
    project, _ = deployment
    return {path.name: (path.read_text(), measure(path.read_text()))
            for path in [project.template, *sorted(project.stacks.glob("models-*.yaml"))]}


def test_every_stack_and_rest_api_is_within_its_quota_with_room_to_spare(
        measured: dict[str, tuple[str, Usage]]) -> None:
    assert len(measured) == 1 + MODELS // GROUP_SIZE
    for where, (text, found) in measured.items():
        assert found.resources <= quotas.STACK_RESOURCES * (1 - STACK_MARGIN), (where, found)
        assert found.outputs <= quotas.STACK_OUTPUTS * (1 - STACK_MARGIN), where
        assert found.parameters <= quotas.STACK_PARAMETERS * (1 - STACK_MARGIN), where
        assert len(text.encode()) <= quotas.TEMPLATE_S3_BYTES * (1 - STACK_MARGIN), where
        assert found.body_bytes <= quotas.TEMPLATE_S3_BYTES * (1 - STACK_MARGIN), where
        for api, count in found.api_resources.items():
            assert count <= quotas.API_RESOURCES * (1 - API_MARGIN), (where, api, count)
        # SAM adds one permission per route (a model's 8; the server's 10 and the model routes
        # it forwards, 18): each function's resource policy, at about 350 bytes a statement,
        # stays far under its 20 KB.
        assert max(found.permissions.values()) <= ROUTER_PERMISSIONS, found.permissions
        assert ROUTER_PERMISSIONS * 350 <= quotas.FUNCTION_POLICY_BYTES * (1 - STACK_MARGIN)


def test_a_full_group_costs_17_stack_resources_and_9_api_resources_per_model(
        measured: dict[str, tuple[str, Usage]]) -> None:
    one, (_, full) = measure(group_text(synthetic(1))), measured["models-0.yaml"]
    per_model = (full.resources - one.resources) / (GROUP_SIZE - 1)
    (api_one,), (api_full,) = one.api_resources.values(), full.api_resources.values()
    # layer, function, version, alias, role, log group, 2 alarms, deployment group and one
    # permission per route (8); /v2/models/<name> and its ready, infer, explain, versions,
    # versions/{version} and that one's ready, infer, explain.
    assert per_model == 9 + len(routes_of(MODEL)) == 17
    assert (api_full - api_one) / (GROUP_SIZE - 1) == 9
    assert full.resources == one.resources + 17 * (GROUP_SIZE - 1) <= 350
    assert api_full <= 185


def test_the_root_grows_by_a_constant_per_model_up_to_500() -> None:
    """Root stack at 20, 40, ... 500 models: per group, one nested stack, one output (its URL)
    and one stage in the usage plan; no model is named in the root (the server and batch
    functions read the catalog layer; the root API's model routes take the model as a path
    parameter), so nothing else grows."""
    sizes = {}
    for count in (GROUP_SIZE, 2 * GROUP_SIZE, 100, MODELS, 300, 400, 500):
        root = template.dump_root(template.root_document(
            synthetic(count), SOURCE, dict.fromkeys(range(count // GROUP_SIZE), PARAMETERS)))
        sizes[count] = (measure(root), len(root.encode()))
        assert "synthetic-" not in root  # no model's name
    first, _ = sizes[GROUP_SIZE]
    for count, (found, _) in sizes.items():
        groups = count // GROUP_SIZE
        assert found.resources == first.resources + (groups - 1), count
        assert found.outputs == first.outputs + (groups - 1), count
        assert found.parameters == first.parameters
        assert found.api_resources == first.api_resources  # the root API: constant
        assert found.permissions == first.permissions
    # The same bytes for every group, but for the group number's digits.
    per_group = {(sizes[c][1] - sizes[GROUP_SIZE][1]) / (c // GROUP_SIZE - 1)
                 for c in sizes if c > GROUP_SIZE}
    assert max(per_group) - min(per_group) <= 8, per_group
    assert sizes[500][0].resources <= quotas.STACK_RESOURCES * 0.25
    assert sizes[500][0].outputs <= quotas.STACK_OUTPUTS * 0.25
    # Most of the root is fixed (the server, jobs, batch, capture, monitoring and model store
    # resources: 66 KB at 20 models); 500 models make it 102 KB. Room to spare: 15 % of the
    # S3 template limit.
    assert sizes[500][1] <= quotas.TEMPLATE_S3_BYTES * 0.15
