"""Fixtures every test tier shares: paths, exported models, a Lambda context, events."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from model_api.catalog import Catalog, CatalogModel

from local_api.background import serving
from local_api.context import LambdaContext

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "build" / "models"
EVENTS_DIR = ROOT / "events"
# The built template the local API tiers serve; MODEL_API_BUILT_TEMPLATE: another (the
# lifecycle test serves a copy of the repository with added models, model_registry.synthetic).
BUILT_TEMPLATE = Path(os.environ.get("MODEL_API_BUILT_TEMPLATE")
                      or ROOT / ".aws-sam" / "build" / "template.yaml")
# Every stack of the deployment: template.yaml (the root), then each group of models' nested stack.
STACKS = (ROOT / "template.yaml", *sorted((ROOT / "stacks").glob("models-*.yaml")))
# The venv's own command-line tools, whatever PATH the tests run with.
SAM = str(Path(sys.executable).parent / "sam")
CFN_LINT = str(Path(sys.executable).parent / "cfn-lint")

# Powertools reads these at import: no X-Ray daemon here, and metrics need a namespace.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "ServerlessModelApiTests")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("SAM_CLI_TELEMETRY", "0")


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext(function_name="test-function")


def exported_manifests() -> list[dict[str, Any]]:
    """Manifests of every version `make models` exported (the tests' real models), current or
    not: an added version may have no metrics, examples or explanation."""
    return [json.loads(p.read_text()) for p in sorted(MODELS_DIR.glob("*/*/manifest.json"))]


def current_manifests() -> dict[str, dict[str, Any]]:
    """The manifest of each registered model's current version (models.yaml), by model name:
    what its unversioned routes serve (not its highest version)."""
    from model_registry import registry

    return {entry.name: json.loads((MODELS_DIR / entry.name / entry.current / "manifest.json")
                                   .read_text())
            for entry in registry.load() if (MODELS_DIR / entry.name / entry.current).is_dir()}


@pytest.fixture(scope="session")
def manifests() -> dict[str, dict[str, Any]]:
    """Each registered model's current version's manifest, by model name."""
    found = current_manifests()
    if not found:
        pytest.fail(f"no exported models under {MODELS_DIR}: run `make models` (make test does)")
    return found


def catalog_of(*names: str) -> Catalog:
    """A model catalog of `names`, each with version 1, in group 0."""
    return Catalog(tuple(CatalogModel(name, ("1",), "1", 0) for name in names))


def catalog_file(folder: Path, *names: str) -> str:
    """The catalog of `names` written as the catalog layer's file; its path (MODEL_CATALOG)."""
    path = folder / "catalog.json"
    path.write_text(json.dumps(catalog_of(*names).document()))
    return str(path)


def load_event(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@contextmanager
def local_api_server(log: Path, template: Path = BUILT_TEMPLATE, api_key: str | None = None,
                     extra: tuple[str, ...] = ()) -> Iterator[tuple[httpx.Client, int]]:
    """The local API over the built template (or `template`) on a free port of 127.0.0.1, as a
    user runs it after `make serve`: yields a client and the port once it answers, then stops it
    with Ctrl-C. It must exit without a traceback: requests may be refused, never crash it."""
    assert template.exists(), "run `make build` (make test does)"
    with log.open("w") as out, serving(template, out, api_key=api_key, extra=extra) as port:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        try:
            yield client, port
        finally:
            client.close()
    output = log.read_text()
    assert "Traceback" not in output, output[-5000:]
