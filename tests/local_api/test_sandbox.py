"""A function's files are laid out as Lambda lays them out: layers merged into one /opt in
order (a later layer's file wins), its environment pointing there."""

from __future__ import annotations

from pathlib import Path

from local_api import sandbox
from local_api.template import FunctionSpec


def function(code: Path, layers: tuple[Path, ...]) -> FunctionSpec:
    return FunctionSpec("Fn", "fn", "app.handler", "python3.12", code, layers,
                        {"MODELS_DIR": "/opt/models", "OTHER": "/optical", "OPT": "/opt"}, 3, 128)


def test_layers_merge_later_wins_and_environment_points_into_the_local_opt(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for path, text in {one / "python/pkg/a.py": "one", one / "python/same.py": "one",
                       two / "python/pkg/b.py": "two", two / "python/same.py": "two",
                       two / "models/m/1/model.onnx": "model"}.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "code").mkdir()

    boxes = sandbox.prepare([function(tmp_path / "code", (one, two))], tmp_path / "state",
                            "eu-west-1")
    box = boxes["Fn"]
    opt = box.opt_dir
    assert opt == (tmp_path / "state/Fn/opt").absolute()
    assert (opt / "python/same.py").read_text() == "two"
    assert {p.name for p in (opt / "python/pkg").iterdir()} == {"a.py", "b.py"}
    assert (opt / "models/m/1/model.onnx").read_text() == "model"
    assert box.python_path[:2] == (str(tmp_path / "code"), str(opt / "python"))
    env = box.environment
    assert env["MODELS_DIR"] == f"{opt}/models" and env["OPT"] == str(opt)
    assert env["OTHER"] == "/optical"
    assert env["AWS_REGION"] == "eu-west-1" and env["_HANDLER"] == "app.handler"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    assert env["POWERTOOLS_TRACE_DISABLED"] == "true"
    # Prepared again (a new server start): rebuilt, not stacked on the old tree.
    sandbox.prepare([function(tmp_path / "code", (two,))], tmp_path / "state", "eu-west-1")
    assert not (opt / "python/pkg/a.py").exists()
