"""Running many decoded infer requests as few model runs, each answer split back per request.

Requests whose inputs have the same names, trailing shapes and dtypes, and that ask for the
same outputs, are concatenated on axis 0 up to `max_rows` rows and run once; the results are
sliced back by each request's rows. A run that fails is split in halves until the request at
fault stands alone and gets an error of its own, so one bad request never costs its neighbours
their answers; a run that ran out of memory also lowers `max_rows` for the rest of the job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
from model_api.codec import InferRequest
from model_api.model import LoadedModel

LOG = logging.getLogger(__name__)
Signature = tuple[Any, ...]
MEMORY_ERRORS = ("out of memory", "failed to allocate", "bad_alloc", "cudaerrormemoryallocation")


def signature(request: InferRequest) -> Signature:
    inputs = tuple((name, array.shape[1:], array.dtype.str)
                   for name, array in sorted(request.inputs.items()))
    return inputs, tuple(output.name for output in request.outputs)


class MicroBatcher:
    """Runs (position, request) pairs on one model; yields (position, results | error)."""

    def __init__(self, model: LoadedModel, max_rows: int) -> None:
        self.model = model
        self.max_rows = max_rows

    def run(self, requests: list[tuple[int, InferRequest]]
            ) -> Iterator[tuple[int, dict[str, np.ndarray] | str]]:
        groups: dict[Signature, list[tuple[int, InferRequest]]] = {}
        for item in requests:
            groups.setdefault(signature(item[1]), []).append(item)
        for group in groups.values():
            batch: list[tuple[int, InferRequest]] = []
            rows = 0
            for item in group:
                if batch and rows + item[1].rows > self.max_rows:
                    yield from self._run_batch(batch)
                    batch, rows = [], 0
                batch.append(item)
                rows += item[1].rows
            if batch:
                yield from self._run_batch(batch)

    def _run_batch(self, batch: list[tuple[int, InferRequest]]
                   ) -> Iterator[tuple[int, dict[str, np.ndarray] | str]]:
        first = batch[0][1]
        names = [output.name for output in first.outputs]
        inputs = {name: np.concatenate([request.inputs[name] for _, request in batch])
                  if len(batch) > 1 else first.inputs[name] for name in first.inputs}
        total = sum(request.rows for _, request in batch)
        try:
            results = self.model.run(inputs, names)
        # onnxruntime raises its own exception types for anything a graph refuses at run time;
        # whatever it is, it must become an error record, never a lost line.
        except Exception as error:
            yield from self._after_failure(batch, error)
            return
        if len(batch) > 1 and any(r.shape[:1] != (total,) for r in results.values()):
            for item in batch:  # an output without a batch dimension cannot be split by rows
                yield from self._run_batch([item])
            return
        offset = 0
        for position, request in batch:
            if len(batch) == 1:
                yield position, results
            else:
                yield position, {name: result[offset:offset + request.rows]
                                 for name, result in results.items()}
            offset += request.rows

    def _after_failure(self, batch: list[tuple[int, InferRequest]], error: Exception
                       ) -> Iterator[tuple[int, dict[str, np.ndarray] | str]]:
        if len(batch) == 1:
            yield batch[0][0], f"model run failed: {error}"
            return
        if any(marker in str(error).lower() for marker in MEMORY_ERRORS):
            self.max_rows = max(1, self.max_rows // 2)
            LOG.warning("out of memory with %d rows; micro-batches now at most %d rows",
                        sum(r.rows for _, r in batch), self.max_rows)
        middle = len(batch) // 2
        yield from self._run_batch(batch[:middle])
        yield from self._run_batch(batch[middle:])
