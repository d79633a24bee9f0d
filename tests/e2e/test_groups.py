"""Models in groups (docs/architecture.md, "Hundreds of models"), through the local API over
real HTTP:

- the root API alone (`serve --root-api`, what the deployed root ApiUrl serves): every model
  route goes through the server function, which forwards it to the model's own function with
  the Lambda Invoke API (model_api.aws.router), and answers what the model's group API answers;
- 200 synthetic models registered (model_registry.synthetic): workers start on a model's first
  request, and the workers alive (so the memory) stay bounded by --max-live-workers however
  many of the 200 are called.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from model_api.routes import route

from local_api.background import server_pid, tree_rss_mb
from model_registry import registry, synthetic
from tests.conftest import BUILT_TEMPLATE, local_api_server
from tests.e2e.test_readiness import examples_request

SEEDS = [entry.name for entry in registry.load()]


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """The root API alone, and every API of the deployment on one port (make serve's)."""
    logs = tmp_path_factory.mktemp("groups")
    with local_api_server(logs / "root.log", extra=("--root-api",)) as (root, _), \
            local_api_server(logs / "all.log") as (direct, _):
        yield root, direct


@pytest.mark.parametrize("name", SEEDS)
def test_the_root_api_answers_every_model_route_as_its_group_api_does(
        both: tuple[httpx.Client, httpx.Client], name: str) -> None:
    root, direct = both
    body = examples_request(name)
    headers = {"Content-Type": "application/json"}
    for method, path in [("GET", f"/v2/models/{name}"), ("GET", f"/v2/models/{name}/ready"),
                         ("POST", f"/v2/models/{name}/infer"),
                         ("POST", f"/v2/models/{name}/versions/1/infer")]:
        content = body if method == "POST" else None
        through = root.request(method, path, content=content, headers=headers)
        own = direct.request(method, path, content=content, headers=headers)
        assert through.status_code == own.status_code == 200, (path, through.text)
        assert through.json() == own.json(), path


def test_the_root_api_refuses_an_unknown_model_and_bad_input_in_the_protocols_format(
        both: tuple[httpx.Client, httpx.Client]) -> None:
    root, direct = both
    unknown = root.post("/v2/models/no-such-model/infer", content=b"{}")
    assert unknown.status_code == 404
    assert "unknown model 'no-such-model'" in unknown.json()["error"]
    for client in (root, direct):  # the model's own 400, forwarded unchanged
        bad = client.post(f"/v2/models/{SEEDS[0]}/infer", content=b"{not json",
                          headers={"Content-Type": "application/json"})
        assert bad.status_code == 400 and set(bad.json()) == {"error"}
    index = root.post(route("RepositoryIndex").path).json()
    assert {entry["name"] for entry in index} == set(SEEDS)
    assert all(entry["state"] == "READY" for entry in index)


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[httpx.Client, int, Path]]:
    """The local API on a deployment of 200 synthetic models (built like `sam build` would,
    from the seed build's code and layers) with at most 8 live workers."""
    work = tmp_path_factory.mktemp("many")
    project = synthetic.project(work / "project", 200)
    built = synthetic.built_like(project, BUILT_TEMPLATE.parent, work)
    with local_api_server(work / "server.log", template=built,
                          extra=("--max-live-workers", "8")) as (client, port):
        yield client, port, work / "server.log"


def workers(port: int) -> int:
    """The worker processes (local_api/bootstrap.py, one per execution environment) of the
    local API serving `port`."""
    pid = server_pid(port)
    listed = subprocess.run(["ps", "-ww", "-o", "args=", "--ppid", str(pid)], capture_output=True,
                            text=True, check=False).stdout.splitlines()
    return sum("bootstrap.py" in line for line in listed)


def test_200_models_start_workers_only_when_called_and_stay_bounded(
        many: tuple[httpx.Client, int, Path]) -> None:
    client, port, log = many
    assert workers(port) == 1  # the server function only (it answered /v2/health/live)
    idle_mb = tree_rss_mb(server_pid(port))
    body = b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}'

    def infer(index: int) -> None:
        answer = client.post(f"/v2/models/{synthetic.name(index)}/infer", content=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [2.0, 3.0, 4.0]

    # Five models in use: five workers more, nothing for the 195 others
    for index in (0, 57, 101, 150, 199):
        infer(index)
    assert workers(port) == 1 + 5
    five_mb = tree_rss_mb(server_pid(port))
    # Twenty more: never more than the 8 live workers; the idle ones are stopped for room
    for index in range(20, 40):
        infer(index)
    assert workers(port) <= 8
    assert "the local API holds at most 8 workers" in log.read_text()
    twenty_mb = tree_rss_mb(server_pid(port))
    per_worker = (five_mb - idle_mb) / 5
    assert twenty_mb <= idle_mb + 8 * per_worker * 1.5, (idle_mb, five_mb, twenty_mb)
