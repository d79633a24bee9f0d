"""A JSON Lines job's chunks worked in worker processes: the per-line Python on every core.

A JSON Lines record costs tens of microseconds of Python (decoding and checking the request,
the hooks, encoding the answer: docs/performance.md, "Batch"), which one process does on one
core whatever the machine has: the GIL. A job whose model runs on the CPU therefore hands its
chunks to a pool of worker processes (BATCH_WORKERS; default: the CPUs this process may use).
Each worker loads the job's model version itself (the sha256 checked, as the runner loads it:
batch.loading.load_version), builds its own pipeline with the same hooks (class counts, data
capture: each worker delivers and emits its own at the end of each chunk), micro-batcher and
batch-size tuner, with onnxruntime's intra-op threads at the CPUs / workers (no
oversubscription), and turns (lines, first line number) into the chunk's part
(batch.jsonl.chunk_part). A worker is a pure function of its chunk: the runner keeps reading,
ordering, writing parts and checkpoints as before (batch.overlap, with up to `workers` chunks in
flight, written in input order), so exactly-once and resume are unchanged.

Stays in-process: a job on the GPU (one CUDA session), a .npy input (no per-row Python), an
input (a child's share of it) under MIN_POOL_BYTES (the pool's start would cost more than it
saves), BATCH_WORKERS=1, and a machine of one CPU.

Memory: every worker holds its own copy of the model (N x the model, besides the runner's),
so the workers are at most as many as MODEL_MEMORY_SHARE of the memory (the container's
limit when it has one) holds models; and each chunk in flight is held by the runner and by its
worker (at most 2 x workers + 3 chunks of input, with their parts).

Failures: a worker that dies (killed for memory, a crash in native code) breaks the pool
(BrokenProcessPool): the attempt fails as transient (batch.failures) and the retry resumes from
the checkpoint. The workers die with the runner: the runner stops them on every way out of
the job (`ChunkWorkers.close`; they ignore SIGINT, which a terminal sends the whole process
group), and each ends by itself as soon as the runner process has ended, however it ended
(killed by any signal included: a thread of the worker watches the runner's pidfd).

Start method: a fork server (multiprocessing's "forkserver"), started once per runner process
(`prepare`, while the job's first requests are in flight) with numpy, onnxruntime, the
serving library and what the runner's main module imports (`RUNNER_IMPORTS`) imported, so that
each worker is a fork of a clean single-threaded process
(about 30 ms) rather than a fork of the runner's threads (a lock held by another thread at the
fork would stay held in the child) or a fresh interpreter (spawn: 0.8-1 s a pool, measured).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import forkserver
from pathlib import Path

from model_api.model import THREADS_VARIABLE, LoadedModel
from model_api.store import StoredObject, external_data

LOG = logging.getLogger("batch.runner")
WORKERS_ENV = "BATCH_WORKERS"
# An input (a child's share) smaller than this is worked in-process: its lines take well under
# a second in one process, less than the pool's start costs the CPUs (measured: docs/
# performance.md, "Batch: JSON Lines in worker processes")
MIN_POOL_BYTES = 4 << 20
# A fresh job's chunks with workers: this many per worker at least, and at least this big
CHUNKS_PER_WORKER = 4
MIN_CHUNK_BYTES = 1 << 20
# The workers' copies of the model together stay under this share of the memory
MODEL_MEMORY_SHARE = 0.5
START_METHOD = "forkserver"
# What `python -m batch.runner` imports: multiprocessing runs a main module started by name
# again (as `__mp_main__`) in every worker before its first task, and batch.runner would then
# import the job and boto3 in each worker in turn (170-200 ms of a CPU each, measured); with
# them in the fork server, each worker runs only the runner's own lines. Not batch.runner
# itself: a module run again while it is in sys.modules makes runpy warn in every worker.
# (tests/batch/test_batch_workers.py checks that the list covers the runner's imports.)
RUNNER_IMPORTS = ["argparse", "batch.failures", "batch.job", "batch.jobs", "batch.shards",
                  "batch.submit", "model_api.aws.dependencies"]
# Imported once by the fork server, so that each worker starts with them
# (the hooks' modules too: data capture's imports Powertools, ~50 ms a worker otherwise)
PRELOAD = ["numpy", "onnxruntime", "model_api.pipeline", "model_api.codec", "batch.jsonl",
           "batch.loading", "batch.microbatch", "batch.models", "model_registry.registry",
           "model_api.aws.hooks", "model_api.aws.class_counts", "model_api.aws.capture",
           *RUNNER_IMPORTS]


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity: a container's cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def memory_bytes() -> int | None:
    """The memory this process may use: the machine's, or its container's limit when lower
    (cgroup v2 memory.max, v1 memory.limit_in_bytes); None when unknown."""
    found: list[int] = []
    with contextlib.suppress(AttributeError, OSError, ValueError):  # not POSIX
        found.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            found.append(int(text))
    return min(found) if found else None


def model_bytes(model: LoadedModel, folder: Path) -> int:
    """The bytes of a version's files (a stored version's: the model store's objects), the
    measure of what each worker's copy of the model holds."""
    extra = dict(model.manifest.extra)
    graph = StoredObject.from_manifest(extra, model.manifest.sha256)
    if graph is not None:
        weights = external_data(extra)
        return graph.size + (weights.size if weights is not None else 0)
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())


def worker_count(requested: int, input_bytes: int, model_size: int,
                 cpus: int | None = None, memory: int | None = None) -> int:
    """How many worker processes a JSON Lines job of `input_bytes` (a child's share) uses:
    `requested` (0: one per CPU), but 1 (in-process) for an input under MIN_POOL_BYTES, and at
    most as many as hold MODEL_MEMORY_SHARE of `memory` with a `model_size` model each."""
    count = requested or (cpus if cpus is not None else available_cpus())
    if input_bytes < MIN_POOL_BYTES:
        return 1
    memory = memory if memory is not None else memory_bytes()
    if memory and model_size > 0:
        count = min(count, max(1, int(memory * MODEL_MEMORY_SHARE) // model_size))
    return max(1, count)


def chunk_bytes(default: int, input_bytes: int, count: int) -> int:
    """A fresh job's bytes of input per chunk with `count` workers: at most `default` (the
    runner's own: batch.job.default_chunk_bytes), and small enough that each worker gets
    CHUNKS_PER_WORKER chunks of the input's `input_bytes`, so that none is left with a large
    last chunk while the others wait; at least MIN_CHUNK_BYTES (each chunk costs a few
    requests: its part, checkpoint and record)."""
    return min(default, max(MIN_CHUNK_BYTES, input_bytes // (CHUNKS_PER_WORKER * count)))


def prepare(requested: int = 0, input_bytes: int = MIN_POOL_BYTES) -> None:
    """Start the fork server now (once per process), so that its interpreter start and
    imports (about 0.5 s of a CPU) overlap the job's model load and first read instead of
    delaying its first chunk; not where no pool will be made (one CPU, `requested` 1, an
    input of `input_bytes` under MIN_POOL_BYTES)."""
    if available_cpus() < 2 or requested == 1 or input_bytes < MIN_POOL_BYTES:
        return
    context = multiprocessing.get_context(START_METHOD)
    context.set_forkserver_preload(PRELOAD)
    try:
        forkserver.ensure_running()
    except OSError as error:  # no temp dir, no fds: the pool's own start falls back in-process
        LOG.warning("the workers' fork server did not start (%s); chunks may be worked "
                    "in-process", error)


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to work a job's chunks as the runner would (picklable)."""

    folder: Path  # the version folder the runner loaded (pinned in the checkpoint)
    registry: Path | None  # models.yaml: each model's data capture
    batch_rows: int  # BATCH_ROWS; 0: each worker times its own first rows
    threads: int  # onnxruntime intra-op threads per worker
    environ: dict[str, str]  # the runner's environment when the pool started
    log_level: int  # the runner's batch.runner logger's
    runner: int  # the runner's process id: a worker ends when it does
    job_id: str | None = None  # the job: its data capture records say so


class ChunkWorkers:
    """A pool of `count` worker processes working a JSON Lines job's chunks (see the module's
    docstring). `submit` hands a chunk to the next free worker; `close` stops them all."""

    def __init__(self, count: int, folder: Path, registry: Path | None,
                 batch_rows: int, job_id: str | None = None) -> None:
        self.count = count
        setup = WorkerSetup(folder, registry, batch_rows,
                            max(1, available_cpus() // count), dict(os.environ),
                            LOG.getEffectiveLevel(), os.getpid(), job_id)
        prepare(count)
        self.pool = ProcessPoolExecutor(count, multiprocessing.get_context(START_METHOD),
                                        initializer=_start_worker, initargs=(setup,))
        # Done once every worker has started (fork server up, model loaded): until then the
        # runner works its chunks itself rather than wait (the first submit would block on
        # the fork server's imports). A future, so that the runner can wait for it or for its
        # own chunk, whichever comes first (concurrent.futures.wait)
        self.ready: Future[None] = Future()
        self._starter = threading.Thread(target=self._start, name="workers-start", daemon=True)
        self._starter.start()
        LOG.info("JSON Lines chunks worked by %d worker processes (%d onnxruntime threads "
                 "each)", count, setup.threads)

    def _start(self) -> None:
        """Start every worker (one call each: the pool starts a process per call while none
        is idle), then `ready` is done; a pool that cannot start is logged and never ready (the
        runner then works every chunk itself)."""
        try:
            for started in [self.pool.submit(_started) for _ in range(self.count)]:
                started.result()
        except Exception as error:  # BrokenProcessPool, the fork server's own errors
            LOG.warning("the worker processes did not start (%s: %s): chunks are worked in "
                        "the runner's process", type(error).__name__, error)
            return
        self.ready.set_result(None)

    def submit(self, lines: Sequence[object], first_number: int) -> Future[tuple[bytes, int]]:
        """The chunk's part and its errors (batch.jsonl.chunk_part), worked by a worker.
        Raises BrokenProcessPool (from the future too) when a worker died."""
        return self.pool.submit(_work, lines, first_number)

    @property
    def processes(self) -> list[multiprocessing.process.BaseProcess]:
        """The pool's worker processes (Python 3.14 has terminate_workers() for `close`)."""
        return list((getattr(self.pool, "_processes", None) or {}).values())

    def close(self, wait: bool = True) -> None:
        """Stop the workers: with `wait`, once they are idle (every chunk done); else at once,
        pending chunks cancelled and running ones killed. Either way every worker is joined:
        no process outlives the job's attempt."""
        workers = self.processes
        self.pool.shutdown(wait=wait, cancel_futures=True)
        for process in workers:
            if process.is_alive():
                process.kill()
        for process in workers:
            process.join(timeout=10)
        self._starter.join(timeout=10)


# ---- in each worker process

_pipeline = None
_model: LoadedModel | None = None
_batcher = None


def _start_worker(setup: WorkerSetup) -> None:
    """The pool's initializer: the runner's environment and logging, then the model, the
    pipeline and the micro-batcher, once per worker."""
    global _pipeline, _model, _batcher
    # Ctrl-C in a terminal reaches the whole process group: the runner stops its workers
    # (close). SIGTERM stays deadly: the pool itself ends its workers with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_die_with, args=(setup.runner,), name="runner-watch",
                     daemon=True).start()
    os.environ.clear()
    os.environ.update(setup.environ)
    os.environ[THREADS_VARIABLE] = str(setup.threads)
    logging.basicConfig(level=setup.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s [worker %(process)d] "
                               "%(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    from batch.loading import CPU, job_pipeline, load_version
    from batch.microbatch import CPU_SIZES, BatchSizeTuner, MicroBatcher

    _model = load_version(setup.folder, [CPU])
    _pipeline = job_pipeline(setup.registry, setup.job_id)
    _batcher = MicroBatcher(_model, BatchSizeTuner(CPU_SIZES, setup.batch_rows))
    # What the worker holds for good (modules, the model, the hooks) out of the collector's
    # way: its full collections no longer walk it again for every few thousand lines' garbage
    # (a line's decoding makes dozens of containers). Measured 3-13 % of a line's time.
    gc.collect()
    gc.freeze()


def _die_with(runner: int) -> None:
    """End this worker as soon as the runner process `runner` has ended, however it ended
    (killed by any signal included): a worker's parent is the fork server, which lives as
    long as any worker does, and its queues' pipes stay open in the workers themselves, so
    neither tells a worker that the runner is gone. Linux's pidfd says it without polling
    (and without mistaking a reused process id); elsewhere the id is polled each second."""
    try:
        watched = os.pidfd_open(runner)
    except (AttributeError, OSError):  # not Linux 5.3+: poll the id
        while True:
            try:
                os.kill(runner, 0)
            except ProcessLookupError:
                break
            except PermissionError:  # alive, another user's (its id was reused)
                pass
            time.sleep(1.0)
    else:
        select.select([watched], [], [])
    os._exit(1)


def _started() -> None:
    """A worker's first call: it has started (the pool's initializer ran)."""


def _work(lines: Sequence[object], first_number: int) -> tuple[bytes, int]:
    """One chunk, in a worker: its part and how many of its records are errors."""
    from batch.jsonl import chunk_part

    assert _pipeline is not None and _model is not None and _batcher is not None
    try:
        return chunk_part(_pipeline, lines, first_number, _model, None,  # type: ignore[arg-type]
                          _batcher.run)
    finally:  # the hooks' metric lines (class counts) leave with their chunk, as in-process
        sys.stdout.flush()
