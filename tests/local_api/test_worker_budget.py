"""This machine's worker budget (local_api.worker.WorkerBudget) without processes: who waits,
who is throttled, and in which order the waiting get a worker (no process is started here: the
pools' grants are what is checked)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import SimpleNamespace
from typing import Any

import pytest

from local_api.worker import FunctionPool, NoWorker, Throttled, WorkerBudget


def pool(name: str, budget: WorkerBudget, workers: int, concurrency: int = 1000) -> FunctionPool:
    function = SimpleNamespace(logical_id=name, timeout=3)
    return FunctionPool(SimpleNamespace(function=function), concurrency,  # type: ignore[arg-type]
                        budget=budget, workers=workers)


def run(scenario: Coroutine[Any, Any, Any]) -> Any:
    """asyncio.run in a thread of its own (a test session may already run an event loop)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = asyncio.run(scenario)
        except BaseException as error:  # raised again in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def test_past_the_reserved_concurrency_is_throttled_past_the_workers_waits() -> None:
    async def scenario() -> None:
        budget = WorkerBudget(8)
        limited = pool("Limited", budget, workers=4, concurrency=2)
        assert limited.workers == 2  # never more workers than Lambda would run
        first, second = limited.reserve(), limited.reserve()
        with pytest.raises(Throttled):
            limited.reserve()
        await limited.admit(first, 1)
        await limited.admit(second, 1)
        limited.release(first)
        limited.reserve()  # the unit came back

        machine = pool("Busy", budget, workers=1)
        held, waiting = machine.reserve(), machine.reserve()  # Lambda admits both
        await machine.admit(held, 1)
        task = asyncio.ensure_future(machine.admit(waiting, 2))
        await asyncio.sleep(0.05)
        assert not task.done() and budget.waiting() == 1  # it waits for the busy worker
        machine.release(held)
        await asyncio.wait_for(task, 1)
        assert waiting.granted and machine.busy == 1

        late = machine.reserve()
        with pytest.raises(NoWorker, match=r"within 0\.1 s"):
            await machine.admit(late, 0.1)
        assert budget.waiting() == 0 and machine.busy == 1  # a timed-out wait holds nothing

    run(scenario())


def test_the_waiting_take_turns_by_flow_so_a_burst_does_not_starve_another_model() -> None:
    """One worker, a burst of ten requests for model a queued first, then one for model b:
    b is served second, not eleventh; within a flow the order is first come, first served."""
    async def scenario() -> list[str]:
        budget = WorkerBudget(4)
        server = pool("Server", budget, workers=1)
        served: list[str] = []
        holder = server.reserve()
        await server.admit(holder, 1)

        async def request(flow: str, index: int) -> None:
            reservation = server.reserve()
            await server.admit(reservation, 5, flow)
            served.append(f"{flow}{index}")
            await asyncio.sleep(0)
            server.release(reservation)

        tasks = [asyncio.ensure_future(request("a", i)) for i in range(10)]
        await asyncio.sleep(0.01)
        tasks.append(asyncio.ensure_future(request("b", 0)))
        await asyncio.sleep(0.01)
        server.release(holder)
        await asyncio.gather(*tasks)
        return served

    served = run(scenario())
    assert served[:3] == ["a0", "b0", "a1"], served
    assert [name for name in served if name.startswith("a")] == [f"a{i}" for i in range(10)]


def test_a_function_at_its_share_leaves_the_rest_of_the_budget_to_others() -> None:
    """Two workers per function, three in all: a burst on one function holds two; another
    function gets the third at once, without waiting behind the burst."""
    async def scenario() -> dict[str, Any]:
        budget = WorkerBudget(3)
        burst, other = pool("Burst", budget, workers=2), pool("Other", budget, workers=2)
        held = [burst.reserve() for _ in range(2)]
        for reservation in held:
            await burst.admit(reservation, 1)
        queued = [asyncio.ensure_future(burst.admit(burst.reserve(), 2)) for _ in range(5)]
        await asyncio.sleep(0.01)
        mine = other.reserve()
        await asyncio.wait_for(other.admit(mine, 1), 0.1)  # at once
        for task in queued:
            task.cancel()
        await asyncio.gather(*queued, return_exceptions=True)
        return {"burst": burst.busy, "other": other.busy, "waiting": budget.waiting()}

    assert run(scenario()) == {"burst": 2, "other": 1, "waiting": 0}
