"""A model file that does not match its manifest's sha256 is never served: through the real
handler, the function answers 503 on every model route and logs why, naming both digests."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EVENTS_DIR, MODELS_DIR, ROOT, load_event

MODEL = "breast-cancer-mlp"
HANDLER = ROOT / "functions" / "inference" / "app.py"


def flip_a_byte(model: Path) -> None:
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))


def swap_in_another_model(model: Path) -> None:
    """A valid ONNX graph, just not the exported one (the realistic tampering)."""
    other = next((MODELS_DIR / "diabetes-linear").glob("*/model.onnx"))
    shutil.copyfile(other, model)


@pytest.mark.parametrize("tamper", [flip_a_byte, swap_in_another_model],
                         ids=["flipped-byte", "another-valid-model"])
def test_a_model_failing_its_sha256_check_is_never_served(
        tamper: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, lambda_context: Any) -> None:
    # Given a copy of the exported model whose file no longer matches its manifest
    source = next((MODELS_DIR / MODEL).glob("*/manifest.json")).parent
    version = source.name
    copy = tmp_path / "models" / MODEL / version
    shutil.copytree(source, copy)
    tamper(copy / "model.onnx")
    expected = json.loads((copy / "manifest.json").read_text())["sha256"]
    monkeypatch.setenv("MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("MODEL_NAME", MODEL)
    monkeypatch.setenv("MODEL_VERSION", version)

    # When the function's container starts (module-scope load) and serves every model route
    with caplog.at_level(logging.ERROR):
        spec = importlib.util.spec_from_file_location(f"tampered_{tamper.__name__}", HANDLER)
        assert spec and spec.loader
        handler = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(handler)
    answers = {event.stem: handler.lambda_handler(load_event(event), lambda_context)
               for event in sorted((EVENTS_DIR / MODEL).glob("*.json"))}

    # Then each answer is 503 with the reason, and the log says which file and which digests
    assert {"ready", "version-ready", "infer", "version-infer", "infer-binary"} <= set(answers)
    for route, answer in answers.items():
        assert answer["statusCode"] == 503, (route, answer)
        body = json.loads(answer["body"])
        assert set(body) == {"error"} and "sha256" in body["error"], (route, body)
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("not ready" in line and expected in line and str(copy / "model.onnx") in line
               for line in logged), logged
