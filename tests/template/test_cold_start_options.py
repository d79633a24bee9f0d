"""SnapStart and provisioned concurrency: template parameters that every model function's alias
`live` takes (in its group's stack), off by default, never both at once (docs/performance.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cfnlint.decode import decode

from tests.conftest import ROOT, STACKS

TEMPLATE = ROOT / "template.yaml"


def template(path: Path = TEMPLATE) -> dict[str, Any]:
    document, errors = decode(str(path))
    assert not errors, errors
    return dict(document)


def test_both_are_parameters_off_by_default() -> None:
    parameters = template()["Parameters"]
    assert parameters["SnapStart"]["Default"] == "Disabled"
    assert parameters["ProvisionedConcurrency"]["Default"] == 0


def test_every_model_function_takes_them_on_its_published_alias() -> None:
    models = [f for path in STACKS for f in template(path)["Resources"].values()
              if f["Type"] == "AWS::Serverless::Function"
              and "MODEL_NAME" in f["Properties"].get("Environment", {}).get("Variables", {})]
    assert models
    for function in models:
        properties = function["Properties"]
        assert properties["AutoPublishAlias"] == "live"
        assert properties["SnapStart"]["Fn::If"][0] == "UseSnapStart"
        assert properties["SnapStart"]["Fn::If"][1] == {"ApplyOn": "PublishedVersions"}
        provisioned = properties["ProvisionedConcurrencyConfig"]["Fn::If"]
        assert provisioned[0] == "HasProvisionedConcurrency"
        assert provisioned[1] == {"ProvisionedConcurrentExecutions":
                                  {"Ref": "ProvisionedConcurrency"}}


def test_a_rule_refuses_both_at_once() -> None:
    rule = template()["Rules"]["SnapStartOrProvisionedConcurrency"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "SnapStart"}, "Enabled"]}
    assert rule["Assertions"][0]["Assert"] == {
        "Fn::Equals": [{"Ref": "ProvisionedConcurrency"}, "0"]}
