"""The one inference pipeline: the only place a request is decoded, run (or explained) and
encoded, for the API's functions and for the batch runner's JSON Lines and .npy inputs alike.

    decode ──▶ before_model hooks ──▶ predict | explain ──▶ encode ──▶ after_model hooks

Each stage is a method of `Pipeline`, so that a caller that runs many requests at once (the
batch runner's micro-batches, `predict_batched`) still goes through the same steps in the same
order; `handle` chains them for one request (the API). A `Pipeline` is parameterised by its
caller's `RequestLimits` (limits.API_REQUEST or limits.BATCH_RECORD) and its hooks.

The after_model hooks (`answered`) see an exchange once its answer is made: an exchange whose
answer fails to encode (NaN or infinity in a JSON output, an answer over the size limit: a
4xx to the client, an error record in a batch job) is not seen there, so that data capture
and the class counts hold only what was answered. A .npy batch input's answer is its arrays:
`predict_with` calls them at once.

Hook points, in the manner of KServe's preprocess / predict / postprocess and MLServer's
inference middlewares: a hook (a `Hook` subclass) has `before_model(exchange)`,
`after_model(exchange)` and `flush()` (the end of the caller's unit of work: an API request, a
batch chunk); it sees the decoded request and, after the model, its results, and never changes
them. A hook that raises is logged (its name and the error's type, never the
data) and skipped, and a hook sees read-only inputs and results: a hook cannot fail, or
change, an answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, cast

import msgspec
import numpy as np

from model_api.codec import (
    InferRequest,
    InferResult,
    RequestedOutput,
    decode_request,
    encode_response,
)
from model_api.errors import BadRequest
from model_api.explainers import with_outputs
from model_api.limits import RequestLimits
from model_api.manifest import Manifest
from model_api.model import LoadedModel

__all__ = ["Exchange", "Hook", "Pipeline", "RunMany"]

logger = logging.getLogger(__name__)

# What a batched run does with (position, request) pairs: yields each position with its
# results, or with the reason its run failed (batch.microbatch.MicroBatcher.run).
RunMany = Callable[[list[tuple[int, InferRequest]]],
                   Iterable[tuple[int, dict[str, np.ndarray] | str]]]


# one request's state, its arrays: compared by identity
class Exchange(msgspec.Struct, eq=False):
    """One request on its way through the pipeline.

    `manifest` is what the request is checked and answered against: the model's own, or with
    the explanation's outputs when `explain`. `results` maps output names to arrays (batch
    first, the manifest's dtypes) once the model ran; `parameters` are the answer's
    (an explanation's `method`, ...). `path` names the caller: "api" or "batch".
    """

    model: LoadedModel
    manifest: Manifest
    request: InferRequest
    explain: bool
    path: str
    results: Mapping[str, np.ndarray] = msgspec.field(default_factory=dict)
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)
    # (the request, its copy as hooks see it: read-only inputs), made at its first hook point
    _hooks_request: tuple[InferRequest, InferRequest] | None = None

    @property
    def rows(self) -> int:
        return self.request.rows


class Hook:
    """A per-request hook (see the module's docstring): subclass it and override the points
    it needs; `name` identifies it in logs. Hooks run in the order the caller lists them."""

    name = "hook"

    def before_model(self, exchange: Exchange) -> None:
        """Called once the request is decoded and checked, before the model runs."""

    def after_model(self, exchange: Exchange) -> None:
        """Called once `exchange.results` hold the model's (or explanation's) outputs and the
        answer to them is made (Pipeline.answered): never for an exchange answered with an
        error."""

    def after_model_many(self, exchanges: Sequence[Exchange]) -> None:
        """after_model for several exchanges that ran together (a batch job's micro-batches),
        in order: the same as calling after_model on each, which is what it does unless a
        hook overrides it with one pass over them all (class counts)."""
        for exchange in exchanges:
            self.after_model(exchange)

    def flush(self) -> None:
        """Called when the caller's unit of work ends (an API request; a batch job's chunk):
        emit or deliver what the hook gathered since the last flush."""


class Pipeline:
    """Decode, run and encode requests for one caller: its limits, its hooks, its path name."""

    def __init__(self, limits: RequestLimits, hooks: Sequence[Hook] = (),
                 path: str = "api") -> None:
        self.limits = limits
        self.hooks = tuple(hooks)
        self.path = path
        # Per hook point, the hooks that do something there (override Hook's no-op): a point
        # none of them uses costs no read-only view of the exchange.
        self._at = {point: tuple(hook for hook in self.hooks if _overrides(hook, point))
                    for point in ("before_model", "after_model", "after_model_many", "flush")}

    # ---- decode

    def decode(self, model: LoadedModel, body: bytes, headers: Mapping[str, str],
               explain: bool | None = False, request_id: str = "") -> Exchange:
        """The request in `body` checked against `model`'s manifest under the caller's limits.

        `explain`: True on /explain; False on /infer; None when the request's own
        `parameters.explain` decides (a batch record), which must then be true or false (400
        otherwise). `request_id`: the answer's `id` when the request has none (the protocol's
        answer always has one; KServe generates it): the caller's id of this request (API
        Gateway's request id, a batch record's line). Raises the codec's ModelAPIError (4xx)
        when the request does not fit.
        """
        chosen: list[Manifest] = [model.manifest]

        def choose(parameters: Mapping[str, Any]) -> Manifest:
            if explain or (explain is None and _explain_flag(parameters)):
                chosen[0] = with_outputs(model.manifest)
            return chosen[0]

        request = decode_request(body, headers, model.manifest, self.limits, choose)
        if request.id is None:
            request = InferRequest(request_id, request.inputs, request.outputs,
                                   request.parameters, request.rows)
        return Exchange(model, chosen[0], request, chosen[0] is not model.manifest, self.path)

    def from_arrays(self, model: LoadedModel, inputs: dict[str, np.ndarray]) -> Exchange:
        """An exchange of arrays already shaped and typed for the model (a .npy input's rows,
        checked against the signature by the caller): every output of the model, as arrays."""
        rows = next(iter(inputs.values())).shape[0] if inputs else 0
        outputs = tuple(RequestedOutput(spec.name, True) for spec in model.manifest.outputs)
        return Exchange(model, model.manifest, InferRequest(None, inputs, outputs, {}, rows),
                        False, self.path)

    # ---- run

    def predict(self, exchange: Exchange) -> Exchange:
        """Run the model (or explain) on one exchange after its before_model hooks (its
        after_model hooks follow its answer: `answered`). Raises what the model raises: the
        explainer's ModelAPIError (4xx), onnxruntime's own errors."""
        self._call("before_model", exchange)
        names = [output.name for output in exchange.request.outputs]
        if exchange.explain:
            exchange.results, exchange.parameters = exchange.model.explain(
                exchange.request.inputs, names, exchange.request.parameters,
                self.limits.explain_seconds)
        else:
            exchange.results = exchange.model.run(exchange.request.inputs, names)
        return exchange

    def predict_batched(self, items: Sequence[tuple[int, Exchange]], run_many: RunMany
                        ) -> Iterator[tuple[int, Exchange | str]]:
        """Predict many (position, exchange) pairs of plain inference through `run_many` (a
        micro-batcher: several requests per model run), each after its before_model hooks;
        yields each position with its exchange, or with the reason its run failed. The caller
        encodes them and passes those answered to `answered`, all at once."""
        exchanges = dict(items)
        if self._at["before_model"]:
            for _, exchange in items:
                self._call("before_model", exchange)
        outcomes: list[tuple[int, Exchange | str]] = []
        for position, outcome in run_many([(position, exchange.request)
                                           for position, exchange in items]):
            if isinstance(outcome, str):
                outcomes.append((position, outcome))
                continue
            exchange = exchanges[position]
            exchange.results = outcome
            outcomes.append((position, exchange))
        yield from outcomes

    def predict_with(self, exchange: Exchange,
                     run: Callable[[InferRequest], dict[str, np.ndarray]]) -> Exchange:
        """Predict one exchange through `run` (the .npy path's micro-batched run over a chunk's
        rows) between its hooks (its results are its answer: `answered` at once); raises what
        `run` raises."""
        self._call("before_model", exchange)
        exchange.results = run(exchange.request)
        self.answered([exchange])
        return exchange

    # ---- encode

    def encode(self, exchange: Exchange) -> InferResult:
        """The protocol's answer to the exchange, within the caller's limits (JSON, or binary
        tensors where the path carries them). Raises TooLarge (413) or BadRequest (400: NaN
        or infinity in a JSON output). The caller passes the exchange to `answered` once
        it has its answer."""
        return encode_response(exchange.manifest, exchange.request, exchange.results,
                               exchange.parameters, self.limits)

    def answered(self, exchanges: Sequence[Exchange]) -> None:
        """The after_model hooks of exchanges whose answers were made, in the order they ran:
        several at once (a batch chunk's micro-batches) as one pass of a hook that counts
        (after_model_many: class counts)."""
        if len(exchanges) == 1:
            self._call("after_model", exchanges[0])
        elif exchanges and self._at["after_model_many"]:
            self._call_many(list(exchanges))

    def handle(self, model: LoadedModel, body: bytes, headers: Mapping[str, str],
               explain: bool = False, request_id: str = "") -> InferResult:
        """decode, predict and encode one request, its after_model hooks once it is answered,
        then flush the hooks: what an API function does (`request_id`: see decode)."""
        try:
            exchange = self.predict(self.decode(model, body, headers, explain, request_id))
            answer = self.encode(exchange)
            self.answered([exchange])
            return answer
        finally:
            self.flush()

    def flush(self) -> None:
        """The hooks' `flush` point: the end of the caller's unit of work."""
        self._call("flush", None)

    # ---- hooks

    def _call(self, point: str, exchange: Exchange | None) -> None:
        hooks = self._at[point]
        if not hooks:
            return
        arguments = () if exchange is None else (_read_only(exchange),)
        for hook in hooks:
            try:
                getattr(hook, point)(*arguments)
            except Exception as error:  # a hook never fails an answer
                _failed(hook, point, error)

    def _call_many(self, exchanges: list[Exchange]) -> None:
        views = [_read_only(exchange) for exchange in exchanges]
        for hook in self._at["after_model_many"]:
            if _defines(hook, "after_model_many"):  # its own pass over them all
                try:
                    hook.after_model_many(views)
                except Exception as error:  # a hook never fails an answer
                    _failed(hook, "after_model", error)
                continue
            for view in views:  # one exchange's failure costs only its own call
                try:
                    hook.after_model(view)
                except Exception as error:
                    _failed(hook, "after_model", error)


def _defines(hook: Hook, point: str) -> bool:
    """Whether `hook` has a `point` method of its own, not Hook's (a hook that is not a Hook:
    whether it has one at all)."""
    if not isinstance(hook, Hook):
        return hasattr(hook, point)
    return getattr(type(hook), point) is not getattr(Hook, point)


def _overrides(hook: Hook, point: str) -> bool:
    """Whether `hook` does something at `point` (a hook that is not a Hook: always)."""
    if not isinstance(hook, Hook):
        return True
    if point == "after_model_many":  # Hook's own calls after_model on each
        return _defines(hook, point) or _defines(hook, "after_model")
    return _defines(hook, point)


def _failed(hook: Hook, point: str, error: Exception) -> None:
    logger.error("hook %s failed at %s (%s); the answer is unchanged",
                 getattr(hook, "name", type(hook).__name__), point, type(error).__name__)


def _read_only(exchange: Exchange) -> Exchange:
    """What a hook sees of `exchange`: a copy whose inputs and results are read-only mappings
    of read-only arrays, so that no hook can change what the model gets or the answer says.
    The request's read-only copy is made once per exchange (kept on it for its next hook
    point), and the exchange's copy is built directly, not by dataclasses.replace: this runs
    twice for every line of a JSON Lines batch job (docs/performance.md, "Batch")."""
    cached = exchange._hooks_request
    if cached is not None and cached[0] is exchange.request:
        request = cached[1]
    else:
        for array in exchange.request.inputs.values():
            array.setflags(write=False)
        inputs = cast(dict[str, np.ndarray], MappingProxyType(exchange.request.inputs))
        original = exchange.request
        request = InferRequest(original.id, inputs, original.outputs, original.parameters,
                               original.rows)
        exchange._hooks_request = (original, request)
    for array in exchange.results.values():
        array.setflags(write=False)
    return Exchange(exchange.model, exchange.manifest, request, exchange.explain, exchange.path,
                    MappingProxyType(exchange.results), exchange.parameters)


def _explain_flag(parameters: Mapping[str, Any]) -> bool:
    """A batch record's `parameters.explain`: whether it asks for explanations."""
    explain = parameters.get("explain", False)
    if not isinstance(explain, bool):
        raise BadRequest(f"parameter 'explain' must be true or false, got {explain!r:.40}")
    return explain
