"""models.yaml is checked on load, and template.yaml and the group stacks are rendered from it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cfnlint.decode import decode
from model_api.routes import MODEL, routes_of
from samcli import yamlhelper

from model_registry import registry, template
from model_registry.quotas import GROUP_SIZE
from model_registry.registry import ModelEntry, Project, RegistryError
from tests.conftest import ROOT, SAM


def write_registry(path: Path, body: str) -> Path:
    path.write_text("# header\n" + body)
    return path


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            "models:\n  - {name: Bad_Name, source: seed, versions: ['1'], current: '1'}\n",
            "lower-case",
        ),
        (
            "models:\n  - {name: m, source: seed, versions: ['1'], current: '2'}\n",
            "current version",
        ),
        ("models:\n  - {name: m, source: pip, versions: ['1'], current: '1'}\n", "source"),
        (
            "models:\n  - {name: m, source: onnx, versions: ['1'], current: '1'}\n",
            "file and sha256",
        ),
        (
            "models:\n  - {name: m, source: seed, versions: ['1'], current: '1'}\n"
            "  - {name: m, source: seed, versions: ['1'], current: '1'}\n",
            "twice",
        ),
        (
            "models:\n  - {name: m, source: seed, versions: ['1'], current: '1', colour: red}\n",
            "colour",
        ),
        (
            "models:\n  - {name: m, source: seed, versions: ['1'], current: '1', group: -1}\n",
            "group",
        ),
        (
            "models:\n  - {name: m, source: seed, versions: ['1'], current: '1',"
            " reserved_concurrency: 0}\n",
            "reserved_concurrency",
        ),
        (
            f"models:\n  - {{name: {'m' * 50}, source: seed, versions: ['1'], current: '1'}}\n",
            "at most 49 characters",
        ),
        (
            "models:\n  - {name: m, source: seed, versions: ['1'], current: '1',"
            " reserved_concurrency: true}\n",
            "whole number",
        ),
        (
            "models:\n  - {name: m, source: seed, versions: ['1'], current: '1',"
            " reserved_concurrency: 901}\n",
            "unreserved",
        ),
        (
            "models:\n" + "".join(f"  - {{name: m{i}, source: seed, versions: ['1'],"
                                   " current: '1', group: 2}\n"
                                   for i in range(GROUP_SIZE + 1)),
            f"more than {GROUP_SIZE}",
        ),
    ],
)
def test_invalid_registries_are_refused_with_a_reason(
    tmp_path: Path, body: str, fragment: str
) -> None:
    with pytest.raises(RegistryError, match=fragment):
        registry.load(write_registry(tmp_path / "models.yaml", body))


def test_save_then_load_round_trips_and_keeps_the_header(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "models.yaml", "models: []\n")
    entries = [
        ModelEntry("a-b", "seed", ["1"], "1"),
        ModelEntry(
            "c",
            "onnx",
            ["1", "2"],
            "2",
            files={
                "1": {"path": "model_store/c/1/model.onnx", "sha256": "0" * 64},
                "2": {"path": "model_store/c/2/model.onnx", "sha256": "1" * 64},
            },
            labels=["no", "yes"],
        ),
    ]
    registry.save(entries, path)
    assert path.read_text().startswith("# header\n")
    assert registry.load(path) == entries
    # SAM CLI's yaml parser (the local API reads templates with it) makes yaml's global safe
    # loader build OrderedDicts, which safe_dump cannot write: the registry must not care.
    yamlhelper.yaml_parse("a: {b: 1}")
    registry.save(registry.load(path), path)
    assert registry.load(path) == entries


def test_the_committed_template_is_up_to_date_with_the_registry() -> None:
    assert template.main(["--check"]) == 0


def test_each_entry_renders_a_layer_function_log_group_alarms_and_routes_in_its_group(
        tmp_path: Path) -> None:
    entries = [
        ModelEntry("alpha", "seed", ["1"], "1"),
        ModelEntry("beta-2", "seed", ["1", "2"], "2", group=3, reserved_concurrency=7),
    ]
    project = Project(tmp_path)
    rendered = template.render(entries, template.SOURCE.read_text(), project)
    assert template.render(entries, template.SOURCE.read_text(), project) == rendered
    assert sorted(rendered) == sorted([project.template, tmp_path / "stacks/models-0.yaml",
                                       tmp_path / "stacks/models-3.yaml"])
    for path, text in rendered.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    root_resources = decode(str(project.template))[0]["Resources"]
    assert {"ModelsGroup0", "ModelsGroup3"} <= set(root_resources)
    assert not any(name.endswith("Function") and name.startswith(("Alpha", "Beta"))
                   for name in root_resources)
    for camel, name, current, group in (("Alpha", "alpha", "1", 0), ("Beta2", "beta-2", "2", 3)):
        assert root_resources[f"ModelsGroup{group}"]["Properties"]["Location"] == \
            f"stacks/models-{group}.yaml"
        resources = decode(str(tmp_path / f"stacks/models-{group}.yaml"))[0]["Resources"]
        function = resources[f"{camel}Function"]["Properties"]
        assert function["Environment"]["Variables"]["MODEL_VERSION"] == current
        assert function["AutoPublishAlias"] == "live"
        assert len(function["DeploymentPreference"]["Alarms"]) == 2
        assert {e["Properties"]["Path"] for e in function["Events"].values()} == {
            route.for_model(name) for route in routes_of(MODEL)}
        assert resources["ModelApi"]["Type"] == "AWS::Serverless::Api"
        for suffix in ("ModelLayer", "FunctionLogGroup", "ErrorsAlarm", "ServerErrorsAlarm"):
            assert f"{camel}{suffix}" in resources
    # models.yaml's reserved_concurrency wins over the template-wide parameter
    beta = decode(str(tmp_path / "stacks/models-3.yaml"))[0]["Resources"]["Beta2Function"]
    assert beta["Properties"]["ReservedConcurrentExecutions"] == 7
    alpha = decode(str(tmp_path / "stacks/models-0.yaml"))[0]["Resources"]["AlphaFunction"]
    assert "Fn::If" in alpha["Properties"]["ReservedConcurrentExecutions"]
    for path in rendered:
        result = subprocess.run([SAM, "validate", "--lint", "--template", str(path)],
                                capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0, result.stdout + result.stderr


def test_a_new_model_joins_the_lowest_group_with_room() -> None:
    full = [ModelEntry(f"m{i}", "seed", ["1"], "1", group=i // GROUP_SIZE)
            for i in range(2 * GROUP_SIZE)]
    assert registry.free_group(full) == 2
    assert registry.free_group([e for e in full if e.name != f"m{GROUP_SIZE + 3}"]) == 1
    assert registry.free_group([]) == 0


def test_a_command_on_an_invalid_registry_says_why_without_a_traceback(
        capsys: pytest.CaptureFixture[str]) -> None:
    def broken() -> int:
        raise RegistryError("models.yaml: the models reserve 2000 concurrent executions")

    assert registry.run(broken) == 2
    assert capsys.readouterr().err == (
        "error: models.yaml: the models reserve 2000 concurrent executions\n")
    assert registry.run(lambda: 0) == 0


def test_the_catalog_lists_the_versions_that_take_json_lines_only() -> None:
    """From the exported manifests: text-topics (a BYTES input and label) takes JSON Lines jobs
    only, with the reason; the numeric seed models take .npy too; a version not exported yet
    is not listed (its runner says it)."""
    from model_registry import catalog
    from tests.conftest import MODELS_DIR

    entries = registry.load()
    found = {m.name: dict(m.jsonl_only)
             for m in catalog.catalog(entries, registry.exported(MODELS_DIR)).models}
    assert set(found["text-topics"]) == {"1"}
    assert "input 'text', output 'label'" in found["text-topics"]["1"]
    assert found["breast-cancer-mlp"] == found["digits-cnn"] == {}
    assert all(m.jsonl_only == () for m in catalog.catalog(
        entries, registry.exported(MODELS_DIR / "nowhere")).models)
