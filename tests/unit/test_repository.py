"""model_api.repository and model_api.aws.invoked_repository: the index and the server's
readiness, from each model function's own answer to its ready route. Here the "Lambda invoke"
calls the real resolver of a model function in-process with the event the server sends; the
local API tests do it over HTTP."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from model_api import limits
from model_api.aws.invoked_repository import InvokedRepository, ModelFunction, for_catalog
from model_api.aws.lambda_adapter import create_app
from model_api.catalog import Catalog, CatalogModel
from model_api.errors import ModelAPIError
from model_api.repository import (
    LOADING,
    READY,
    UNAVAILABLE,
    IndexEntry,
    ServiceRepository,
    repository_index,
)
from model_api.service import InferenceService

from tests.conftest import LambdaContext
from tests.unit.test_lambda_adapter import event
from tests.unit.tiny_models import add_version

REQUEST = json.dumps({"inputs": [
    {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]},
    {"name": "b", "shape": [1, 2], "datatype": "FP32", "data": [3, 4]}]}).encode()


def model_function(models: Path, name: str, current: str) -> InferenceService:
    return InferenceService.from_environment(
        {"MODELS_DIR": str(models), "MODEL_NAME": name, "MODEL_VERSION": current})


@pytest.fixture
def stack(tmp_path: Path) -> dict[str, InferenceService]:
    """Two model functions: `add` (versions 1 and 2, 2's file tampered) and `plus` (1)."""
    add_version(tmp_path / "add" / "1")
    (add_version(tmp_path / "add" / "2") / "model.onnx").write_bytes(b"tampered")
    add_version(tmp_path / "plus" / "1")
    return {"AddFunction": model_function(tmp_path, "add", "1"),
            "PlusFunction": model_function(tmp_path, "plus", "1")}


def invoker(functions: dict[str, InferenceService], calls: list[str] | None = None) -> Any:
    apps = {name: create_app(service) for name, service in functions.items()}

    def invoke(function: str, event: dict[str, Any]) -> dict[str, Any]:
        if calls is not None:
            calls.append(function)
        answer: dict[str, Any] = apps[function].resolve(event, LambdaContext())
        return answer

    return invoke


MODELS = [ModelFunction("add", "AddFunction", ("1", "2")),
          ModelFunction("plus", "PlusFunction", ("1",))]


def test_the_index_is_each_versions_own_answer_and_readiness_needs_every_one(
        stack: dict[str, InferenceService]) -> None:
    repository = InvokedRepository(MODELS, invoker(stack))
    sha = "model 'add' version '2' is not ready: its model file failed the sha256 check"
    assert repository.index() == [IndexEntry("add", "1", READY),
                                  IndexEntry("add", "2", UNAVAILABLE, sha),
                                  IndexEntry("plus", "1", READY)]
    with pytest.raises(ModelAPIError) as caught:
        repository.ready()
    assert caught.value.status == 503 and sha in caught.value.message
    # The model's own /ready and its /infer say the same as the index, for each version
    add = create_app(stack["AddFunction"])
    for version, entry in (("1", READY), ("2", UNAVAILABLE)):
        ready = add.resolve(event("GET", f"/v2/models/add/versions/{version}/ready"),
                            LambdaContext())
        infer = add.resolve(event("POST", f"/v2/models/add/versions/{version}/infer", REQUEST),
                            LambdaContext())
        assert (ready["statusCode"] == 200) == (infer["statusCode"] == 200) == (entry == READY)
    # Through the server's routes: the index (Triton's shape), {"ready": true} filters
    server = create_app(InferenceService(), repository)
    answer = server.resolve(event("POST", "/v2/repository/index"), LambdaContext())
    assert json.loads(answer["body"])[1] == {"name": "add", "version": "2",
                                             "state": UNAVAILABLE, "reason": sha}
    ready_only = server.resolve(event("POST", "/v2/repository/index", b'{"ready": true}'),
                                LambdaContext())
    assert [e["name"] + e["version"] for e in json.loads(ready_only["body"])] == ["add1", "plus1"]
    health = server.resolve(event("GET", "/v2/health/ready"), LambdaContext())
    assert health["statusCode"] == 503 and sha in json.loads(health["body"])["error"]


def test_every_version_ready_makes_the_server_ready(tmp_path: Path) -> None:
    add_version(tmp_path / "add" / "1")
    repository = InvokedRepository([ModelFunction("add", "F", ("1",))],
                                   invoker({"F": model_function(tmp_path, "add", "1")}))
    assert repository.ready() == {"ready": True}


def test_a_function_that_cannot_be_asked_is_unavailable_with_the_reason() -> None:
    def failing(function: str, event: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("Sandbox.Timedout: init timed out")

    (entry,) = InvokedRepository([ModelFunction("m", "MFunction", ("3",))], failing).index()
    assert entry.state == UNAVAILABLE
    assert "MFunction" in entry.reason and "timed out" in entry.reason


def test_the_index_is_kept_for_its_cache_time_and_asked_in_parallel(
        stack: dict[str, InferenceService]) -> None:
    now = [100.0]
    calls: list[str] = []
    repository = InvokedRepository(MODELS, invoker(stack, calls), clock=lambda: now[0])
    repository.index()
    repository.index()
    assert len(calls) == 3
    now[0] += limits.REPOSITORY_CACHE_S
    repository.index()
    assert len(calls) == 6
    # Parallel: every invocation of one round is in flight together (up to the bound)
    inside, most = [0], [0]
    lock = threading.Lock()

    def slow(function: str, event: dict[str, Any]) -> dict[str, Any]:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.05)
        with lock:
            inside[0] -= 1
        return {"statusCode": 200, "body": '{"ready": true}'}

    many = [ModelFunction(f"m{i}", f"F{i}", ("1",))
            for i in range(2 * limits.REPOSITORY_INVOKE_CONCURRENCY)]
    assert all(e.state == READY for e in InvokedRepository(many, slow).index())
    assert most[0] == limits.REPOSITORY_INVOKE_CONCURRENCY


def test_the_index_of_hundreds_of_models_answers_within_its_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given 500 models, three of which are cold (their answer takes longer than the deadline)
    monkeypatch.setattr(limits, "REPOSITORY_INDEX_DEADLINE_S", 0.5)
    cold = {"F7", "F250", "F499"}

    def answer(function: str, event: dict[str, Any]) -> dict[str, Any]:
        time.sleep(2 if function in cold else 0.001)
        return {"statusCode": 200, "body": '{"ready": true}'}

    many = [ModelFunction(f"m{i:03d}", f"F{i}", ("1",)) for i in range(500)]
    started = time.monotonic()
    index = InvokedRepository(many, answer).index()
    # Then it answers by the deadline: every warm one READY, the cold ones listed with why
    assert time.monotonic() - started < 1.5
    assert [e.name for e in index] == [m.name for m in many]
    late = [e for e in index if e.state != READY]
    assert {e.name for e in late} == {"m007", "m250", "m499"}
    assert all("did not answer within 0.5 s" in e.reason for e in late)


def test_a_model_functions_own_index_and_the_refusals(tmp_path: Path) -> None:
    add_version(tmp_path / "add" / "1")
    own = ServiceRepository(model_function(tmp_path, "add", "1"))
    assert repository_index(own, b"") == [{"name": "add", "version": "1", "state": READY,
                                       "reason": ""}]
    for body in (b"[", b"[]", b'{"ready": 1}', b'{"other": true}'):
        with pytest.raises(ModelAPIError) as caught:
            repository_index(own, body)
        assert caught.value.status == 400
    server = create_app(InferenceService(), own)
    for action in ("load", "unload"):
        answer = server.resolve(event("POST", f"/v2/repository/models/add/{action}"),
                                LambdaContext())
        assert answer["statusCode"] == 400
        assert "deployed with the stack" in json.loads(answer["body"])["error"]


def test_the_server_asks_the_functions_the_catalog_names() -> None:
    catalog = Catalog((CatalogModel("a", (), "1", 0), CatalogModel("b", ("1", "2"), "2", 1)),
                      "model-0123abcd-")
    repository = for_catalog(catalog)
    assert isinstance(repository, InvokedRepository)
    assert repository.models == [ModelFunction("a", "model-0123abcd-a", ()),
                                 ModelFunction("b", "model-0123abcd-b", ("1", "2"))]


def test_a_loading_version_is_asked_again_within_the_cache_time_and_shows_ready_at_once(
        ) -> None:
    """A large model's cold start: its READY answer shows at the next call, not after the
    index's cache time; the versions already READY are not asked again meanwhile."""
    now, calls = [100.0], []
    loaded = threading.Event()

    def invoke(function: str, event: dict[str, Any]) -> dict[str, Any]:
        calls.append(function)
        if function == "BigFunction" and not loaded.is_set():
            return {"statusCode": 503, "headers": {"Retry-After": "30"},
                    "body": json.dumps({"error": "model 'big' version '1' is loading: 10% "
                                                 "of 300 MB read from the model store"})}
        return {"statusCode": 200, "body": '{"ready": true}'}

    repository = InvokedRepository([ModelFunction("big", "BigFunction", ("1",)),
                                    ModelFunction("small", "SmallFunction", ("1",))], invoke,
                                   clock=lambda: now[0])
    assert [e.state for e in repository.index()] == [LOADING, READY]
    now[0] += 1
    assert [e.state for e in repository.index()] == [LOADING, READY]
    loaded.set()
    now[0] += 1
    assert [e.state for e in repository.index()] == [READY, READY]
    assert repository.ready() == {"ready": True}
    # the first round asks both (in parallel: in either order), the next two the loading one
    assert sorted(calls[:2]) == ["BigFunction", "SmallFunction"]
    assert calls[2:] == ["BigFunction", "BigFunction"]
    # ready now for the rest of the cache time: asked no more until it runs out
    repository.index()
    assert len(calls) == 4
    now[0] += limits.REPOSITORY_CACHE_S
    repository.index()
    assert len(calls) == 6


def test_a_server_waiting_only_on_large_models_loading_says_when_to_ask_again() -> None:
    loading = "model 'm' version '1' is loading: 10% of 300 MB read from the model store"

    def answer(function: str, event: dict[str, Any]) -> dict[str, Any]:
        seconds = {"MFunction": "3", "NFunction": "38"}[function]
        return {"statusCode": 503, "headers": {"Retry-After": seconds},
                "body": json.dumps({"error": loading.replace("'m'", f"'{function[0].lower()}'")})}

    with pytest.raises(ModelAPIError) as caught:
        InvokedRepository([ModelFunction("m", "MFunction", ("1",))], answer).ready()
    assert caught.value.status == 503
    assert caught.value.headers == {"Retry-After": "3"}  # the model's own estimate
    assert caught.value.message == f"server not ready yet: {loading}"  # said once
    # Two loading: ask again when the slower says it will be ready
    with pytest.raises(ModelAPIError) as caught:
        InvokedRepository([ModelFunction("m", "MFunction", ("1",)),
                           ModelFunction("n", "NFunction", ("1",))], answer).ready()
    assert caught.value.headers == {"Retry-After": "38"}
