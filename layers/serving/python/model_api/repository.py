"""The model repository: every model version the stack serves, with its state, and the server's
readiness, which is every version's.

The model repository extension is Triton's (`POST /v2/repository/index` answers
`[{"name", "version", "state", "reason"}]`, docs/protocol/extension_model_repository.md in
triton-inference-server/server). Two sources give the same index:

- a model function holds its own versions (`service_index`): each is READY or says why not;
- the server function holds none: it learns the deployment's models from the model catalog
  (model_api.catalog: each model's versions, and its function's name) and asks each version's
  own function through the Lambda Invoke API, with the event API
  Gateway would send for `GET /v2/models/{model}/versions/{version}/ready`. The model's answer
  is the version's state, so the index, the server's readiness, a model's `/ready` and its
  `/infer` all come from the one check the model function made when it loaded (sha256,
  session, signature). Invocations run in parallel (at most
  `limits.REPOSITORY_INVOKE_CONCURRENCY`), each within `limits.REPOSITORY_INVOKE_TIMEOUT_S`, all
  within `limits.REPOSITORY_INDEX_DEADLINE_S`, and the index is kept
  `limits.REPOSITORY_CACHE_S` seconds.

The local API runs the same code: it gives its functions a Lambda endpoint
(`AWS_ENDPOINT_URL_LAMBDA`, boto3's own setting) that invokes its local functions.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from model_api import limits
from model_api.catalog import Catalog
from model_api.errors import BadRequest, ModelAPIError, NotReady
from model_api.routes import route

if TYPE_CHECKING:  # annotations only: the server function needs neither numpy nor onnxruntime
    from model_api.service import InferenceService

READY, UNAVAILABLE = "READY", "UNAVAILABLE"
# The alias API Gateway invokes (AutoPublishAlias: live): the index shows what clients get.
MODEL_ALIAS = "live"

# (function name, event) -> the function's answer (a Lambda proxy response); raises on failure.
Invoke = Callable[[str, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class IndexEntry:
    """One model version of the repository index: `state` READY or UNAVAILABLE, and why not."""

    name: str
    version: str
    state: str
    reason: str = ""

    def document(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "state": self.state,
                "reason": self.reason}


@dataclass(frozen=True)
class ModelFunction:
    """A model of the stack: the Lambda function serving it and the versions it holds."""

    name: str
    function: str
    versions: tuple[str, ...]


def service_index(service: InferenceService) -> list[IndexEntry]:
    """The versions one model function holds, each READY or UNAVAILABLE with its 503's reason."""
    if service.model_name is None:
        return []
    entries = []
    for version in service.versions:
        try:
            service.model(service.model_name, version)
        except ModelAPIError as error:
            entries.append(IndexEntry(service.model_name, version, UNAVAILABLE, error.message))
        else:
            entries.append(IndexEntry(service.model_name, version, READY))
    return entries


def ready_event(model: str, version: str) -> dict[str, Any]:
    """The API Gateway REST proxy event of `GET /v2/models/{model}/versions/{version}/ready`,
    as the model function's resolver receives it from the API."""
    ready = route("VersionReady")
    resource = ready.for_model(model)
    path = ready.url(model=model, version=version)
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


def lambda_invoke(qualifier: str = MODEL_ALIAS,
                  timeout_s: float = limits.REPOSITORY_INVOKE_TIMEOUT_S) -> Invoke:
    """Invoke a function synchronously with boto3 (imported here: only the server function pays
    for botocore). The endpoint is boto3's own: Lambda's, or AWS_ENDPOINT_URL_LAMBDA where the
    local API sets it. One attempt, bounded by `timeout_s` (seconds). Raises RuntimeError when
    the function itself failed, botocore's errors when it could not be invoked."""
    import boto3
    from botocore.config import Config

    client = boto3.client("lambda", config=Config(
        connect_timeout=limits.REPOSITORY_INVOKE_TIMEOUT_S,
        read_timeout=timeout_s, retries={"max_attempts": 1},
        max_pool_connections=limits.REPOSITORY_INVOKE_CONCURRENCY))

    def invoke(function: str, event: dict[str, Any]) -> dict[str, Any]:
        answer = client.invoke(FunctionName=function, Qualifier=qualifier,
                               Payload=json.dumps(event).encode())
        payload = json.loads(answer["Payload"].read() or b"null")
        if answer.get("FunctionError"):
            error = payload if isinstance(payload, dict) else {}
            raise RuntimeError(f"{error.get('errorType', 'function error')}: "
                               f"{error.get('errorMessage', '')}")
        if not isinstance(payload, dict):
            raise RuntimeError("the function's answer is not a Lambda proxy response")
        return payload

    return invoke


class InvokedRepository:
    """The stack's models as the server function sees them: each version's state is what its
    own function answers to its ready route (kept REPOSITORY_CACHE_S seconds)."""

    def __init__(self, models: Sequence[ModelFunction], invoke: Invoke | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.models = list(models)
        self._invoke = invoke
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, list[IndexEntry]] | None = None

    def index(self) -> list[IndexEntry]:
        """Every version of every model, in registry order (models by name, versions as
        listed); a version whose function cannot be asked is UNAVAILABLE with the reason."""
        with self._lock:
            now = self._clock()
            if self._cached is not None and now - self._cached[0] < limits.REPOSITORY_CACHE_S:
                return self._cached[1]
            if self._invoke is None:
                self._invoke = lambda_invoke()
            asked = [(model, version) for model in self.models for version in model.versions]
            workers = max(1, min(limits.REPOSITORY_INVOKE_CONCURRENCY, len(asked)))
            pool = ThreadPoolExecutor(workers, thread_name_prefix="repository")
            futures = [pool.submit(self._ask, model, version) for model, version in asked]
            finished, _ = wait(futures, timeout=limits.REPOSITORY_INDEX_DEADLINE_S)
            pool.shutdown(wait=False, cancel_futures=True)  # the late ones answer no one
            late = (f"its function did not answer within {limits.REPOSITORY_INDEX_DEADLINE_S} s "
                    "(cold starts of many models at once): ask again")
            entries = [future.result() if future in finished else
                       IndexEntry(model.name, version, UNAVAILABLE, late)
                       for future, (model, version) in zip(futures, asked, strict=True)]
            self._cached = (now, entries)
            return entries

    def _ask(self, model: ModelFunction, version: str) -> IndexEntry:
        assert self._invoke is not None
        try:
            answer = self._invoke(model.function, ready_event(model.name, version))
            status = int(answer.get("statusCode", 0))
            body = json.loads(answer.get("body") or "{}")
        except Exception as exc:  # any failure to ask is this version's state, never a 500
            return IndexEntry(model.name, version, UNAVAILABLE,
                              f"its function {model.function} could not be asked: {exc}")
        if status == 200 and isinstance(body, dict) and body.get("ready") is True:
            return IndexEntry(model.name, version, READY)
        reason = body.get("error") if isinstance(body, dict) else None
        return IndexEntry(model.name, version, UNAVAILABLE,
                          str(reason or f"its ready route answered {status}"))

    def ready(self) -> dict[str, Any]:
        """`GET /v2/health/ready`: ready when every version of every model is; else NotReady
        (503) naming each version that is not and why."""
        unavailable = [entry for entry in self.index() if entry.state != READY]
        if unavailable:
            raise NotReady("server not ready: " + "; ".join(
                f"model {e.name!r} version {e.version!r}: {e.reason}" for e in unavailable))
        return {"ready": True}


class ServiceRepository:
    """A model function's own versions (no invocation: it holds them)."""

    def __init__(self, service: InferenceService) -> None:
        self.service = service

    def index(self) -> list[IndexEntry]:
        return service_index(self.service)

    def ready(self) -> dict[str, Any]:
        """Ready when every version loaded and the current one exists (else NotReady, 503)."""
        return self.service.ready()


Repository = InvokedRepository | ServiceRepository


def for_catalog(service: InferenceService, catalog: Catalog | None) -> Repository:
    """The server function's repository when it has a model catalog (its versions asked of each
    model's function; models by name), else the function's own."""
    if catalog is not None:
        return InvokedRepository([
            ModelFunction(m.name, catalog.function_name(m.name), m.versions)
            for m in sorted(catalog.models, key=lambda m: m.name)])
    return ServiceRepository(service)


def index_answer(repository: Repository, body: bytes) -> list[dict[str, str]]:
    """`POST /v2/repository/index`: the body is empty or `{"ready": bool}` (Triton: true lists
    only the versions ready for inferencing); BadRequest for anything else."""
    ready_only = False
    if body.strip():
        try:
            request = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise BadRequest(f"repository index request is not JSON: {exc}") from exc
        if not isinstance(request, dict) or set(request) - {"ready"} or not isinstance(
                request.get("ready", False), bool):
            raise BadRequest('repository index request must be {} or {"ready": true|false}')
        ready_only = request.get("ready", False)
    return [entry.document() for entry in repository.index()
            if entry.state == READY or not ready_only]


def refuse_load(model: str) -> dict[str, Any]:
    """`POST /v2/repository/models/{model}/load` and `/unload`: always a 400."""
    raise BadRequest(
        f"models are deployed with the stack, not loaded or unloaded at run time (model "
        f"{model!r}): add or remove a version with `make add-model` / `make remove-model` and "
        "deploy; POST /v2/repository/index lists what is served")
