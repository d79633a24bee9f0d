"""How latencies are measured: sessions with the serving library's options on Lambda, and the
parent and a candidate timed in interleaved passes."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
from model_api.model import CPU, LAMBDA_MEMORY_VARIABLE, session_options


@dataclass(frozen=True)
class Timing:
    """How latencies are measured: `passes` interleaved passes of about `pass_seconds` each."""

    passes: int = 7
    pass_seconds: float = 0.1
    max_runs: int = 2000  # session.run calls per pass at most
    lambda_memory_mb: int | None = 1024  # the session options of a function this size


@contextmanager
def lambda_memory(memory_mb: int | None) -> Iterator[None]:
    """The environment Lambda's runtime sets for a function of `memory_mb` MB (None: unset)."""
    before = os.environ.get(LAMBDA_MEMORY_VARIABLE)
    if memory_mb is None:
        os.environ.pop(LAMBDA_MEMORY_VARIABLE, None)
    else:
        os.environ[LAMBDA_MEMORY_VARIABLE] = str(memory_mb)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(LAMBDA_MEMORY_VARIABLE, None)
        else:
            os.environ[LAMBDA_MEMORY_VARIABLE] = before


def serving_session(model: bytes, timing: Timing) -> ort.InferenceSession:
    """A session with the serving library's options, as a function of the timed size has."""
    with lambda_memory(timing.lambda_memory_mb):
        options = session_options()
    return ort.InferenceSession(model, sess_options=options, providers=list(CPU))


def run_seconds(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> float:
    """Seconds of one session.run."""
    started = time.perf_counter()
    session.run(None, feeds)
    return time.perf_counter() - started


def interleaved(parent: ort.InferenceSession, candidate: ort.InferenceSession,
                feeds: Mapping[str, np.ndarray], timing: Timing) -> tuple[float, float]:
    """Median latencies in ms (parent, candidate) over `timing.passes` passes, each pass's
    figure the median of its runs. Within a pass the two take turns run by run (parent first
    in even runs, candidate first in odd ones), so load from other processes, which comes and
    goes over milliseconds on a shared machine, falls on both alike."""
    feeds = dict(feeds)
    for _ in range(3):  # warm: the first runs allocate
        run_seconds(parent, feeds), run_seconds(candidate, feeds)
    single = max(statistics.median(run_seconds(parent, feeds) for _ in range(3)), 1e-7)
    runs = max(3, min(timing.max_runs, int(timing.pass_seconds / single / 2)))
    passes: tuple[list[float], list[float]] = ([], [])
    for _ in range(timing.passes):
        times: tuple[list[float], list[float]] = ([], [])
        for number in range(runs):
            for which in ((0, 1) if number % 2 == 0 else (1, 0)):
                times[which].append(run_seconds((parent, candidate)[which], feeds))
        for which in (0, 1):
            passes[which].append(statistics.median(times[which]))
    return statistics.median(passes[0]) * 1e3, statistics.median(passes[1]) * 1e3


def load_average() -> list[float]:
    """The machine's 1, 5 and 15-minute load averages: how busy it was while timing."""
    return [round(load, 2) for load in os.getloadavg()]
