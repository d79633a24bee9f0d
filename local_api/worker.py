"""Run a function as Lambda does: worker processes, one invocation at a time each.

A `FunctionPool` keeps a function's warm workers (processes running local_api/bootstrap.py with
the function's sys.path and environment). Two limits apply, and they are told apart
(docs/architecture.md, "Overload"):

- the function's concurrency limit, Lambda's: its reserved concurrency, else the account's
  (1,000 by default). One invocation more is throttled at once, never queued, as Lambda does
  (`Throttled`, Lambda's TooManyRequestsException);
- this machine's worker budget (`WorkerBudget`): at most `--max-workers` workers busy per
  function and `--max-live-workers` alive over every function. An invocation past it waits for
  a worker, in its turn (round robin over functions, and over models within a function), for at
  most the time its caller gives it (API Gateway's 29 s): AWS would have run it at once on
  another execution environment, so it is served late rather than refused.

Lambda's own limits apply here: the 6 MB request and response payloads, the function's Timeout
(the worker is killed, as Lambda resets the sandbox), an init or handler failure is the
invocation's error document, and idle workers are stopped after a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from local_api.logs import FunctionLogs
from local_api.sandbox import Sandbox

LOG = logging.getLogger(__name__)

BOOTSTRAP = Path(__file__).with_name("bootstrap.py")
# Lambda's synchronous invoke payload limits, in bytes (the response one is 100 bytes larger).
REQUEST_LIMIT = 6 * 1024 * 1024
RESPONSE_LIMIT = 6 * 1024 * 1024 + 100
INIT_TIMEOUT_S = 10.0  # Lambda's limit on a function's init phase
STOP_GRACE_S = 2.0
# Lambda's concurrency limit of an account per Region by default: what a function without
# reserved concurrency may run at once before Lambda throttles it.
ACCOUNT_CONCURRENCY = 1000
# This machine's workers busy at once per function (a worker is ~100 MB with a model, far from
# Lambda's 1,000): past it an invocation waits for one of them (see WorkerBudget).
MAX_WORKERS = 4
# Seconds an idle worker is kept. Lambda reclaims idle execution environments after a period it
# does not publish (minutes); five minutes keeps a working session warm and frees memory after.
IDLE_TIMEOUT_S = 300.0
# Workers alive at once over every function (the local account's concurrency): a deployment of
# hundreds of models holds at most this many in memory (~60-150 MB each), however many models
# its requests touch; see WorkerBudget.
MAX_LIVE_WORKERS = 16
# The pipe must hold an answer over the response limit, so that it can be refused as Lambda does.
_READ_LIMIT = 4 * RESPONSE_LIMIT


class FunctionError(Exception):
    """The function failed (Lambda's X-Amz-Function-Error): `payload` is its error document."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(f"{payload.get('errorType')}: {payload.get('errorMessage')}")
        self.payload = payload


class RequestTooLarge(Exception):
    """Lambda refused the event itself (RequestEntityTooLargeException): the function never ran."""


async def forward_logs(stream: asyncio.StreamReader, capture_dir: Path | None,
                       logs: FunctionLogs, function: str) -> None:
    """A worker's log output (its stdout and stderr, as CloudWatch Logs would hold them) passed
    on whole line by whole line to `logs` (local_api.logs), but for data capture's lines
    (model_api.capture.record.LINE_PREFIX) when `capture_dir` is set, which go to the local
    capture store instead, one object per line: what the deployed model function's log
    subscription to Firehose does (model_api.aws.capture). Ends at the worker's end of output."""
    from model_api.capture.record import LINE_PREFIX
    from model_api.capture.store import FolderStore, object_key

    store = FolderStore(capture_dir) if capture_dir is not None else None
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line over the limit: not a record (those are far smaller)
            continue
        if not line:
            return
        if store is not None and line.startswith(LINE_PREFIX):
            try:
                store.put(object_key(json.loads(line)["model"]), line)
            except (OSError, ValueError, KeyError) as error:
                LOG.error("capture: a record line was not stored (%s)", type(error).__name__)
            continue
        logs.write(function, line)


class Worker:
    """One worker process: the equivalent of one Lambda execution environment."""

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.logs: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    @classmethod
    async def start(cls, sandbox: Sandbox, name: str, logs: FunctionLogs | None = None
                    ) -> Worker:
        """Start the process and wait for its init; a failed init is a FunctionError. Its log
        output goes to `logs` (default: all of it to stderr), whole lines only."""
        config = json.dumps({"python_path": list(sandbox.python_path)})
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", "-u", str(BOOTSTRAP), config,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=sandbox.environment, limit=_READ_LIMIT)
        worker = cls(process, name)
        if process.stderr is not None:
            worker.logs = asyncio.get_running_loop().create_task(forward_logs(
                process.stderr, sandbox.capture_dir, logs or FunctionLogs(),
                sandbox.function.logical_id))
        try:
            ready = await worker._read(INIT_TIMEOUT_S, "init")
        except BaseException:
            await worker.stop()
            raise
        if ready["error"]:
            await worker.stop()
            raise FunctionError(ready["error"])
        LOG.info("cold start: %s ready in %.0f ms (handler import %.0f ms)", name,
                 (time.perf_counter() - started) * 1000, ready["init_ms"])
        return worker

    async def _read(self, timeout: float, what: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except TimeoutError:
            await self.stop()
            raise FunctionError({"errorType": "Sandbox.Timedout",
                                 "errorMessage": f"{what} timed out after {timeout:.2f} seconds"}
                                ) from None
        except ValueError:  # the line is over the pipe's limit: far over Lambda's
            await self.stop()
            raise FunctionError(_too_large(_READ_LIMIT)) from None
        if not line:
            raise FunctionError(_exited(await self.process.wait()))
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def invoke(self, event_json: str, request_id: str, timeout: float) -> str:
        """Run one event (already JSON); the handler's answer as JSON, or a FunctionError."""
        assert self.process.stdin is not None
        deadline_ms = int((time.time() + timeout) * 1000)
        message = (f'{{"request_id": {json.dumps(request_id)}, "deadline_ms": {deadline_ms}, '
                   f'"event": {event_json}}}\n')
        try:
            self.process.stdin.write(message.encode())
            await self.process.stdin.drain()
            answer = await self._read(timeout, f"RequestId: {request_id} Task")
        except (BrokenPipeError, ConnectionResetError):
            raise FunctionError(_exited(await self.process.wait())) from None
        except asyncio.CancelledError:
            # The caller gave up (API Gateway's timeout, shutdown): the answer would come too late.
            await self.stop()
            raise
        if "error" in answer:
            raise FunctionError(answer["error"])
        result: str = answer["result"]
        size = len(result.encode())
        if size > RESPONSE_LIMIT:
            raise FunctionError(_too_large(size))
        return result

    async def stop(self) -> None:
        """Ask the process to end (EOF, SIGTERM), then kill it if it does not."""
        if not self.alive:
            return
        if self.process.stdin is not None:
            self.process.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), STOP_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        if self.logs is not None:  # its last lines (and capture records) are written out
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.logs, STOP_GRACE_S)


def _exited(status: int) -> dict[str, Any]:
    return {"errorType": "Runtime.ExitError",
            "errorMessage": f"Runtime exited with error: exit status {status}"}


def _too_large(size: int) -> dict[str, Any]:
    return {"errorType": "Function.ResponseSizeTooLarge",
            "errorMessage": f"Response payload size ({size} bytes) exceeded maximum allowed "
                            f"payload size ({RESPONSE_LIMIT} bytes)."}


class Throttled(Exception):
    """Lambda refused the invocation: the function is at its concurrency limit (Lambda's
    TooManyRequestsException, status 429). A synchronous invocation is never queued."""


class NoWorker(Exception):
    """No worker of this machine came free within the time the caller gave the invocation
    (the local worker budget, not a limit of Lambda's): it never ran."""


class Reservation:
    """One unit of a function's concurrency, held from the moment API Gateway has a request for
    the function until its invocation ends (or it is given back unused); `granted` once it also
    holds one of this machine's workers (WorkerBudget)."""

    def __init__(self, pool: FunctionPool) -> None:
        self.pool = pool
        self.released = False
        self.granted = False


class WorkerBudget:
    """This machine's workers, shared by every pool: at most `limit` busy (and alive) over
    every function, at most a pool's `workers` busy for that function.

    An invocation that finds no room waits for its turn instead of failing: whenever a worker
    comes free, it goes to the flow (a function, or one model of a function that serves several,
    such as the root API's server function) that has waited for a turn longest among those under
    their function's share, so that one model's burst queues behind itself and never starves
    another model (fair queuing, one request per turn). To start one more worker when `limit`
    are alive, the least recently used idle worker of any function is stopped first (Lambda
    reclaims idle execution environments too). A function's share below `limit` also keeps a
    function that invokes another (the server function, the model functions) from holding every
    worker while it waits for them."""

    def __init__(self, limit: int = MAX_LIVE_WORKERS) -> None:
        if limit < 1:
            raise ValueError("the live worker limit must be at least 1")
        self.limit = limit
        self.pools: list[FunctionPool] = []
        self.busy = 0  # invocations that hold a worker (or are starting one)
        self.starting = 0  # workers being started (counted before they are up)
        self.evicted = 0  # idle workers stopped to make room, since the start
        # Waiting invocations per flow (pool, key); the dict's order is the flows' turn order.
        self._waiting: dict[tuple[FunctionPool, str], deque[asyncio.Future[None]]] = {}

    def live(self) -> int:
        return self.starting + sum(pool.alive for pool in self.pools)

    def waiting(self) -> int:
        """Invocations waiting for a worker, over every function."""
        return sum(len(queue) for queue in self._waiting.values())

    def _fits(self, pool: FunctionPool) -> bool:
        return self.busy < self.limit and pool.busy < pool.workers

    def _take(self, pool: FunctionPool) -> None:
        self.busy += 1
        pool.busy += 1

    async def acquire(self, pool: FunctionPool, flow: str, timeout: float) -> None:
        """Hold one worker of `pool`'s, now or in the flow's turn; NoWorker after `timeout`
        seconds without one. Nobody waits while there is room (every release hands room over at
        once), so a request that fits is never put behind the queue."""
        if self._fits(pool):
            self._take(pool)
            return
        key = (pool, flow)
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append(granted)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(granted)
        except BaseException as error:
            if granted.done() and not granted.cancelled():
                self.release(pool)  # it came just as the caller gave up: pass it on
            else:
                granted.cancel()
                self._discard(key, granted)
            if isinstance(error, TimeoutError):
                raise NoWorker(f"no worker of this machine came free for "
                               f"{pool.sandbox.function.logical_id} within {timeout:g} s "
                               f"({pool.workers} per function, {self.limit} in all: python -m "
                               "local_api serve --max-workers / --max-live-workers)") from None
            raise

    def release(self, pool: FunctionPool) -> None:
        """Give back a worker held by `pool` and hand the room to the next flow in turn."""
        self.busy -= 1
        pool.busy -= 1
        self._dispatch()

    def _discard(self, key: tuple[FunctionPool, str], granted: asyncio.Future[None]) -> None:
        queue = self._waiting.get(key)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(granted)
            if not queue:
                del self._waiting[key]

    def _dispatch(self) -> None:
        """While there is room: the first flow in turn order whose function is under its share
        gets a worker for its oldest request, and goes to the back of the order."""
        while self.busy < self.limit and self._waiting:
            for key in list(self._waiting):
                queue = self._waiting.pop(key)
                while queue and queue[0].done():
                    queue.popleft()
                if not queue:
                    continue
                if key[0].busy >= key[0].workers:
                    self._waiting[key] = queue  # its function is at its share: keeps its turn
                    continue
                granted = queue.popleft()
                if queue:
                    self._waiting[key] = queue  # to the back of the turn order
                self._take(key[0])
                granted.set_result(None)
                break
            else:
                return

    async def make_room(self) -> None:
        """Before a worker starts: while `limit` are alive, stop the idle worker that has
        waited longest. There is always one: busy workers and starts are at most `limit`, this
        start among them. The caller then counts its start in `starting`."""
        while self.live() >= self.limit:
            waiting = [(since, index) for index, pool in enumerate(self.pools)
                       if (since := pool.oldest_idle()) is not None]
            if not waiting:
                return
            pool = self.pools[min(waiting)[1]]
            self.evicted += 1
            LOG.info("stopping an idle %s worker: the local API holds at most %d workers",
                     pool.sandbox.function.logical_id, self.limit)
            await pool.stop_oldest_idle()


class FunctionPool:
    """A function's execution environments (workers) under Lambda's concurrency rules.

    - At most `concurrency` invocations at once (the function's reserved concurrency, or the
      account's limit); one more is refused at once with `Throttled`, never queued.
    - At most `workers` of them hold a worker of this machine at once (and, with the shared
      `budget`, at most its limit over every function): the others wait for theirs in turn
      (WorkerBudget), bounded by their caller's time.
    - An invocation runs to its end or to the function's Timeout, whoever stopped waiting for it.
    - A worker idle for `idle_timeout` seconds is stopped (Lambda reclaims idle environments).
    - Workers start on the function's first invocation, never before.
    """

    def __init__(self, sandbox: Sandbox, concurrency: int = ACCOUNT_CONCURRENCY,
                 idle_timeout: float = IDLE_TIMEOUT_S, budget: WorkerBudget | None = None,
                 workers: int = MAX_WORKERS, logs: FunctionLogs | None = None) -> None:
        self.sandbox = sandbox
        self.logs = logs or FunctionLogs()  # where its workers' log lines go
        self.budget = budget if budget is not None else WorkerBudget()
        self.budget.pools.append(self)
        self.concurrency = concurrency
        self.workers = max(1, min(workers, concurrency))
        self.idle_timeout = idle_timeout
        self.running = 0  # units of concurrency held (invocations admitted by Lambda)
        self.busy = 0  # of them, those holding a worker (WorkerBudget)
        self.started = 0  # workers started (cold starts) since the pool was made
        self._idle: list[tuple[Worker, float]] = []  # with the time each came free
        self._all: set[Worker] = set()
        self._reaper: asyncio.Task[None] | None = None

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def alive(self) -> int:
        """Its workers alive, busy or idle."""
        return len(self._all)

    def oldest_idle(self) -> float | None:
        """When (time.monotonic) its longest-idle worker came free; None when none is idle."""
        return self._idle[0][1] if self._idle else None

    async def stop_oldest_idle(self) -> None:
        """Stop its longest-idle worker (there must be one: oldest_idle() is not None)."""
        worker, _ = self._idle.pop(0)
        self._all.discard(worker)
        await worker.stop()

    def reserve(self) -> Reservation:
        """One unit of concurrency, or Throttled when all `concurrency` units are in use."""
        if self.running >= self.concurrency:
            raise Throttled(f"{self.sandbox.function.logical_id} is at its concurrency limit "
                            f"({self.concurrency})")
        self.running += 1
        return Reservation(self)

    async def admit(self, reservation: Reservation, timeout: float, flow: str = "") -> None:
        """Wait (at most `timeout` s) for one of this machine's workers for the reservation's
        invocation, in the turn of `flow` (a model's name where the function serves several);
        NoWorker past it. Nothing to do when it already holds one."""
        if not reservation.granted:
            await self.budget.acquire(self, flow, timeout)
            reservation.granted = True

    def release(self, reservation: Reservation) -> None:
        """Give back a unit of concurrency and its worker (once; later calls do nothing)."""
        if reservation.granted:
            reservation.granted = False
            self.budget.release(self)
        if not reservation.released:
            reservation.released = True
            self.running -= 1

    async def run(self, reservation: Reservation, event: dict[str, Any],
                  request_id: str | None = None) -> str:
        """Run one event on an idle worker or a new one; the handler's answer as JSON. Waits
        for a worker first (at most the function's Timeout) unless admit() already got one.
        The reservation is released when the invocation ends, however it ends."""
        try:
            event_json = json.dumps(event)
            size = len(event_json.encode())
            if size > REQUEST_LIMIT:
                raise RequestTooLarge(f"{size} bytes > {REQUEST_LIMIT}")
            await self.admit(reservation, self.sandbox.function.timeout)
            self._start_reaper()
            worker = self._take_idle() or await self._start()
            try:
                return await worker.invoke(event_json, request_id or str(uuid.uuid4()),
                                           self.sandbox.function.timeout)
            finally:
                if worker.alive:
                    self._idle.append((worker, time.monotonic()))
                else:
                    self._all.discard(worker)
        finally:
            self.release(reservation)

    async def invoke(self, event: dict[str, Any], request_id: str | None = None) -> str:
        """Reserve and run in one step (Throttled when the function is at its limit)."""
        return await self.run(self.reserve(), event, request_id)

    def _take_idle(self) -> Worker | None:
        """The most recently used idle worker still running (the warmest), if any."""
        while self._idle:
            worker, _ = self._idle.pop()
            if worker.alive:
                return worker
            self._all.discard(worker)
        return None

    async def _start(self) -> Worker:
        await self.budget.make_room()
        self.budget.starting += 1
        try:
            self.started += 1
            worker = await Worker.start(
                self.sandbox, f"{self.sandbox.function.logical_id} worker {self.started}",
                self.logs)
        finally:
            self.budget.starting -= 1
        self._all.add(worker)
        return worker

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())

    async def _reap_idle(self) -> None:
        """Stop the workers idle for `idle_timeout` seconds, until none is left."""
        while self._idle or self.running:
            await asyncio.sleep(min(self.idle_timeout / 4, 15.0))
            now = time.monotonic()
            expired = [worker for worker, since in self._idle
                       if now - since >= self.idle_timeout]
            if not expired:
                continue
            self._idle = [(worker, since) for worker, since in self._idle
                          if worker not in expired]
            LOG.info("reaping %d idle %s worker(s) (idle %.0f s or more)", len(expired),
                     self.sandbox.function.logical_id, self.idle_timeout)
            await asyncio.gather(*(worker.stop() for worker in expired))
            self._all.difference_update(expired)

    async def close(self) -> None:
        """Stop every worker, busy or idle."""
        if self._reaper is not None:
            self._reaper.cancel()
        if self._all:
            LOG.info("stopping %d %s worker(s)", len(self._all), self.sandbox.function.logical_id)
        await asyncio.gather(*(worker.stop() for worker in self._all))
        self._all.clear()
        self._idle.clear()
