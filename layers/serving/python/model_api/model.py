"""One exported model version, checked and loaded into an onnxruntime session.

The model file is hashed before onnxruntime ever parses it, and the session is created from
the very bytes that were hashed, so a file swapped or corrupted on disk is never run. The
session's signature is then compared with the manifest, which is what requests are checked
against: a mismatch would otherwise surface as an obscure error on the first request.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from model_api.datatypes import ORT_TYPES
from model_api.errors import BadRequest, TooLarge
from model_api.explainers import (
    Explainer,
    ExplanationError,
    load_explainer,
    request_options,
)
from model_api.integrity import IntegrityError, read_verified
from model_api.manifest import (
    MANIFEST_FILE,
    STORE_FIELD,
    Manifest,
    ManifestError,
    TensorSpec,
    load_manifest,
)

if TYPE_CHECKING:  # model_api.store is imported by a stored version's load alone (_read_stored)
    from model_api.store import Progress, RangeReader, StoredObject

logger = logging.getLogger(__name__)

CPU = ("CPUExecutionProvider",)
# Threads onnxruntime uses inside one operator; unset means one per vCPU Lambda's memory size
# pays for (one per CPU outside Lambda).
THREADS_VARIABLE = "MODEL_API_INTRA_OP_THREADS"
LAMBDA_MEMORY_VARIABLE = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
MB_PER_VCPU = 1769  # Lambda: "at 1,769 MB, a function has the equivalent of one vCPU"
# The first chunk of an explanation's timed, growing chunks of model rows (LoadedModel.scores).
PROBE_ROWS = 16
# How a version's weights' file (the model store's form, model_api.store) reaches onnxruntime:
# "in-place" (the default: its tensors where they were read, no copy, pre-packing off) or
# "copy" (onnxruntime copies them and pre-packs its MatMul/Gemm weights: twice the weights'
# size at the peak, faster on batches of many rows). docs/performance.md, "Large models".
WEIGHTS_VARIABLE = "MODEL_API_WEIGHTS"
IN_PLACE, COPY = "in-place", "copy"


class ModelLoadError(Exception):
    """The version folder cannot be served; the message names the file and what is wrong."""


class ModelIntegrityError(ModelLoadError):
    """The model file is not the one its manifest describes (sha256 mismatch)."""


def session_options(spinning: bool | None = None, threads: int | None = None
                    ) -> ort.SessionOptions:
    """Session settings for a short-lived, one-request-at-a-time Lambda container.

    Graph optimisations stay at their highest level (the CNN runs 2.5x faster with them, and
    they cost under 3 ms of cold start). On Lambda, threads do not spin while they wait for
    work: Lambda meters CPU time by memory size, and os.cpu_count() says 2 even where the
    function gets a fraction of one vCPU, so a spinning pool burns the quota its own other
    thread needs (docs/performance.md: 2.2x slower at 1,024 rows on one core). `spinning`
    False turns spinning off anywhere (the batch runner, whose reader and writer threads need
    the cores between model runs); None: off on Lambda only. `threads`: onnxruntime's intra-op
    threads (None: intra_op_threads(); the batch runner's .npy jobs take 1 and run several
    micro-batches at once instead: batch.microbatch).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or intra_op_threads()
    # One request runs at a time in a Lambda container: no use for parallel graph branches.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: warnings would land in every cold start's log
    if spinning is False or (spinning is None and lambda_memory_mb() is not None):
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def lambda_memory_mb() -> int | None:
    """The function's memory size when running on Lambda (its runtime sets the variable)."""
    memory = os.environ.get(LAMBDA_MEMORY_VARIABLE, "")
    return int(memory) if memory.isdigit() else None


def intra_op_threads() -> int:
    """$MODEL_API_INTRA_OP_THREADS when it is a positive integer, else the vCPUs Lambda's
    memory size pays for (memory / 1,769 MB, rounded, at least 1, at most the CPU count),
    else (outside Lambda) the CPU count."""
    cpus = os.cpu_count() or 1
    default = cpus
    memory = lambda_memory_mb()
    if memory is not None:
        default = max(1, min(cpus, round(memory / MB_PER_VCPU)))
    text = os.environ.get(THREADS_VARIABLE)
    if text is None:
        return default
    if text.strip().isdigit() and int(text) > 0:
        return int(text)
    logger.warning("%s=%r is not a positive integer; using %d threads",
                   THREADS_VARIABLE, text, default)
    return default


class ModelRunError(BadRequest):
    """400: the inputs fit the model's signature, but the model's graph refused what they hold
    when it ran (an index beyond an embedding's rows, two inputs whose shared axis differs)."""


# What onnxruntime raises when a kernel refuses its inputs at run time: INVALID_ARGUMENT,
# FAIL (a failed check of a kernel's, such as a broadcast of mismatched axes) and
# RUNTIME_EXCEPTION (a Reshape to a size the input does not have).
RUN_INPUT_ERRORS = (ort_errors.InvalidArgument, ort_errors.Fail, ort_errors.RuntimeException)
# A run that failed for want of memory is the machine's fault, never the request's.
MEMORY_ERRORS = ("out of memory", "failed to allocate", "bad_alloc", "cudaerrormemoryallocation")
_SOURCE_CHECK = re.compile(r"^/\S+:\d+ .*? was false\. ")  # onnxruntime's own source line


def is_memory_error(error: BaseException) -> bool:
    """Whether `error` (onnxruntime's) says a run ran out of memory, on the CPU or the GPU."""
    return any(marker in str(error).lower() for marker in MEMORY_ERRORS)


def run_error(error: Exception) -> ModelRunError | None:
    """The 400 for a model run that onnxruntime refused (one of RUN_INPUT_ERRORS), or None
    for one that ran out of memory. A version is served only once its examples ran
    (model_registry's import checks), so a kernel that refuses a request's inputs refuses
    what they hold; its reason names the operator and what was wrong, without onnxruntime's
    source file and check. (In the logs onnxruntime's own line says it whole.)"""
    if is_memory_error(error):
        return None
    text = str(error)
    node = re.search(r"while running (\w+) node", text)
    reason = text.split("Status Message: ", 1)[-1]
    reason = _SOURCE_CHECK.sub("", reason).strip()
    where = f" (its {node[1]} operator)" if node else ""
    return ModelRunError(f"the model could not run on these inputs{where}: {reason[:500]}")


class LoadedModel(msgspec.Struct, frozen=True, eq=False, repr_omit_defaults=True):
    """A version whose file matched its sha256 and whose session matches its manifest."""

    manifest: Manifest
    session: ort.InferenceSession
    # How /explain explains it (model_api/explainers/), from the manifest; checked at load.
    explainer: Explainer
    # The buffers onnxruntime runs on in place (a stored version's weights): kept as long as
    # the session is (left out of the repr when empty).
    pinned: tuple[Any, ...] = ()

    @classmethod
    def load(cls, version_dir: Path, providers: Sequence[str] | None = None,
             store: RangeReader | None = None, progress: Progress | None = None,
             spinning: bool | None = None, weights_mode: str | None = None,
             threads: int | None = None) -> LoadedModel:
        """Check and load `version_dir`; ModelLoadError (or ModelIntegrityError) says why not.

        A version whose manifest names a stored object (`store`: the model is too large for a
        layer, model_api.store) is read from `store` when one is given (a model function, the
        batch runner: sha256-checked on the stream, `progress` counting the bytes), else from
        its folder like any other. `spinning`: whether onnxruntime's threads spin between runs,
        `threads`: how many intra-op threads it runs on (session_options). `weights_mode`: how
        a stored version's weights reach onnxruntime, IN_PLACE or COPY (session_on_weights;
        None: $MODEL_API_WEIGHTS, else in place)."""
        try:
            manifest = load_manifest(version_dir / MANIFEST_FILE)
        except (ManifestError, ValueError) as exc:
            raise ModelLoadError(str(exc)) from exc
        model_path = version_dir / manifest.model_file
        weights: np.ndarray | None = None
        data: StoredObject | None = None
        try:
            if manifest.extra.get(STORE_FIELD) is None:  # the common case: no model_api.store
                model_bytes = read_verified(model_path, manifest.sha256)
            else:
                model_bytes, weights, data = _read_stored(version_dir, manifest, store, progress)
        except OSError as exc:
            raise ModelLoadError(f"{model_path}: cannot read model file: {exc}") from exc
        except IntegrityError as exc:
            raise ModelIntegrityError(
                f"{exc.path}: sha256 is {exc.actual} but {MANIFEST_FILE} says "
                f"{exc.expected}; the file is not the exported model, so it is not served"
            ) from None
        pinned: tuple[Any, ...] = ()
        try:
            if data is not None and weights is not None:
                session, pinned = session_on_weights(model_bytes, weights, data,
                                                      list(providers or CPU), spinning,
                                                      weights_mode, threads)
            else:
                session = ort.InferenceSession(
                    model_bytes, sess_options=session_options(spinning, threads),
                    providers=list(providers or CPU))
        except Exception as exc:  # onnxruntime's own error classes derive from Exception only
            raise ModelLoadError(f"{model_path}: onnxruntime cannot load it: {exc}") from exc
        # onnxruntime's Python session keeps the bytes it was built from (`_model_bytes`, only
        # read again to rebuild the session when a GPU provider fails and it falls back to the
        # CPU): on the CPU alone there is no fallback, so they are dropped (a layer's model:
        # its size held for nothing besides the session's own copy of the weights).
        if tuple(session.get_providers()) == CPU and hasattr(session, "_model_bytes"):
            session._model_bytes = None
        del model_bytes, weights
        _check_signature("input", manifest.inputs, session.get_inputs(), model_path)
        _check_signature("output", manifest.outputs, session.get_outputs(), model_path)
        try:
            explainer = load_explainer(manifest, version_dir)
        except ExplanationError as exc:
            raise ModelLoadError(f"{version_dir}: explanation: {exc}") from exc
        return cls(manifest=manifest, session=session, explainer=explainer, pinned=pinned)

    @property
    def providers(self) -> tuple[str, ...]:
        """The execution providers the session really uses (a missing GPU shows up here)."""
        return tuple(self.session.get_providers())

    def run(self, inputs: dict[str, np.ndarray],
            output_names: Sequence[str]) -> dict[str, np.ndarray]:
        """Run the session; `inputs` must already fit the manifest (the codec checks them).
        Raises ModelRunError (400) when onnxruntime refuses what these inputs hold (see
        run_error); anything else it raises (out of memory, a device fault) as it raised it."""
        names = list(output_names)
        return dict(zip(names, self._session_run(names, inputs), strict=True))

    def _session_run(self, names: list[str], inputs: dict[str, np.ndarray]) -> list[Any]:
        """session.run, what onnxruntime refuses of the inputs raised as ModelRunError."""
        try:
            results: list[Any] = self.session.run(names, inputs)
            return results
        except RUN_INPUT_ERRORS as error:
            refused = run_error(error)
            if refused is None:
                raise
            raise refused from None

    def explain(self, inputs: dict[str, np.ndarray], output_names: Sequence[str],
                parameters: Mapping[str, Any], budget_s: float | None = None
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The outputs `output_names` (the model's own and the explanation's, see
        explainers.with_outputs) for `inputs`, and the answer's parameters
        (explainers.base.Explanation.parameters). `parameters` are the request's: `target`,
        `samples` (explainers.request_options). Raises what the explainer raises (a 4xx
        ModelAPIError), and TooLarge (413) when the model runs it needs would take more than
        `budget_s` seconds (None: no bound), before running them."""
        options = request_options(parameters)
        explanation = self.explainer.explain(self.scores(self.explainer.output, budget_s),
                                             inputs, options)
        results = explanation.outputs()
        own = [name for name in output_names if name not in results]
        if own:
            results.update(self.run(inputs, own))
        return {name: results[name] for name in output_names}, explanation.parameters()

    def scores(self, output: str, budget_s: float | None = None
               ) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        """A predictor for the explainers: inputs -> `output` as FP64 [batch, classes]
        ([batch, 1] for a regression output of shape [batch]).

        With `budget_s`, the predictor's calls together may take that many seconds: a batch of
        more than 2 x PROBE_ROWS rows runs in chunks that grow fourfold from PROBE_ROWS, each
        timed; before each chunk the rows left are priced at the last chunk's rate (the larger
        the chunk, the less its per-call overhead weighs, so the estimate tightens as it goes),
        and when they would end after the budget the run stops with TooLarge (413) saying how
        to get the explanation (a large model's rows cost what its size does: issue 21).
        Pricing from one small probe alone overstated the rate 50-200x for small models (the
        call's fixed cost spread over 16 rows), which refused requests that take 0.5 s."""
        deadline = None if budget_s is None else time.perf_counter() + budget_s

        def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
            return np.asarray(self._session_run([output], inputs)[0])

        def predict(inputs: dict[str, np.ndarray]) -> np.ndarray:
            rows = next(iter(inputs.values())).shape[0]
            if deadline is None or rows <= 2 * PROBE_ROWS:
                result = run(inputs)
                return np.asarray(result, dtype=np.float64).reshape(result.shape[0], -1)
            parts: list[np.ndarray] = []
            start, size, per_row = 0, PROBE_ROWS, 0.0
            while start < rows:
                left = rows - start
                if parts and time.perf_counter() + per_row * left > deadline:
                    raise TooLarge(
                        f"this explanation needs about {rows:,} model rows, "
                        f"{per_row * 1000:.2g} ms each for model "
                        f"'{self.manifest.name}': about {per_row * rows:.0f} s, over the "
                        f"{budget_s:.0f} s an /explain request may take here; send fewer rows "
                        "or a smaller parameters.samples, or run it as an asynchronous job "
                        '(POST .../jobs, each line with "parameters": {"explain": true}), '
                        "which has no such bound")
                end = start + (left if left <= 2 * size else size)
                started = time.perf_counter()
                parts.append(run({name: value[start:end] for name, value in inputs.items()}))
                per_row = (time.perf_counter() - started) / (end - start)
                start, size = end, size * 4
            result = np.concatenate(parts)
            return np.asarray(result, dtype=np.float64).reshape(result.shape[0], -1)

        return predict


def _read_stored(version_dir: Path, manifest: Manifest, store: RangeReader | None,
                 progress: Progress | None) -> tuple[bytes, np.ndarray | None,
                                                     StoredObject | None]:
    """The checked graph bytes of a version whose manifest names a stored object
    (model_api.store), read from `store` when one is given, else from `version_dir`, and its
    weights' buffer and file (ONNX external data) when it has one. ModelLoadError when the
    manifest's `store` field is malformed or the store cannot be read; IntegrityError when a
    file differs from its sha256."""
    from model_api.store import (
        StoredObject,
        StoreError,
        aligned_buffer,
        external_data,
        fetch_into,
        fetch_verified,
        read_file_into,
    )

    try:
        stored = StoredObject.from_manifest(dict(manifest.extra), manifest.sha256)
        data = external_data(dict(manifest.extra))
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc
    model_path = version_dir / manifest.model_file
    weights = None
    try:
        from_store = stored is not None and store is not None
        model_bytes = (fetch_verified(store, stored, progress=progress)  # type: ignore[arg-type]
                       if from_store else read_verified(model_path, manifest.sha256))
        if data is not None:
            # The weights' file: read into one buffer, checked, then run on in place
            weights = aligned_buffer(data.size)
            if from_store:
                fetch_into(store, data, weights, progress=progress)  # type: ignore[arg-type]
            else:
                read_file_into(version_dir / str(data.location), data, weights)
    except StoreError as exc:
        raise ModelLoadError(f"{model_path}: cannot read model file: {exc}") from exc
    return model_bytes, weights, data


def session_on_weights(graph: bytes, weights: np.ndarray, data: StoredObject,
                        providers: list[str], spinning: bool | None,
                        mode: str | None = None, threads: int | None = None
                        ) -> tuple[ort.InferenceSession, tuple[Any, ...]]:
    """The session of `graph`, whose large tensors are in a weights' file (ONNX's external-data
    format, model_api.store) read and checked into `weights`; and what must stay alive as long
    as it does.

    In place (`mode` IN_PLACE, or None and $MODEL_API_WEIGHTS unset or "in-place"): each tensor
    is a view of `weights` handed to onnxruntime as the initializer of its name
    (SessionOptions.add_initializer: "Its lifetime and the underlying initializer buffer must be
    managed by the user ... it must outlive the session"), so the weights are held once: peak
    and resident memory 1.0 x their size. Pre-packing is off then: it would keep a packed copy
    of every MatMul/Gemm weight beside the buffer the session cannot free (2 x). onnxruntime
    checks that the file the graph names exists before it looks at the initializers given, so an
    empty one stands in for it, in a temporary folder, during the call. A graph whose
    optimisations read a weight's bytes (constant folding a Cast or Transpose of one, fusing
    Q/K/V weights) cannot take them in place; it and "copy" hand them over with
    SessionOptions.add_external_initializers, which copies them before any optimisation ("the
    user provided buffers can then be deallocated"):
    2 x at the peak, 1 x after, pre-packed."""
    values = [ort.OrtValue.ortvalue_from_numpy_with_onnx_type(tensor.view(weights), tensor.type)
              for tensor in data.tensors]
    if (mode or os.environ.get(WEIGHTS_VARIABLE, IN_PLACE)) != COPY:
        options = session_options(spinning, threads)
        options.add_session_config_entry("session.disable_prepacking", "1")
        import tempfile  # only a stored version's load needs it: not on every cold start

        with tempfile.TemporaryDirectory(prefix="model-api-weights-") as folder:
            (Path(folder) / str(data.location)).touch()
            options.add_session_config_entry(
                "session.model_external_initializers_file_folder_path", folder)
            for tensor, value in zip(data.tensors, values, strict=True):
                options.add_initializer(tensor.name, value)
            try:
                return (ort.InferenceSession(graph, sess_options=options, providers=providers),
                        (weights, *values))
            except Exception as exc:  # onnxruntime's own errors derive from Exception only
                logger.warning("%s: the weights cannot be used in place (%s); onnxruntime "
                               "copies them instead (twice their size at the peak)",
                               data.key, exc)
    options = session_options(spinning, threads)
    options.add_external_initializers([tensor.name for tensor in data.tensors], values)
    return ort.InferenceSession(graph, sess_options=options, providers=providers), ()


def _check_signature(kind: str, specs: Sequence[TensorSpec], args: Sequence[ort.NodeArg],
                     model_path: Path) -> None:
    """ModelLoadError unless the graph's inputs (or outputs) are the manifest's."""
    graph = {arg.name: arg for arg in args}
    declared = [spec.name for spec in specs]
    if set(graph) != set(declared):
        raise ModelLoadError(
            f"{model_path}: the graph's {kind}s are {sorted(graph)} but {MANIFEST_FILE} "
            f"declares {sorted(declared)}"
        )
    for spec in specs:
        arg = graph[spec.name]
        datatype = ORT_TYPES.get(arg.type)
        if datatype != spec.datatype:
            raise ModelLoadError(
                f"{model_path}: {kind} '{spec.name}' is {arg.type} in the graph but "
                f"{spec.datatype} in {MANIFEST_FILE}"
            )
        if kind == "input" and not _shape_fits(spec.shape, arg.shape):
            raise ModelLoadError(
                f"{model_path}: input '{spec.name}' has shape {arg.shape} in the graph, which "
                f"does not accept every shape {list(spec.shape)} of {MANIFEST_FILE} allows"
            )


def _shape_fits(declared: Sequence[int], graph: Sequence[int | str | None]) -> bool:
    """Whether every request shape the manifest allows is one the graph accepts."""
    if len(declared) != len(graph):
        return False
    return all(
        not isinstance(fixed, int) or fixed == dim
        for dim, fixed in zip(declared, graph, strict=True)
    )
