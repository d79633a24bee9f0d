"""The templates as CloudFormation will deploy them, for the security tests to inspect and scan.

SAM's implicit resources (roles, stage, usage plan, permissions) only exist after the transform,
so the tests translate each stack of the deployment (template.yaml and the model groups' nested
stacks under stacks/) offline, the way `sam deploy` would have CloudFormation do it:
AWS::LanguageExtensions first (resolving `!If` on parameters), then the SAM transform
(model_registry.quotas.translate).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

TEMPLATE = ROOT / "template.yaml"
CHECKOV_CONFIG = ROOT / ".checkov.yaml"
# checkov pins boto3 1.35 and packaging<24, which sam-cli's pins forbid: it gets its own venv.
CHECKOV_VENV = ROOT / ".venv-checkov"
CHECKOV_REQUIREMENTS = Path(__file__).parent / "requirements-checkov.txt"


@functools.cache
def source_template(path: Path = TEMPLATE) -> dict[str, Any]:
    from samtranslator.yaml_helper import yaml_parse

    parsed: dict[str, Any] = yaml_parse(path.read_text())
    return parsed


def translate(path: Path = TEMPLATE, **parameters: str) -> dict[str, Any]:
    """A stack (template.yaml by default) as plain CloudFormation for these parameter values
    (defaults otherwise; a group's shared layers get placeholder ARNs)."""
    return copy.deepcopy(_translate(path, tuple(sorted(parameters.items()))))


@functools.cache
def _translate(path: Path, parameters: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    from model_registry.quotas import translate as sam_translate

    template = source_template(path)
    values = {name: f"arn:aws:lambda:us-east-1:123456789012:layer:{name}:1"
              for name in ("RuntimeLayer", "ServingLayer") if name in template["Parameters"]}
    values.update({k: v for k, v in parameters if k in template["Parameters"]})
    return sam_translate(template, values)


def checkov_executable() -> Path:
    """checkov from its own venv, created on first use from the pinned requirements."""
    executable = CHECKOV_VENV / "bin" / "checkov"
    if not executable.exists():
        subprocess.run([sys.executable, "-m", "venv", str(CHECKOV_VENV)], check=True)
        # with the project venv's uv when it has one, else pip (tools/install.sh)
        subprocess.run([str(ROOT / "tools" / "install.sh"), str(CHECKOV_VENV / "bin" / "python"),
                        str(CHECKOV_REQUIREMENTS)], check=True,
                       env={**os.environ, "UV": str(Path(sys.executable).parent / "uv")})
    return executable


def write_json(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document, indent=1))
    return path
