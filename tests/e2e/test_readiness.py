"""Ready means ready (issue 10.4), on the local API over real HTTP: a model whose file failed its
sha256 check makes the server not ready, shows as UNAVAILABLE with the reason in the model
repository index, and its /ready and /infer agree at every moment; the other models serve."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from model_api import examples
from model_api.manifest import load_manifest

from model_registry import registry
from tests.conftest import BUILT_TEMPLATE, MODELS_DIR, local_api_server
from tests.security.test_model_integrity import flip_a_byte

TAMPERED = "breast-cancer-mlp"


def link_all_but(source: Path, target: Path, kept: str) -> None:
    """`target` holds `source`'s folders as links and its files as copies, except `kept`."""
    target.mkdir(exist_ok=True)
    for entry in source.iterdir():
        if entry.name == kept:
            continue
        if entry.is_dir():
            (target / entry.name).symlink_to(entry)
        else:
            shutil.copy(entry, target / entry.name)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    # Given the built stack with one model's file changed inside its layer (every other built
    # folder is linked, not copied)
    build = tmp_path_factory.mktemp("tampered-build")
    entry = next(e for e in registry.load() if e.name == TAMPERED)
    group, layer = f"ModelsGroup{entry.group}", f"{entry.camel}ModelLayer"
    link_all_but(BUILT_TEMPLATE.parent, build, group)
    link_all_but(BUILT_TEMPLATE.parent / group, build / group, layer)
    shutil.copytree(BUILT_TEMPLATE.parent / group / layer, build / group / layer)
    flip_a_byte(build / group / layer / "models" / TAMPERED / entry.current / "model.onnx")
    log = tmp_path_factory.mktemp("tampered-api") / "server.log"
    with local_api_server(log, template=build / "template.yaml") as (client, _):
        yield client


def test_a_model_failing_its_sha256_check_makes_the_server_not_ready(api: httpx.Client) -> None:
    import tritonclient.http as triton

    ready = api.get("/v2/health/ready")
    assert ready.status_code == 503
    assert f"model '{TAMPERED}'" in ready.json()["error"] and "sha256" in ready.json()["error"]
    # Readiness is per version: only the tampered one (the current) is unavailable
    tampered = (TAMPERED, next(e.current for e in registry.load() if e.name == TAMPERED))
    index = {(e["name"], e["version"]): e for e in api.post("/v2/repository/index").json()}
    assert set(index) == {(e.name, v) for e in registry.load() for v in e.versions}
    for key, entry in index.items():
        if key == tampered:
            assert entry["state"] == "UNAVAILABLE" and "sha256" in entry["reason"]
        else:
            assert entry["state"] == "READY" and entry["reason"] == ""
    assert tampered not in {(e["name"], e["version"]) for e in
                            api.post("/v2/repository/index", json={"ready": True}).json()}
    client = triton.InferenceServerClient(url=str(api.base_url).removeprefix("http://"))
    assert not client.is_server_ready()
    assert not client.is_model_ready(TAMPERED) and client.is_model_ready("digits-cnn")


def examples_request(name: str) -> bytes:
    current = next(e.current for e in registry.load() if e.name == name)
    version_dir = MODELS_DIR / name / current
    manifest = load_manifest(version_dir / "manifest.json")
    return examples.json_request(manifest, examples.load(version_dir, manifest))


@pytest.mark.parametrize("name", [e.name for e in registry.load()])
def test_a_models_ready_and_infer_agree_at_every_moment(api: httpx.Client, name: str) -> None:
    # Ready and infer asked together, many times: never one 200 while the other is 503
    body = examples_request(name)
    current = next(e.current for e in registry.load() if e.name == name)
    prefixes = [f"/v2/models/{name}", f"/v2/models/{name}/versions/{current}"]

    def both(prefix: str) -> tuple[int, int]:
        return (api.get(f"{prefix}/ready").status_code,
                api.post(f"{prefix}/infer", content=body,
                         headers={"Content-Type": "application/json"}).status_code)

    with ThreadPoolExecutor(2) as pool:  # two at a time: the versioned and unversioned routes
        answers = list(pool.map(both, prefixes * 3))
    expected = (503, 503) if name == TAMPERED else (200, 200)
    assert set(answers) == {expected}, answers
    if name == TAMPERED:
        error = api.post(f"/v2/models/{name}/infer", content=body).json()["error"]
        assert error == api.get(f"/v2/models/{name}/ready").json()["error"]
        assert json.loads(api.get(f"/v2/models/{name}/ready").text)["error"].endswith(
            "its model file failed the sha256 check")
