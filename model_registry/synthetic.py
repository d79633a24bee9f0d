"""Synthetic registries of many models, for the scale test (tests/template/test_scale.py) and
`make bench`'s scale section: one tiny ONNX graph exported once through add-model's own import
(checked, run in onnxruntime) and copied under each name, and a project folder holding the
registry-driven files of N such models as add-model would have left them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from model_api.manifest import MANIFEST_FILE
from onnx import TensorProto, helper
from samtranslator.yaml_helper import yaml_parse

from model_registry import catalog, template
from model_registry.add import import_version
from model_registry.changes import derived
from model_registry.quotas import GROUP_SIZE
from model_registry.registry import ModelEntry, Project, exported, load

HEADER = "# A synthetic registry (model_registry.synthetic).\n"


def tiny_model() -> bytes:
    """y = x + 1 over FP32 rows of 3 features: about the smallest graph the registry accepts."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    one = helper.make_tensor("one", TensorProto.FLOAT, [3], np.ones(3, np.float32))
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "tiny", [x], [y],
                              [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def name(index: int) -> str:
    """Names of one length (synthetic-007), so each model costs the root the same bytes."""
    return f"synthetic-{index:03d}"


def entries(count: int) -> list[ModelEntry]:
    """`count` onnx models, GROUP_SIZE per group in order."""
    return [ModelEntry(name(i), "onnx", ["1"], "1",
                       files={"1": {"path": f"model_store/{name(i)}/1/model.onnx",
                                    "sha256": "0" * 64}},
                       group=i // GROUP_SIZE) for i in range(count)]


def export(models: list[ModelEntry], models_dir: Path) -> None:
    """Export version 1 of each model into models_dir: the tiny graph, checked once by
    add-model's import, then the same files under each name (manifest name changed)."""
    first = models_dir / models[0].name / "1"
    import_version(models[0], "1", tiny_model(), models[0].files["1"]["path"], first)
    manifest = json.loads((first / MANIFEST_FILE).read_text())
    for entry in models[1:]:
        folder = models_dir / entry.name / "1"
        shutil.copytree(first, folder)
        (folder / MANIFEST_FILE).write_text(json.dumps({**manifest, "name": entry.name}))


def project(root: Path, count: int) -> Project:
    """A project under `root` serving `count` synthetic models: models.yaml, template.src.yaml,
    template.yaml and stacks/, events/, docs/openapi.json and build/models, all rendered as the
    registry does."""
    project = Project(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "docs").mkdir(exist_ok=True)
    shutil.copy2(template.SOURCE, template.source_of(project))
    project.registry.write_text(HEADER)
    models = entries(count)
    export(models, project.models_dir)
    derived(project, models, exported(project.models_dir)).apply()
    return project


def built_like(project: Project, build: Path, work: Path) -> Path:
    """The project's templates pointing at built code, as `sam build` would leave them: the
    inference code, runtime, serving and console layers of the seed build in `build`
    (.aws-sam/build); the project's model catalog, and one model layer folder per model
    (models/<name>/1, the synthetic export), written under `work`. Returns the root
    template's path (JSON), which the local API serves."""
    catalog.write(load(project.registry), work / "catalog" / "catalog" / "models.json")
    root = yaml_parse(project.template.read_text())
    for logical_id, resource in root["Resources"].items():
        for key in ("CodeUri", "ContentUri"):
            if key in (resource.get("Properties") or {}):
                resource["Properties"][key] = str(build / logical_id)
        if logical_id == "CatalogLayer":
            resource["Properties"]["ContentUri"] = str(work / "catalog")
    for path in sorted(project.stacks.glob("models-*.yaml")):
        stack = yaml_parse(path.read_text())
        for logical_id, resource in stack["Resources"].items():
            properties = resource.get("Properties") or {}
            if resource["Type"] == "AWS::Serverless::Function":
                properties["CodeUri"] = str(build / "ServerFunction")
            elif logical_id.endswith("ModelLayer"):
                model = properties["LayerName"]["Fn::Sub"].rsplit("-model-", 1)[1]
                layer = work / "layers" / model / "models" / model
                layer.parent.mkdir(parents=True, exist_ok=True)
                layer.symlink_to(project.models_dir / model)
                properties["ContentUri"] = str(work / "layers" / model)
            elif "ContentUri" in properties:  # a shared layer, declared again in each group
                properties["ContentUri"] = str(build / logical_id)
        path.write_text(json.dumps(stack))
    built = project.root / "built.json"
    built.write_text(json.dumps(root))
    return built
