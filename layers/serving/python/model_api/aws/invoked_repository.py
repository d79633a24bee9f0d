"""The server function's model repository: it holds no model, so each model version's state
is what the version's own function answers to its ready route.

It learns the deployment's models from the model catalog (model_api.catalog: each model's
versions, and its function's name) and asks each version's own function through the Lambda
Invoke API (model_api.aws.invoke), with the event API Gateway would send for
`GET /v2/models/{model}/versions/{version}/ready`. The model's answer is the version's state,
so the index, the server's readiness, a model's `/ready` and its `/infer` all come from the
one check the model function made when it loaded (sha256, session, signature). Invocations run
in parallel (at most `limits.REPOSITORY_INVOKE_CONCURRENCY`), each within
`limits.REPOSITORY_INVOKE_TIMEOUT_S`, all within `limits.REPOSITORY_INDEX_DEADLINE_S`, and the
index is kept `limits.REPOSITORY_CACHE_S` seconds (a version still LOADING is asked again at
every call, so a large model shows ready the moment it is). The index's format and a model
function's own repository are the core's (model_api.repository).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from model_api import limits
from model_api.aws.dependencies import store_problems
from model_api.aws.invoke import Invoke, lambda_invoke
from model_api.catalog import Catalog
from model_api.errors import Loading, NotReady
from model_api.repository import (
    LOADING,
    READY,
    UNAVAILABLE,
    IndexEntry,
)
from model_api.routes import route


@dataclass(frozen=True)
class ModelFunction:
    """A model of the stack: the Lambda function serving it and the versions it holds."""

    name: str
    function: str
    versions: tuple[str, ...]


def ready_answer(answer: Mapping[str, Any]) -> tuple[int, str, str | None]:
    """What a model function's answer to ready_event says: its status, the version's state
    (READY; LOADING for a 503 with Retry-After, a large model still loading,
    model_api.errors.Loading; else UNAVAILABLE) and the reason it gives when not ready.
    ValueError when its body is not JSON."""
    status = int(answer.get("statusCode", 0))
    body = json.loads(answer.get("body") or "{}")
    if status == 200 and isinstance(body, dict) and body.get("ready") is True:
        return status, READY, None
    reason = body.get("error") if isinstance(body, dict) else None
    loading = status == 503 and header(answer, "retry-after") is not None
    return status, LOADING if loading else UNAVAILABLE, str(
        reason or f"its ready route answered {status}")


def header(answer: Mapping[str, Any], name: str) -> str | None:
    """The first value of header `name` (lower case; matched in any case) of a function's proxy
    answer, from its `headers` or `multiValueHeaders` ("" for a name with no values), or None
    when it has no such header."""
    for key, value in (answer.get("headers") or {}).items():
        if str(key).lower() == name:
            return str(value)
    for key, values in (answer.get("multiValueHeaders") or {}).items():
        if str(key).lower() == name:
            return str(values[0]) if values else ""
    return None


def retry_after_of(answer: Mapping[str, Any]) -> int | None:
    """The whole seconds of a function's answer's Retry-After header, or None (no such header,
    or not a number of seconds)."""
    value = header(answer, "retry-after")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def ready_event(model: str, version: str) -> dict[str, Any]:
    """The API Gateway REST proxy event of `GET /v2/models/{model}/versions/{version}/ready`,
    as the model function's resolver receives it from the API."""
    ready = route("VersionReady")
    resource = ready.for_model(model)
    path = ready.url(model=model, version=version)
    import uuid  # here, as below: what only the server function does is not a model's cold start

    request_id = str(uuid.uuid4())
    return {
        "resource": resource, "path": path, "httpMethod": "GET",
        "headers": {"Accept": "application/json"},
        "multiValueHeaders": {"Accept": ["application/json"]},
        "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": {"version": version}, "stageVariables": None,
        "requestContext": {"resourcePath": resource, "httpMethod": "GET", "path": path,
                           "requestId": request_id, "stage": "internal",
                           "identity": {"sourceIp": "127.0.0.1"}},
        "body": None, "isBase64Encoded": False,
    }


class InvokedRepository:
    """The stack's models as the server function sees them: each version's state is what its
    own function answers to its ready route (kept REPOSITORY_CACHE_S seconds, a LOADING one
    asked again at every call: index)."""

    def __init__(self, models: Sequence[ModelFunction], invoke: Invoke | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 dependencies: Callable[[], list[str]] | None = None) -> None:
        self.models = list(models)
        self._invoke = invoke
        # What is wrong with the stores other routes need (model_api.aws.dependencies).
        self._dependencies = dependencies
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, list[IndexEntry]] | None = None

    def index(self) -> list[IndexEntry]:
        """Every version of every model, in registry order (models by name, versions as
        listed); a version whose function cannot be asked is UNAVAILABLE with the reason.
        Kept REPOSITORY_CACHE_S seconds, except a version still LOADING (a large model's cold
        start): that one is asked again at every call, so that it shows READY as soon as its
        function says so (one invocation per loading version and call)."""
        with self._lock:
            now = self._clock()
            if self._cached is not None and now - self._cached[0] < limits.REPOSITORY_CACHE_S:
                entries = list(self._cached[1])
                loading = [at for at, entry in enumerate(entries) if entry.state == LOADING]
                if loading:
                    by_name = {model.name: model for model in self.models}
                    again = self._ask_all([(by_name[entries[at].name], entries[at].version)
                                           for at in loading])
                    for at, entry in zip(loading, again, strict=True):
                        entries[at] = entry
                    self._cached = (self._cached[0], entries)
                return entries
            entries = self._ask_all([(model, version) for model in self.models
                                     for version in model.versions])
            self._cached = (now, entries)
            return entries

    def _ask_all(self, asked: list[tuple[ModelFunction, str]]) -> list[IndexEntry]:
        """Each (model, version)'s entry, asked in parallel (at most
        REPOSITORY_INVOKE_CONCURRENCY at once) within REPOSITORY_INDEX_DEADLINE_S; one not
        answered by then is UNAVAILABLE, saying so."""
        if self._invoke is None:
            self._invoke = lambda_invoke()
        from concurrent.futures import ThreadPoolExecutor, wait

        workers = max(1, min(limits.REPOSITORY_INVOKE_CONCURRENCY, len(asked)))
        pool = ThreadPoolExecutor(workers, thread_name_prefix="repository")
        futures = [pool.submit(self._ask, model, version) for model, version in asked]
        finished, _ = wait(futures, timeout=limits.REPOSITORY_INDEX_DEADLINE_S)
        pool.shutdown(wait=False, cancel_futures=True)  # the late ones answer no one
        late = (f"its function did not answer within {limits.REPOSITORY_INDEX_DEADLINE_S} s "
                "(cold starts of many models at once): ask again")
        return [future.result() if future in finished else
                IndexEntry(model.name, version, UNAVAILABLE, late)
                for future, (model, version) in zip(futures, asked, strict=True)]

    def _ask(self, model: ModelFunction, version: str) -> IndexEntry:
        assert self._invoke is not None
        try:
            answer = self._invoke(model.function, ready_event(model.name, version))
            _, state, reason = ready_answer(answer)
        except Exception as exc:  # any failure to ask is this version's state, never a 500
            return IndexEntry(model.name, version, UNAVAILABLE,
                              f"its function {model.function} could not be asked: {exc}")
        return IndexEntry(model.name, version, state, reason or "",
                          retry_after_of(answer) if state == LOADING else None)

    def ready(self) -> dict[str, Any]:
        """`GET /v2/health/ready`: ready when every version of every model is, and every store
        the other routes need answers; else NotReady (503) naming each that is not and why."""
        unavailable = [entry for entry in self.index() if entry.state != READY]
        # A model function's reason names its model and version already (model_api.service).
        problems = [e.reason if e.reason.startswith(f"model {e.name!r} version {e.version!r}")
                    else f"model {e.name!r} version {e.version!r}: {e.reason}"
                    for e in unavailable]
        if self._dependencies is not None:
            problems += self._dependencies()
        if problems and len(problems) == len(unavailable) and all(
                e.state == LOADING for e in unavailable):
            # Only large models still loading: a cold start, not a fault (not counted in
            # ServerErrors); ready again when the slowest says it will be.
            raise Loading("server not ready yet: " + "; ".join(problems),
                          max(e.retry_after or limits.LOADING_RETRY_AFTER_S
                              for e in unavailable))
        if problems:
            raise NotReady("server not ready: " + "; ".join(problems))
        return {"ready": True}


def for_catalog(catalog: Catalog) -> InvokedRepository:
    """The server function's repository: its catalog's versions, each asked of its model's
    function; models by name; the jobs' stores asked where named."""
    return InvokedRepository([
        ModelFunction(m.name, catalog.function_name(m.name), m.versions)
        for m in sorted(catalog.models, key=lambda m: m.name)],
        dependencies=lambda: store_problems(os.environ))
