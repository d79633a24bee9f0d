"""Running many decoded infer requests as few model runs, each answer split back per request.

Requests whose inputs have the same names, trailing shapes and dtypes, and that ask for the
same outputs, are concatenated on axis 0 up to the micro-batch size and run once; the results are
sliced back by each request's rows. A run that fails is split in halves until the request at
fault stands alone and gets an error of its own, so one bad request never costs its neighbours
their answers; a run that ran out of memory also halves the micro-batch size for the rest of
the job.

The micro-batch size is `BATCH_ROWS` when given, else `BatchSizeTuner` picks it on the job's
first rows: the best size depends on the model and the machine (256 rows for a small MLP on a
CPU, 16,384 for a linear model whose runs cost mostly per call), so it is measured, not guessed.

A .npy chunk (one request of many rows: `MicroBatcher.run_rows`) runs several micro-batches
side by side on the CPU, each on one onnxruntime thread, while a run takes at least
SIDE_BY_SIDE_SECONDS (see MicroBatcher).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np
from model_api.codec import InferRequest
from model_api.model import LoadedModel, is_memory_error

LOG = logging.getLogger(__name__)
Signature = tuple[Any, ...]
CPU_SIZES = (256, 1024, 4096, 16384)
GPU_SIZES = (1024, 4096, 16384, 65536)
# The first runs of a size are not timed: onnxruntime plans and allocates its memory for each
# new input shape on its first two runs (measured: each about twice as slow as the next ones,
# digits-cnn and breast-cancer-mlp alike; one with its memory pattern off)
WARMUP_RUNS = 2
TRIAL_RUNS = 3  # timed runs of each size, at least; then until TRIAL_SECONDS or TRIAL_MAX_RUNS
TRIAL_SECONDS = 0.005
TRIAL_MAX_RUNS = 10  # a fast model's trial stays short: its smaller sizes cost the most
# A larger size is tried only while the last step paid: a size less than STEP_GAIN x the best
# before it ends the trial. (Ending it only at a size 0.8x the best let one disturbed trial,
# its runs beside the job's first reads, climb to 16,384 rows on digits-cnn, 0.7x of the best
# size's speed. At 1.0, a size as fast as the last one went on to the next: digits-cnn, as
# fast at 256 as at 1,024 rows, then paid 4,096's warm-up and timed runs, about 5% of its
# 120,000-row bench job, for nothing.) Sizes are 4x apart: a step that gains under 10% rarely
# leads to one that gains more.
STEP_GAIN = 1.1
# A .npy chunk's micro-batches run side by side (MicroBatcher.runs) while a run takes at least
# this long; shorter ones run one at a time: each call's own Python (its inputs and results
# wrapped, under the GIL) is then most of the run, and two threads only hand the GIL to and
# fro (measured, 2 cores: diabetes-linear at 16,384 rows, 0.2 ms a run, 0.74x side by side;
# digits-cnn at 256 rows, 2 ms a run, 1.23x; docs/performance.md, "Batch: micro-batches side
# by side"). A model whose ops are that small gains nothing from more intra-op threads either.
SIDE_BY_SIDE_SECONDS = 0.001
RECENT_RUNS = 4


class BatchSizeTuner:
    """The micro-batch size: `fixed` when given (BATCH_ROWS), else chosen by timing real
    micro-batches of the job's first rows (their answers are kept: the trial costs only the
    difference in speed). Sizes are tried smallest first, each for WARMUP_RUNS untimed runs,
    then TRIAL_RUNS timed ones and more until TRIAL_SECONDS or TRIAL_MAX_RUNS; a size's
    speed is its best timed run's rows/s, the run least disturbed by other work on the
    machine. The trial stops at the last size or at the first one that is not STEP_GAIN x as
    fast as the best before it, and the fastest size is kept for the rest of the job
    (logged). Out of memory halves the size, during the trial or after it."""

    def __init__(self, sizes: Sequence[int], fixed: int = 0) -> None:
        self.sizes = sorted(sizes)  # on trial unless fixed
        self.choice: int | None = fixed or None
        self.index = 0
        self.runs = 0
        self.seconds = 0.0
        self.best_rate = 0.0
        self.rates: dict[int, float] = {}

    @property
    def size(self) -> int:
        return self.choice if self.choice is not None else self.sizes[self.index]

    def record(self, rows: int, seconds: float, at_once: int = 1) -> None:
        """A model run of `rows` rows took `seconds`, one of `at_once` runs side by side (its
        rate counts as `at_once` x its own: the job's throughput); only runs at about the size
        on trial count (a chunk's last, shorter micro-batch says little)."""
        if self.choice is not None or rows * 2 < self.size or seconds <= 0:
            return
        self.runs += 1
        if self.runs <= WARMUP_RUNS:
            return
        self.seconds += seconds
        self.best_rate = max(self.best_rate, rows * at_once / seconds)
        timed = self.runs - WARMUP_RUNS
        if timed < TRIAL_RUNS or (self.seconds < TRIAL_SECONDS and timed < TRIAL_MAX_RUNS):
            return
        size = self.size
        before = max(self.rates.values(), default=0.0)
        self.rates[size] = self.best_rate
        self.runs, self.seconds, self.best_rate = 0, 0.0, 0.0
        if self.index + 1 == len(self.sizes) or self.rates[size] < STEP_GAIN * before:
            self._choose(max(self.rates, key=lambda s: self.rates[s]))
        else:
            self.index += 1

    def out_of_memory(self, rows: int) -> int:
        """A run of `rows` rows ran out of memory: at most half of that from now on."""
        limit = max(1, min(rows, self.size) // 2)
        if self.choice is None:
            fitting = [s for s in self.rates if s <= limit]
            self._choose(max(fitting, key=lambda s: self.rates[s]) if fitting else limit)
        self.choice = min(self.choice or limit, limit)
        return self.choice

    def _choose(self, size: int) -> None:
        self.choice = size
        LOG.info("micro-batches of %d rows (rows/s measured on the first rows: %s)", size,
                 ", ".join(f"{s}: {rate:.0f}" for s, rate in sorted(self.rates.items()))
                 or "none")


def signature(request: InferRequest) -> Signature:
    """What requests must share to run together: their inputs' names, trailing shapes and
    dtypes, and the outputs they ask for (once per JSON Lines line: kept cheap)."""
    inputs = tuple((name, array.shape[1:], array.dtype)
                   for name, array in sorted(request.inputs.items()))
    return inputs, request.outputs


class MicroBatcher:
    """Runs (position, request) pairs on one model; yields (position, results | error). A
    request of many rows (run_rows: a .npy chunk) runs as `runs` micro-batches at once, each
    on a thread of its own (onnxruntime releases the GIL while it runs, and one session may run
    several calls at once): with one intra-op thread each, they keep every core busy without
    the synchronisation at each operator's end that one run on all the cores has, so a run
    slowed by other work on its core (the job's reads and writes) does not hold the others
    (docs/performance.md, "Batch: micro-batches side by side")."""

    def __init__(self, model: LoadedModel, tuner: BatchSizeTuner, runs: int = 1) -> None:
        self.model = model
        self.tuner = tuner
        self.runs = max(1, runs)
        self._tuning = threading.Lock()  # the tuner is told of runs from several threads
        # the seconds of the last RECENT_RUNS runs of about the micro-batch size (run_timed)
        self.recent: deque[float] = deque(maxlen=RECENT_RUNS)

    def at_once(self) -> int:
        """How many micro-batches run side by side now: `runs`, or 1 once the quickest of the
        recent runs of about the micro-batch size took under SIDE_BY_SIDE_SECONDS (the
        quickest: a run slowed by other work on its core says little of the model)."""
        return 1 if self.recent and min(self.recent) < SIDE_BY_SIDE_SECONDS else self.runs

    def run(self, requests: list[tuple[int, InferRequest]]
            ) -> Iterator[tuple[int, dict[str, np.ndarray] | str]]:
        groups: dict[Signature, list[tuple[int, InferRequest]]] = {}
        for item in requests:
            groups.setdefault(signature(item[1]), []).append(item)
        for group in groups.values():
            batch: list[tuple[int, InferRequest]] = []
            rows = 0
            for item in group:
                if batch and rows + item[1].rows > self.tuner.size:
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
            results = self.run_timed(inputs, names, total, splittable=len(batch) > 1)
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

    def run_rows(self, request: InferRequest) -> dict[str, np.ndarray]:
        """Every output `request` asks for, run in micro-batches of its rows (a .npy chunk:
        one request of many rows), `runs` of them at once, and concatenated in row order. Out
        of memory halves the micro-batch size and redoes the rows from the micro-batch that
        ran out (the ones in flight after it are waited for and redone too); any other
        failure, or one of a single row, is raised once no run is in flight."""
        names = [output.name for output in request.outputs]
        results: dict[str, list[np.ndarray]] = {name: [] for name in names}
        in_flight: deque[tuple[int, int, Future[dict[str, np.ndarray]]]] = deque()
        first = 0  # the first row not yet handed to a run
        with ThreadPoolExecutor(self.runs, thread_name_prefix="run") \
                if self.runs > 1 else contextlib.nullcontext() as pool:
            while first < request.rows or in_flight:
                while first < request.rows and len(in_flight) < (at_once := self.at_once()):
                    size = self.tuner.size
                    stop = min(first + size, request.rows)
                    batch = {name: array[first:stop] for name, array in request.inputs.items()}
                    in_flight.append((first, stop, self._start(
                        pool if at_once > 1 else None, batch, names, size, at_once)))
                    first = stop
                start, stop, running = in_flight.popleft()
                try:
                    ran = running.result()
                except Exception as error:  # onnxruntime's own types; only memory is retried
                    if not is_memory_error(error) or (stop - start == 1 and self.runs == 1):
                        raise
                    wait([later for _, _, later in in_flight])
                    in_flight.clear()
                    if stop - start == 1:  # a row runs out beside others: one run at a time
                        LOG.warning("out of memory with 1 row and %d runs at once; one run at "
                                    "a time from now on", self.runs)
                        self.runs = 1
                    first = start  # again, at the size run_timed halved the micro-batch to
                    continue
                for name in names:
                    results[name].append(ran[name])
        return {name: np.concatenate(parts) for name, parts in results.items()}

    def _start(self, pool: ThreadPoolExecutor | None, inputs: dict[str, np.ndarray],
               names: list[str], size: int, at_once: int) -> Future[dict[str, np.ndarray]]:
        """One micro-batch's run (cut at the micro-batch size `size`), one of `at_once`: on
        `pool` (its result or error when done), else run here, its outcome in a finished
        Future."""
        rows = len(next(iter(inputs.values())))
        if pool is not None:
            return pool.submit(self.run_timed, inputs, names, rows, rows > 1, at_once, size)
        done: Future[dict[str, np.ndarray]] = Future()
        try:
            done.set_result(self.run_timed(inputs, names, rows, rows > 1, at_once, size))
        except Exception as error:
            done.set_exception(error)
        return done

    def run_timed(self, inputs: dict[str, np.ndarray], names: list[str], rows: int,
                  splittable: bool, at_once: int = 1, cut_at: int | None = None
                  ) -> dict[str, np.ndarray]:
        """One model run of `rows` rows, one of `at_once` side by side, timed for the tuner
        and for at_once(). When it runs out of memory and the caller will retry it in smaller
        parts (`splittable`), the micro-batch size is halved first (logged), unless it was cut
        at a size (`cut_at`) that a run beside it has halved already; the run's error is
        raised either way."""
        started = time.perf_counter()
        try:
            results = self.model.run(inputs, names)
        except Exception as error:
            if splittable and is_memory_error(error):
                with self._tuning:
                    size = self.tuner.out_of_memory(rows) \
                        if cut_at in (None, self.tuner.size) else 0
                if size:
                    LOG.warning("out of memory with %d rows; micro-batches now at most %d "
                                "rows", rows, size)
            raise
        seconds = time.perf_counter() - started
        with self._tuning:
            self.tuner.record(rows, seconds, at_once)
            if rows * 2 >= self.tuner.size:
                self.recent.append(seconds)
        return results

    def _after_failure(self, batch: list[tuple[int, InferRequest]], error: Exception
                       ) -> Iterator[tuple[int, dict[str, np.ndarray] | str]]:
        if len(batch) == 1:
            yield batch[0][0], f"model run failed: {error}"
            return
        middle = len(batch) // 2
        yield from self._run_batch(batch[:middle])
        yield from self._run_batch(batch[middle:])
