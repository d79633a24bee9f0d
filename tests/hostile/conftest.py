"""One local API (`python -m local_api serve` on the built template) shared by the hostile
request tests and the fuzzer, called over real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import local_api_server


@pytest.fixture(scope="session")
def local_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A client of a local API serving every function of the built template; after the session
    its log must hold no traceback (a hostile request may be refused, never crash a worker)."""
    log = tmp_path_factory.mktemp("hostile-local-api") / "server.log"
    with local_api_server(log) as (client, _):
        yield client


def assert_error_answer(response: httpx.Response, status: int, case: Any = "") -> None:
    """The protocol's error: the expected 4xx, and a body of exactly {"error": <non-empty str>}."""
    assert response.status_code == status, f"{case}: {response.status_code} {response.text[:500]}"
    body = response.json()
    assert set(body) == {"error"}, f"{case}: {body}"
    assert isinstance(body["error"], str) and body["error"].strip(), f"{case}: {body}"
