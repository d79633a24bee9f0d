"""The model repository: every model version a function serves, with its state, and the
server's readiness, which is every version's.

The model repository extension is Triton's (`POST /v2/repository/index` answers
`[{"name", "version", "state", "reason"}]`, docs/protocol/extension_model_repository.md in
triton-inference-server/server). Two sources give the same index:

- a model function holds its own versions (`ServiceRepository`, `service_index`): each is
  READY or says why not;
- the server function holds none: it asks each version's own function
  (model_api.aws.invoked_repository, the AWS glue).

Both are a `Repository`; `repository_index` and `refuse_load` serve its routes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from model_api.errors import BadRequest, Loading, ModelAPIError

if TYPE_CHECKING:  # annotations only: the server function needs neither numpy nor onnxruntime
    from model_api.service import InferenceService

# Triton's model states; LOADING: a large model still being read from the model store.
READY, UNAVAILABLE, LOADING = "READY", "UNAVAILABLE", "LOADING"


@dataclass(frozen=True)
class IndexEntry:
    """One model version of the repository index: `state` READY, LOADING or UNAVAILABLE, and
    why not; while LOADING, the seconds its function asks a client to wait (Retry-After)."""

    name: str
    version: str
    state: str
    reason: str = ""
    retry_after: int | None = None

    def document(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "state": self.state,
                "reason": self.reason}


class Repository(Protocol):
    """What serves the repository index and the server's readiness."""

    def index(self) -> list[IndexEntry]:
        """Every version, READY or UNAVAILABLE with the reason."""
        ...

    def ready(self) -> dict[str, Any]:
        """`GET /v2/health/ready`: {"ready": True}, else NotReady (503) saying why."""
        ...


def service_index(service: InferenceService) -> list[IndexEntry]:
    """The versions one model function holds, each READY or UNAVAILABLE with its 503's reason."""
    if service.model_name is None:
        return []
    entries = []
    for version in service.versions:
        try:
            service.model(service.model_name, version)
        except Loading as error:
            entries.append(IndexEntry(service.model_name, version, LOADING, error.message,
                                      error.retry_after))
        except ModelAPIError as error:
            entries.append(IndexEntry(service.model_name, version, UNAVAILABLE, error.message))
        else:
            entries.append(IndexEntry(service.model_name, version, READY))
    return entries


class ServiceRepository:
    """A model function's own versions (no invocation: it holds them)."""

    def __init__(self, service: InferenceService) -> None:
        self.service = service

    def index(self) -> list[IndexEntry]:
        return service_index(self.service)

    def ready(self) -> dict[str, Any]:
        """Ready when every version loaded and the current one exists (else NotReady, 503)."""
        return self.service.ready()


def repository_index(repository: Repository, body: bytes) -> list[dict[str, str]]:
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
