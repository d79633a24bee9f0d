"""What ships of the batch path is decided by one list, batch/shipping.txt: BatchLayer
(batch/Makefile) and the runner's image (batch/Dockerfile) both copy what batch/ship.sh selects
from it. Every module of batch/ is listed; what ships imports only what ships with it (project
modules and third-party packages alike, read from the source: tests/architecture/import_graph);
the local emulation (local_api, local_api/batch/ included) ships nowhere."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from samtranslator.yaml_helper import yaml_parse

from bench.gpu_kit import image_requirements
from tests.architecture.import_graph import Module, build
from tests.batch.conftest import shipping
from tests.conftest import ROOT

BATCH = ROOT / "batch"
SERVING = ROOT / "layers" / "serving" / "python"
# Lambda's python3.12 runtime brings boto3 and botocore; a layer brings the rest.
LAMBDA_RUNTIME = {"boto3", "botocore"}
# Where a distribution's import name differs from its name on the package index.
IMPORT_NAMES = {"aws-lambda-powertools": "aws_lambda_powertools", "pyyaml": "yaml",
                "onnxruntime-gpu": "onnxruntime"}


def listed_for(target: str) -> set[str]:
    return {path for path, targets in shipping().items() if target in targets}


def module_name(path: str) -> str:
    name = path.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


def shipped_copy(target: str, dest: Path) -> set[str]:
    """What batch/ship.sh copies for `target`: paths under `dest`."""
    subprocess.run(["sh", str(BATCH / "ship.sh"), target, str(dest)], check=True, timeout=60)
    return {str(path.relative_to(dest)) for path in dest.rglob("*") if path.is_file()}


def requirement_names(lines: list[str]) -> set[str]:
    """The import names of pinned requirements (`name[extra]==version`, quotes allowed)."""
    names = set()
    for line in lines:
        found = re.match(r'"?([A-Za-z0-9_.-]+)', line.strip())
        if found and not line.strip().startswith("#"):
            name = found[1].lower()
            names.add(IMPORT_NAMES.get(name, name.replace("-", "_")))
    return names | ({"botocore"} if "boto3" in names else set())  # boto3 installs botocore


def closure(modules: dict[str, Module], roots: set[str]) -> set[str]:
    """The project modules that importing `roots` can run (function-level imports included)."""
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(modules[name].imports)
    return seen


def missing(modules: dict[str, Module], roots: set[str], available: set[str],
            third_party: set[str]) -> list[str]:
    """What `roots` import that is not `available` (project modules), and the third-party
    packages their modules import at module level that are neither the standard library nor
    `third_party` (a function-level import of a tool, such as model_registry.quotas's SAM
    translator, runs only where that function is called)."""
    said = []
    for name in sorted(closure(modules, roots)):
        if name not in available:
            importers = sorted(n for n in closure(modules, roots) if name in modules[n].imports)
            said.append(f"{name} (imported by {', '.join(importers)}) does not ship")
            continue
        tree_imports = top_level_externals(modules[name].path)
        for package in sorted(tree_imports - set(sys.stdlib_module_names) - third_party):
            said.append(f"{name} imports {package}, which does not ship")
    return said


def top_level_externals(path: Path) -> set[str]:
    """The top-level names a module imports at module level, other than the project's."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found - {"model_api", "batch", "local_api", "model_registry", "model_export",
                    "bench", "functions"}


def test_every_module_of_the_batch_package_is_listed_once_with_where_it_ships() -> None:
    listed = shipping()
    modules = {str(path.relative_to(ROOT)) for path in BATCH.rglob("*.py")}
    assert modules == {path for path in listed if path.startswith("batch/")}
    for path, targets in listed.items():
        assert (ROOT / path).is_file(), path
        assert targets and targets <= {"layer", "image"}, (path, targets)


def test_both_builds_copy_what_the_list_selects(tmp_path: Path) -> None:
    makefile = (BATCH / "Makefile").read_text()
    assert re.search(r'^\tsh "\$\(HERE\)ship.sh" layer "\$\(ARTIFACTS_DIR\)/python"$', makefile,
                     re.MULTILINE)
    dockerfile = (BATCH / "Dockerfile").read_text()
    assert "RUN sh /src/batch/ship.sh image /ship\n" in dockerfile
    assert "COPY --from=sources /ship/ /app/\n" in dockerfile
    # The exported models, less the files of versions kept in the model store (issue 21)
    assert "COPY --from=sources /models /opt/models\n" in dockerfile
    # No other copy of the project's own code into the image than the serving library's.
    copies = re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.MULTILINE)
    assert sorted(copies) == sorted([
        "batch /src/batch", "model_registry /src/model_registry",
        "layers/serving/python/model_api /app/serving/model_api",
        "models.yaml /app/models.yaml", "build/models /models"])
    for target in ("layer", "image"):
        assert shipped_copy(target, tmp_path / target) == listed_for(target)


def test_nothing_local_only_ships() -> None:
    modules = build()
    for target in ("layer", "image"):
        shipped = {module_name(path) for path in listed_for(target)}
        assert not {name for name in shipped if modules[name].package == "local_api"}
        reached = closure(modules, shipped)
        assert not {name for name in reached if modules[name].package == "local_api"}, target
    for path in listed_for("layer") | listed_for("image"):
        text = (ROOT / path).read_text()
        assert "SIGKILL" not in text and "class LocalSubmitter" not in text, path


def function_layers() -> dict[str, list[str]]:
    """functions/<name>/app.py's module -> the layers template.yaml gives it, for the batch
    functions (the ones that take BatchLayer)."""
    template = yaml_parse((ROOT / "template.yaml").read_text())
    found = {}
    for resource in template["Resources"].values():
        properties = resource.get("Properties") or {}
        layers = [layer.get("Ref") for layer in properties.get("Layers") or []
                  if isinstance(layer, dict)]
        if resource["Type"] == "AWS::Serverless::Function" and "BatchLayer" in layers:
            function = Path(properties["CodeUri"]).name
            found[f"functions.{function}.app"] = layers
    return found


def test_each_batch_function_imports_only_what_its_layers_hold() -> None:
    modules = build()
    serving = {name for name in modules if modules[name].package == "model_api"}
    batch_layer = {module_name(path) for path in listed_for("layer")}
    runtime = requirement_names((ROOT / "layers" / "runtime" / "requirements.txt")
                                .read_text().splitlines())
    functions = function_layers()
    assert set(functions) == {"functions.batch_trigger.app", "functions.batch_jobs.app",
                              "functions.batch_state.app"}
    for function, layers in functions.items():
        available = {function} | batch_layer
        third_party = set(LAMBDA_RUNTIME)
        if "ServingLayer" in layers:
            available |= serving
        if "RuntimeLayer" in layers:
            third_party |= runtime
        assert not missing(modules, {function}, available, third_party), (function, layers)


def test_the_runner_imports_only_what_the_image_holds() -> None:
    modules = build()
    image = {module_name(path) for path in listed_for("image")}
    serving = {name for name in modules if modules[name].package == "model_api"}
    installed = requirement_names(image_requirements())
    problems = missing(modules, image, image | serving, installed)
    assert not problems, "\n".join(problems)
    assert "batch.runner" in image


@pytest.mark.parametrize("target", ["layer", "image"])
def test_what_ships_imports_in_a_fresh_interpreter_from_the_shipped_copy(
        target: str, tmp_path: Path) -> None:
    """The shipped copy alone (plus the serving library), as Lambda or the image lays it out."""
    shipped_copy(target, tmp_path)
    names = sorted(module_name(path) for path in listed_for(target))
    script = f"import importlib\nfor name in {names!r}: importlib.import_module(name)\n"
    env = {"PATH": "", "PYTHONPATH": f"{tmp_path}:{SERVING}", "JOBS_TABLE": "t",
           "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
