"""The template as CloudFormation will deploy it, for the security tests to inspect and scan.

SAM's implicit resources (roles, stage, usage plan, permissions) only exist after the transform,
so the tests translate template.yaml offline, the way `sam deploy` would have CloudFormation do
it: AWS::LanguageExtensions first (resolving `!If` on parameters), then the SAM transform.
"""

from __future__ import annotations

import copy
import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

TEMPLATE = ROOT / "template.yaml"
CHECKOV_CONFIG = ROOT / ".checkov.yaml"
# checkov pins boto3 1.35 and packaging<24, which sam-cli's pins forbid: it gets its own venv.
CHECKOV_VENV = ROOT / ".venv-checkov"
CHECKOV_REQUIREMENTS = Path(__file__).parent / "requirements-checkov.txt"
PSEUDO_PARAMETERS = {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012",
                     "AWS::Partition": "aws", "AWS::StackName": "model-api",
                     "AWS::URLSuffix": "amazonaws.com"}


@functools.cache
def source_template() -> dict[str, Any]:
    from samtranslator.yaml_helper import yaml_parse

    return yaml_parse(TEMPLATE.read_text())


def translate(**parameters: str) -> dict[str, Any]:
    """template.yaml as plain CloudFormation for these parameter values (defaults otherwise)."""
    return copy.deepcopy(_translate(tuple(sorted(parameters.items()))))


@functools.cache
def _translate(parameters: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    import boto3
    from samcli.lib.cfn_language_extensions.sam_integration import expand_language_extensions
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    values = dict(parameters)
    template = expand_language_extensions(copy.deepcopy(source_template()),
                                          {**PSEUDO_PARAMETERS, **values}, enabled=True)
    template = template.expanded_template
    for resource in template["Resources"].values():  # local paths: `sam package` uploads them
        properties = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            if isinstance(properties.get(key), str):
                properties[key] = f"s3://artifacts/{key}"
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name="us-east-1"))
    return translator.translate(template, parameter_values=values, get_managed_policy_map=dict)


def checkov_executable() -> Path:
    """checkov from its own venv, created on first use from the pinned requirements."""
    executable = CHECKOV_VENV / "bin" / "checkov"
    if not executable.exists():
        subprocess.run([sys.executable, "-m", "venv", str(CHECKOV_VENV)], check=True)
        subprocess.run([str(CHECKOV_VENV / "bin" / "pip"), "install", "--quiet",
                        "--disable-pip-version-check", "-r", str(CHECKOV_REQUIREMENTS)], check=True)
    return executable


@pytest.fixture(scope="session")
def deployed() -> dict[str, dict[str, Any]]:
    """The translated template's resources under both ApiAuth modes, by mode."""
    return {mode: translate(ApiAuth=mode)["Resources"] for mode in ("API_KEY", "AWS_IAM")}


def write_json(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document, indent=1))
    return path
