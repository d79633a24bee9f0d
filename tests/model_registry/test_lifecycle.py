"""A model's lifecycle stays green: add (any signature, or a new version of a seed model), serve
every generated event through the real handler, check OpenAPI, remove, and the tree is as it was.

And the test tiers themselves hold after an ordinary add (issue 25): a copy of the repository
gets a three-input FP16/BOOL/UINT64 model and a second version of a seed model (no background,
no examples' metrics), then the tiers that read the registry and the exported models run
against that copy in a subprocess (`TIERS`, about a minute on 2 cores; MODEL_API_LIFECYCLE_TIERS=all
adds the slow ones, `SLOW_TIERS`, several minutes).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from model_api.routes import BATCH_JOBS, SERVER, routes_of
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from model_registry import openapi, registry, synthetic, template
from model_registry.add import AddError, add
from model_registry.registry import Project, exported
from model_registry.remove import RemoveError, remove
from tests.conftest import BUILT_TEMPLATE, MODELS_DIR, ROOT, LambdaContext
from tests.model_registry.conftest import COPIED, snapshot

HANDLER = ROOT / "functions" / "inference" / "app.py"
MIXED = "lifecycle-mixed-inputs"  # a name no registry is expected to hold already


def mixed_inputs(path: Path) -> Path:
    """y = float(a) + float(b) + float(c): three inputs of FP16, BOOL and UINT64, [N, 2] each."""
    nodes = [helper.make_node("Cast", [name], [f"{name}_f"], to=TensorProto.FLOAT)
             for name in "abc"]
    nodes += [helper.make_node("Add", ["a_f", "b_f"], ["ab"]),
              helper.make_node("Add", ["ab", "c_f"], ["y"])]
    inputs = [helper.make_tensor_value_info(name, kind, ["N", 2]) for name, kind in
              (("a", TensorProto.FLOAT16), ("b", TensorProto.BOOL), ("c", TensorProto.UINT64))]
    model = helper.make_model(
        helper.make_graph(nodes, "mixed", inputs,
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])]),
        opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


def two_inputs_int8(path: Path) -> Path:
    """y = a + b on INT8 inputs (two inputs of one datatype)."""
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])], "add",
        [helper.make_tensor_value_info(n, TensorProto.INT8, ["N", 3]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.INT8, ["N", 3])]),
        opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


def handle(project: Project, model: str, version: str, event: dict[str, Any],
           monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict[str, Any] | bytes]:
    """The real inference handler, initialised as `model`'s function (current `version`)."""
    monkeypatch.setenv("MODELS_DIR", str(project.models_dir))
    monkeypatch.setenv("MODEL_NAME", model)
    monkeypatch.setenv("MODEL_VERSION", version)
    spec = importlib.util.spec_from_file_location(f"lifecycle_{model}", HANDLER)
    assert spec and spec.loader
    handler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler)
    answer = handler.lambda_handler(event, LambdaContext())
    body = (base64.b64decode(answer["body"]) if answer["isBase64Encoded"]
            else answer["body"].encode())
    content_type = (answer.get("multiValueHeaders", {}).get("Content-Type", [""])[0]
                    or answer.get("headers", {}).get("Content-Type", ""))
    return answer["statusCode"], json.loads(body) if content_type == "application/json" else body


def serve_every_event(project: Project, model: str, version: str,
                      monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Each generated event of `model` through its function: all 200 (an explain route of a
    model with no explanation method: the 404 saying so); the answers by route."""
    files = sorted((project.events / model).glob("*.json"))
    assert files, f"no events for {model}"
    manifest = json.loads((project.models_dir / model / version / "manifest.json").read_text())
    explained = manifest.get("explanation", {}).get("method", "none") != "none"
    answers = {}
    for path in files:
        status, body = handle(project, model, version, json.loads(path.read_text()), monkeypatch)
        if "explain" in path.stem and not explained:
            assert status == 404 and "has no explanations" in body["error"], (path.name, body)
            continue
        assert status == 200, (path.name, body)
        answers[path.stem] = body
    return answers


def test_add_serve_and_remove_leave_the_tree_as_it_was(
        tmp_path: Path, project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(project)
    # Given a model of three inputs (FP16, BOOL, UINT64) and a second version of a seed model
    add(MIXED, mixed_inputs(tmp_path / "mixed.onnx"), project=project)
    seed_v1 = project.models_dir / "breast-cancer-mlp" / "1" / "model.onnx"
    seed_v2 = tmp_path / "mlp-v2.onnx"
    seed_v2.write_bytes(seed_v1.read_bytes())
    before_versions = next(e.versions for e in registry.load(project.registry)
                           if e.name == "breast-cancer-mlp")
    entry = add("breast-cancer-mlp", seed_v2, project=project)
    added = entry.versions[-1]
    assert (entry.versions, entry.current, entry.source) == ([*before_versions, added], "1",
                                                            "seed")

    # Then every generated file follows: template, OpenAPI, events, and each event is served
    entries = registry.load(project.registry)
    for path, text in template.render(entries, template.source_of(project).read_text(),
                                      project).items():
        assert path.read_text() == text, path
    assert openapi.render(entries, exported(project.models_dir)) == project.openapi.read_text()
    assert f'"#/components/schemas/infer_request.{MIXED}"' in project.openapi.read_text()
    answers = serve_every_event(project, MIXED, "1", monkeypatch)
    example = json.loads((project.models_dir / MIXED / "1" / "examples.json")
                         .read_text())["inputs"]
    expected = np.add(np.add(np.array(example["a"], np.float32), np.array(example["b"], bool)),
                      np.array(example["c"], np.float32))
    outputs = answers["infer"]["outputs"]
    np.testing.assert_array_equal(np.array(outputs[0]["data"]).reshape(outputs[0]["shape"]),
                                  expected)
    event = json.loads((project.events / "breast-cancer-mlp" / "version-infer.json").read_text())
    event["path"] = event["path"].replace("/versions/1/", f"/versions/{added}/")
    event["pathParameters"] = {"version": added}
    status, v2 = handle(project, "breast-cancer-mlp", "1", event, monkeypatch)
    status1, v1 = handle(project, "breast-cancer-mlp", "1",
                         json.loads((project.events / "breast-cancer-mlp" / "version-infer.json")
                                    .read_text()), monkeypatch)
    assert (status, status1) == (200, 200)
    assert isinstance(v2, dict) and isinstance(v1, dict)
    assert v2["model_version"] == added and v2["outputs"] == v1["outputs"]

    # When both are removed (the current version is kept unless told otherwise)
    with pytest.raises(RemoveError, match="current version"):
        remove("breast-cancer-mlp", "1", project=project)
    remove("breast-cancer-mlp", added, project=project)
    remove(MIXED, project=project)

    # Then the tree is byte for byte as it was
    assert snapshot(project) == before


def test_removing_the_current_version_names_the_next_one(
        tmp_path: Path, project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    add("pair", two_inputs_int8(tmp_path / "v1.onnx"), project=project)
    add("pair", two_inputs_int8(tmp_path / "v2.onnx"), version="2", project=project)
    with pytest.raises(RemoveError, match="NEW_CURRENT"):
        remove("pair", "1", project=project)
    remaining = remove("pair", "1", new_current="2", project=project)
    assert remaining is not None and (remaining.versions, remaining.current) == (["2"], "2")
    assert not (project.models_dir / "pair" / "1").exists()
    assert not (project.root / "model_store" / "pair" / "1").exists()
    serve_every_event(project, "pair", "2", monkeypatch)
    with pytest.raises(RemoveError, match="no version"):
        remove("pair", "7", project=project)
    with pytest.raises(RemoveError, match="no model"):
        remove("nope", project=project)


def test_a_refused_add_leaves_every_file_as_it_was(tmp_path: Path, project: Project) -> None:
    before = snapshot(project)
    x = np.random.default_rng(0).normal(size=(20, 2)).astype(np.float32)
    zipmap = tmp_path / "zipmap.onnx"
    zipmap.write_bytes(to_onnx(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), x[:1],
                               target_opset=18).SerializeToString())
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(mixed_inputs(tmp_path / "ok.onnx").read_bytes()[:-20])
    bad_examples = tmp_path / "examples.json"
    bad_examples.write_text(json.dumps({"inputs": {"a": [[1, 2, 3]]}}))
    for source, kwargs, reason in [
        (zipmap, {}, "zipmap=False"),
        (corrupt, {}, "not a valid ONNX model"),
        (tmp_path / "ok.onnx", {"examples_path": bad_examples}, "examples give inputs"),
    ]:
        with pytest.raises(AddError, match=reason):
            add("refused", source, project=project, **kwargs)
        assert snapshot(project) == before, reason


def test_adding_a_model_touches_only_its_own_files_and_a_full_group_opens_the_next(
        tmp_path: Path, project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given groups as large as the registry's models, so that they fill group 0
    entries = registry.load(project.registry)
    assert {e.group for e in entries} == {0}
    monkeypatch.setattr(registry, "GROUP_SIZE", len(entries))
    before = snapshot(project)
    # When a model is added
    entry = add("grouped", mixed_inputs(tmp_path / "grouped.onnx"), project=project)
    # Then it opens group 1: its stack, its events and the files that list every model change,
    # and no other model's file is rewritten
    assert entry.group == 1
    after = snapshot(project)
    changed = {path for path in after if before.get(path) != after[path]}
    assert {p for p in changed if not p.startswith(("model_store/grouped/", "build/models/",
                                                    "events/grouped/"))} == {
        "models.yaml", "template.yaml", "stacks/models-1.yaml", "docs/openapi.json"}
    assert "/v2/models/grouped/infer" in (project.stacks / "models-1.yaml").read_text()
    assert "grouped" not in (project.stacks / "models-0.yaml").read_text()
    document = json.loads(project.openapi.read_text())
    assert openapi.render(registry.load(project.registry), exported(project.models_dir)) == \
        project.openapi.read_text()
    assert "infer_request.grouped" in document["components"]["schemas"]
    # And removing it removes its group's stack: the tree is as it was
    remove("grouped", project=project)
    assert not (project.stacks / "models-1.yaml").exists()
    assert snapshot(project) == before


def test_removing_the_first_model_moves_the_server_events_to_the_next(project: Project) -> None:
    # The server's and the jobs function's events name the registry's first model: when that
    # model goes, they name the one that is first now, never a model no longer served
    first, second = registry.load(project.registry)[:2]
    remove(first.name, project=project)
    for function, folder in ((SERVER, "server"), (BATCH_JOBS, "batch")):
        texts = [(project.events / folder / f"{route.example}.json").read_text()
                 for route in routes_of(function)]
        assert not any(f"/{first.name}" in text for text in texts), folder
        assert any(f"/{second.name}" in text for text in texts), folder


# The tiers whose assertions range over every registered model and version: each must hold for
# any registry the documented commands make. TIERS run whole; FUZZ_TIERS (hypothesis, 40
# requests per model and route) for the added model and version only; SLOW_TIERS too (all of
# the hostile tier, schema fuzzing included, the browser) with MODEL_API_LIFECYCLE_TIERS=all.
TIERS = ("tests/functions/test_inference_handler.py", "tests/explain",
         "tests/local_api/test_events.py", "tests/model_export/test_seed_exports.py",
         "tests/e2e/test_local_api_http.py")
FUZZ_TIERS = ("tests/hostile/test_fuzz.py::test_well_formed_requests_of_ordinary_values_are_served",
              "tests/hostile/test_fuzz.py::"
              "test_well_formed_requests_of_extreme_values_get_no_server_error")
SLOW_TIERS = ("tests/hostile", "tests/console", "tests/e2e/test_readiness.py")
NOT_COPIED = {".git", ".venv", ".venv-torch", ".aws-sam", "build", ".pytest_cache", ".mypy_cache",
              ".ruff_cache", "__pycache__", "bench-results"}


def repository_copy(target: Path) -> Project:
    """The repository (sources, tests, registry, generated files, model_store/) and its
    build/models, copied to `target`, with this checkout's .aws-sam linked: tests run there see
    the copy's registry and models."""
    shutil.copytree(ROOT, target, ignore=lambda folder, names: [
        n for n in names if n in NOT_COPIED or n.endswith(".pyc")])
    shutil.copytree(MODELS_DIR, target / "build" / "models")
    # This checkout's sam build (code and shared layers, e.g. the console's) is the copy's too:
    # its model layers are not read there (MODEL_API_BUILT_TEMPLATE serves the copy's models)
    (target / ".aws-sam").symlink_to(BUILT_TEMPLATE.parent.parent)
    return Project(target)


def served(project: Project, work: Path) -> Path:
    """A built template serving `project` (as `sam build` would leave it, from this checkout's
    build: model_registry.synthetic.built_like), made from a copy of its registry files so the
    project's own stacks stay as rendered."""
    twin = Project(work / "project")
    for name in COPIED:
        source, target = project.root / name, twin.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
    twin.models_dir.parent.mkdir(parents=True, exist_ok=True)
    twin.models_dir.symlink_to(project.models_dir)
    built = synthetic.built_like(twin, BUILT_TEMPLATE.parent, work)
    # The console layer serves the project's own docs/openapi.json (GET /openapi.json)
    console = work / "ConsoleLayer"
    shutil.copytree(BUILT_TEMPLATE.parent / "ConsoleLayer", console)
    shutil.copy2(project.openapi, console / "console" / "openapi.json")
    root = json.loads(built.read_text())
    root["Resources"]["ConsoleLayer"]["Properties"]["ContentUri"] = str(console)
    built.write_text(json.dumps(root))
    return built


@pytest.mark.slow
def test_the_test_tiers_hold_after_an_ordinary_add(tmp_path: Path) -> None:
    # Given a copy of the repository, and as a new user adds: a model of three inputs (FP16,
    # BOOL, UINT64; no examples), then a second version of a seed model from a file (no
    # background: it cannot explain, while the current version does)
    project = repository_copy(tmp_path / "repository")
    add(MIXED, mixed_inputs(tmp_path / "mixed.onnx"), project=project)
    seed_v2 = tmp_path / "mlp-v2.onnx"
    seed_v2.write_bytes((project.models_dir / "breast-cancer-mlp" / "1" / "model.onnx")
                        .read_bytes())
    entry = add("breast-cancer-mlp", seed_v2, project=project)
    added = entry.versions[-1]  # the fuzz tiers below run for it and the added model
    # Then the current version's explain events are still there (explanation is per version)
    assert (project.events / "breast-cancer-mlp" / "explain.json").exists()
    # And the tiers pass against the copy (its tests/, registry and models: the subprocess
    # imports the copy's packages, checked first)
    built = served(project, tmp_path / "served")
    environment = {**os.environ, "MODEL_API_BUILT_TEMPLATE": str(built),
                   "PYTHONDONTWRITEBYTECODE": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import model_registry.registry as r, tests.conftest as c; "
                               "print(r.REGISTRY.parent, c.ROOT)"],
        cwd=project.root, env=environment, capture_output=True, text=True, check=True)
    assert where.stdout.split() == [str(project.root)] * 2, where.stdout
    runs = [TIERS, (*FUZZ_TIERS, "-k", f"{MIXED} or breast-cancer-mlp-{added}")]
    if os.environ.get("MODEL_API_LIFECYCLE_TIERS") == "all":
        runs.append(SLOW_TIERS)
    for arguments in runs:
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *arguments],
            cwd=project.root, env=environment, capture_output=True, text=True, timeout=1800)
        summary = (result.stdout.strip().splitlines() or ["no output"])[-1]
        print(f"\n{' '.join(arguments)} against the changed registry: {summary} "
              f"({time.monotonic() - started:.0f} s)")
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        assert " passed" in summary, summary  # something ran: the -k selects the added ones
