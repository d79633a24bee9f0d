"""Model names and versions, in one place: their patterns, the name's length limit, the form a
name takes in CloudFormation logical IDs, and the order of versions.

The registry (models.yaml), the batch keys (`batch/input/<model>/versions/<version>/…`), the
model layers' build and the serving library all check and order names with these, so a name one
of them accepts is a name all of them accept. Standard library only: `sam build` imports it
(layers/models/find_model.py).
"""

from __future__ import annotations

import re

# Lower-case words joined by hyphens: valid in a URL, and it maps one-to-one onto a CloudFormation
# logical ID (breast-cancer-mlp -> BreastCancerMlp) because no word may be empty. Use fullmatch.
MODEL_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
# A version: 1-32 characters of [0-9A-Za-z._-], starting with a letter or digit. Use fullmatch.
VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,31}")

# Lambda function names are at most 64 characters; each model function is named
# <ModelFunctionPrefix><model>, and the prefix takes at most 15 (the template's
# ModelFunctionPrefix pattern), so model names have 49.
FUNCTION_NAME_CHARS = 64
PREFIX_CHARS = 15
MAX_MODEL_NAME_CHARS = FUNCTION_NAME_CHARS - PREFIX_CHARS


def camel_name(name: str) -> str:
    """A model's name in template logical IDs: breast-cancer-mlp -> BreastCancerMlp."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("-"))



def version_key(version: str) -> tuple[int, int, str]:
    """The sort key of a version: numeric versions in numeric order (2 before 10), then the
    others by name. The API lists, and the batch runner finds, versions in this order."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def numbered(versions: list[str]) -> list[int]:
    """The numeric versions among `versions`, as numbers, in version_key order (the last is the
    highest: add-model's next version is one more)."""
    return [int(v) for v in sorted(versions, key=version_key) if v.isdigit()]
