"""models.yaml is checked on load, and template.yaml's model blocks are rendered from it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cfnlint.decode import decode
from model_api.routes import MODEL, routes_of
from samcli import yamlhelper

from model_registry import registry, template
from model_registry.registry import ModelEntry, RegistryError
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


def test_each_entry_renders_a_layer_function_log_group_alarms_and_routes(tmp_path: Path) -> None:
    entries = [
        ModelEntry("alpha", "seed", ["1"], "1"),
        ModelEntry("beta-2", "seed", ["1", "2"], "2"),
    ]
    rendered = template.render(entries, template.TEMPLATE.read_text())
    assert template.render(entries, rendered) == rendered  # idempotent
    out = tmp_path / "template.yaml"
    out.write_text(rendered)
    resources = decode(str(out))[0]["Resources"]
    for camel, name, current in (("Alpha", "alpha", "1"), ("Beta2", "beta-2", "2")):
        function = resources[f"{camel}Function"]["Properties"]
        assert function["Environment"]["Variables"]["MODEL_VERSION"] == current
        assert function["AutoPublishAlias"] == "live"
        assert len(function["DeploymentPreference"]["Alarms"]) == 2
        assert {e["Properties"]["Path"] for e in function["Events"].values()} == {
            route.for_model(name) for route in routes_of(MODEL)}
        for suffix in ("ModelLayer", "FunctionLogGroup", "ErrorsAlarm", "ServerErrorsAlarm"):
            assert f"{camel}{suffix}" in resources
    result = subprocess.run(
        [SAM, "validate", "--lint", "--template", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
