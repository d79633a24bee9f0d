"""One pipeline, one version rule, one current: the same rows through the API's handler and
through the batch loop (`make batch-local`'s) give byte-identical answers, for a model with two
versions whose current one is not the highest: unversioned asks serve `current`, named ones
that version. Infer requests as JSON Lines records, explanations (`/explain` against records
with `"parameters": {"explain": true}`), and .npy rows against the API's binary outputs."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from batch.models import current_version
from tests.batch.conftest import FEATURES, MODEL, WEIGHTS, registry, request_line, tiny_model
from tests.conftest import EVENTS_DIR, ROOT, LambdaContext

RNG = np.random.default_rng(5)
ROWS = [request_line(f"r{n}", RNG.normal(size=(1 + n % 2, FEATURES))) for n in range(12)]


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-classifier versions 1 and 2 (other weights: other answers); 1 is current."""
    folder = tiny_model(tmp_path_factory.mktemp("versions"), "1")
    return tiny_model(folder, "2", WEIGHTS[:, ::-1].copy(), current="1")


def api_answers(models_dir: Path, version: str | None, monkeypatch: pytest.MonkeyPatch,
                context: LambdaContext, rows: list[str] = ROWS,
                operation: str = "infer") -> list[bytes]:
    """POST each row to the inference function's handler (its `operation` route: infer or
    explain), as its template entry configures it (MODEL_VERSION: the registry's current);
    the response bodies."""
    monkeypatch.setenv("MODELS_DIR", str(models_dir))
    monkeypatch.setenv("MODEL_NAME", MODEL)
    monkeypatch.setenv("MODEL_VERSION", current_version(MODEL, registry(models_dir)) or "")
    spec = importlib.util.spec_from_file_location(
        f"inference_app_{version}", ROOT / "functions" / "inference" / "app.py")
    assert spec and spec.loader
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    sample = json.loads((EVENTS_DIR / "breast-cancer-mlp" / "infer.json").read_text())
    route = f"/v2/models/{MODEL}" + (f"/versions/{version}" if version else "") + f"/{operation}"
    answers = []
    for row in rows:
        event: dict[str, Any] = {**sample, "path": route, "resource": route,
                                 "pathParameters": {"version": version} if version else None,
                                 "body": base64.b64encode(row.encode()).decode(),
                                 "isBase64Encoded": True}
        answer = app.lambda_handler(event, context)
        assert answer["statusCode"] == 200, answer["body"]
        body = answer["body"]
        answers.append(base64.b64decode(body) if answer.get("isBase64Encoded") else body.encode())
    return answers


def batch_answers(models_dir: Path, version: str | None, tmp_path: Path,
                  rows: list[str] = ROWS) -> list[bytes]:
    """The same rows as one JSON Lines job of the local batch loop; its output records."""
    source = tmp_path / f"rows-{version}.jsonl"
    source.write_text("\n".join(rows) + "\n")
    output = tmp_path / f"answers-{version}.jsonl"
    run_batch(models_dir, version, source, output)
    return output.read_bytes().splitlines()


def run_batch(models_dir: Path, version: str | None, source: Path, output: Path) -> None:
    """`make batch-local`'s loop over `source` (.jsonl or .npy), its outputs at `output`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODEL"))}
    result = subprocess.run(
        [sys.executable, "-m", "local_api.batch.loop", "--model", MODEL, "--input", str(source),
         "--output", str(output), "--models-dir", str(models_dir),
         "--registry", str(registry(models_dir)), *(["--version", version] if version else [])],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    job = json.loads(result.stdout.splitlines()[-1])["job"]
    assert job["model_version"] == (version or "1")


@pytest.mark.parametrize("version", [None, "2"], ids=["current", "v2"])
def test_the_api_and_the_batch_loop_serve_the_same_version_alike(
        two_versions: Path, version: str | None, monkeypatch: pytest.MonkeyPatch,
        lambda_context: LambdaContext, tmp_path: Path) -> None:
    api = api_answers(two_versions, version, monkeypatch, lambda_context)
    batch = batch_answers(two_versions, version, tmp_path)
    assert batch == api
    served = {json.loads(answer)["model_version"] for answer in api}
    assert served == {version or "1"}  # current is 1, though 2 is the highest


def test_the_two_versions_answer_differently(two_versions: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             lambda_context: LambdaContext) -> None:
    """Else the comparison above could not tell the versions apart."""
    one, two = (api_answers(two_versions, v, monkeypatch, lambda_context) for v in ("1", "2"))
    labels = [[json.loads(a)["outputs"][0]["data"] for a in answers] for answers in (one, two)]
    assert labels[0] != labels[1]


def test_explanations_through_the_api_and_the_batch_loop_are_alike(
        two_versions: Path, monkeypatch: pytest.MonkeyPatch, lambda_context: LambdaContext,
        tmp_path: Path) -> None:
    """/explain and a JSON Lines record asking for explanations: the same bytes."""
    rows = [request_line(f"e{n}", RNG.normal(size=(1 + n % 2, FEATURES)),
                         parameters={"explain": True}) for n in range(4)]
    api = api_answers(two_versions, None, monkeypatch, lambda_context, rows, "explain")
    assert batch_answers(two_versions, None, tmp_path, rows) == api
    assert all(b'"attributions"' in answer for answer in api)


def test_npy_rows_through_the_batch_loop_are_the_api_binary_outputs(
        two_versions: Path, monkeypatch: pytest.MonkeyPatch, lambda_context: LambdaContext,
        tmp_path: Path) -> None:
    """A .npy job's outputs hold, byte for byte, the API's binary tensors for the same rows."""
    rows = RNG.normal(size=(7, FEATURES)).astype(np.float32)
    source, output = tmp_path / "rows.npy", tmp_path / "answers.npy"
    np.save(source, rows)
    run_batch(two_versions, None, source, output)
    [answer] = api_answers(two_versions, None, monkeypatch, lambda_context,
                           [request_line("n", rows, parameters={"binary_data_output": True})])
    # The JSON header, then the binary tensors (latin-1: one character per byte)
    header, end = json.JSONDecoder().raw_decode(answer.decode("latin-1"))
    blobs = answer[end:]
    for output_meta in header["outputs"]:
        size = output_meta["parameters"]["binary_data_size"]
        blob, blobs = blobs[:size], blobs[size:]
        batch = np.load(tmp_path / f"answers.{output_meta['name']}.npy")
        assert list(batch.shape) == output_meta["shape"]
        assert batch.tobytes() == blob
    assert blobs == b""


def test_a_request_without_an_id_is_answered_with_one_on_both_paths(
        two_versions: Path, monkeypatch: pytest.MonkeyPatch, lambda_context: LambdaContext,
        tmp_path: Path) -> None:
    """The protocol's answer always has an `id`: API Gateway's request id through the API, the
    record's line through the batch loop; the rest of the answer is the same bytes."""
    rows = [json.dumps({k: v for k, v in json.loads(row).items() if k != "id"})
            for row in ROWS[:2]]
    api = [json.loads(answer) for answer in
           api_answers(two_versions, None, monkeypatch, lambda_context, rows)]
    batch = [json.loads(answer) for answer in batch_answers(two_versions, None, tmp_path, rows)]
    sample = json.loads((EVENTS_DIR / "breast-cancer-mlp" / "infer.json").read_text())
    assert [answer.pop("id") for answer in api] == [sample["requestContext"]["requestId"]] * 2
    assert [answer.pop("id") for answer in batch] == ["line-1", "line-2"]
    assert api == batch
