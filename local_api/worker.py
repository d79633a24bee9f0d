"""Run a function as Lambda does: worker processes, one invocation at a time each.

A `FunctionPool` keeps a function's warm workers (processes running local_api/bootstrap.py with
the function's sys.path and environment). An invocation takes an idle worker or starts a new
one (a cold start, logged) while fewer than `max_workers` are busy; beyond that it waits for one
to come free, in arrival order (Lambda would add execution environments up to its concurrency
limit; locally a small cap keeps memory in check). Lambda's own limits apply here: the 6 MB
request and response payloads, the function's Timeout (the worker is killed, as Lambda resets
the sandbox), and an init or handler failure is the invocation's error document.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from local_api.sandbox import Sandbox

LOG = logging.getLogger(__name__)

BOOTSTRAP = Path(__file__).with_name("bootstrap.py")
# Lambda's synchronous invoke payload limits, in bytes (the response one is 100 bytes larger).
REQUEST_LIMIT = 6 * 1024 * 1024
RESPONSE_LIMIT = 6 * 1024 * 1024 + 100
INIT_TIMEOUT_S = 10.0  # Lambda's limit on a function's init phase
STOP_GRACE_S = 2.0
MAX_WORKERS = 4
# The pipe must hold an answer over the response limit, so that it can be refused as Lambda does.
_READ_LIMIT = 4 * RESPONSE_LIMIT


class FunctionError(Exception):
    """The function failed (Lambda's X-Amz-Function-Error): `payload` is its error document."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(f"{payload.get('errorType')}: {payload.get('errorMessage')}")
        self.payload = payload


class RequestTooLarge(Exception):
    """Lambda refused the event itself (RequestEntityTooLargeException): the function never ran."""


class Worker:
    """One worker process: the equivalent of one Lambda execution environment."""

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    @classmethod
    async def start(cls, sandbox: Sandbox, name: str) -> Worker:
        """Start the process and wait for its init; a failed init is a FunctionError."""
        config = json.dumps({"python_path": list(sandbox.python_path)})
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", "-u", str(BOOTSTRAP), config,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None,
            env=sandbox.environment, limit=_READ_LIMIT)
        worker = cls(process, name)
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


def _exited(status: int) -> dict[str, Any]:
    return {"errorType": "Runtime.ExitError",
            "errorMessage": f"Runtime exited with error: exit status {status}"}


def _too_large(size: int) -> dict[str, Any]:
    return {"errorType": "Function.ResponseSizeTooLarge",
            "errorMessage": f"Response payload size ({size} bytes) exceeded maximum allowed "
                            f"payload size ({RESPONSE_LIMIT} bytes)."}


class FunctionPool:
    """The warm workers of one function; at most `max_workers` invocations run at once."""

    def __init__(self, sandbox: Sandbox, max_workers: int = MAX_WORKERS) -> None:
        self.sandbox = sandbox
        self._slots = asyncio.Semaphore(max_workers)
        self._idle: list[Worker] = []
        self._all: set[Worker] = set()
        self._started = 0

    async def invoke(self, event: dict[str, Any], request_id: str | None = None) -> str:
        """Run one event on a free worker; the handler's answer as JSON."""
        event_json = json.dumps(event)
        if len(event_json.encode()) > REQUEST_LIMIT:
            raise RequestTooLarge(f"{len(event_json.encode())} bytes > {REQUEST_LIMIT}")
        request_id = request_id or str(uuid.uuid4())
        async with self._slots:
            worker = self._take_idle() or await self._start()
            try:
                return await worker.invoke(event_json, request_id, self.sandbox.function.timeout)
            finally:
                if worker.alive:
                    self._idle.append(worker)
                else:
                    self._all.discard(worker)

    def _take_idle(self) -> Worker | None:
        """The most recently used idle worker still running (the warmest), if any."""
        while self._idle:
            worker = self._idle.pop()
            if worker.alive:
                return worker
            self._all.discard(worker)
        return None

    async def _start(self) -> Worker:
        self._started += 1
        worker = await Worker.start(
            self.sandbox, f"{self.sandbox.function.logical_id} worker {self._started}")
        self._all.add(worker)
        return worker

    async def close(self) -> None:
        """Stop every worker, busy or idle."""
        if self._all:
            LOG.info("stopping %d %s worker(s)", len(self._all), self.sandbox.function.logical_id)
        await asyncio.gather(*(worker.stop() for worker in self._all))
        self._all.clear()
        self._idle.clear()
