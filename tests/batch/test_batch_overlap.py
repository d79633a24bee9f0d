"""The bounded pipeline that overlaps a job's reading, work and writing (batch.overlap)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from batch.overlap import overlapped


def test_every_item_is_written_once_in_order_while_the_stages_overlap() -> None:
    threads: dict[str, set[str]] = {"read": set(), "work": set(), "write": set()}
    written: list[int] = []

    def chunks() -> Iterator[int]:
        for n in range(50):
            threads["read"].add(threading.current_thread().name)
            time.sleep(0.001)
            yield n

    def work(n: int) -> int:
        threads["work"].add(threading.current_thread().name)
        return n * 10

    def write(n: int) -> None:
        threads["write"].add(threading.current_thread().name)
        time.sleep(0.001)
        written.append(n)

    overlapped(chunks(), work, write, name="t")
    assert written == [n * 10 for n in range(50)]
    assert threads["work"] == {threading.current_thread().name}
    assert threads["read"] == {"t-reader"} and threads["write"] == {"t-writer"}


def test_a_read_error_is_raised_after_the_chunks_before_it_are_written() -> None:
    written: list[int] = []

    def chunks() -> Iterator[int]:
        yield 1
        yield 2
        raise ConnectionError("S3 went away")

    with pytest.raises(ConnectionError, match="S3 went away"):
        overlapped(chunks(), lambda n: n, written.append)
    assert written == [1, 2]


def test_a_work_error_is_raised_after_the_chunks_before_it_are_written() -> None:
    written: list[int] = []

    def work(n: int) -> int:
        if n == 3:
            raise ValueError("bad chunk")
        return n

    with pytest.raises(ValueError, match="bad chunk"):
        overlapped(iter(range(10)), work, written.append)
    assert written == [0, 1, 2]


def test_a_write_error_stops_the_job_and_nothing_after_it_is_written() -> None:
    written: list[int] = []
    worked: list[int] = []

    def write(n: int) -> None:
        if n == 2:
            raise PermissionError("AccessDenied")
        written.append(n)

    def work(n: int) -> int:
        worked.append(n)
        return n

    with pytest.raises(PermissionError, match="AccessDenied"):
        overlapped(iter(range(1000)), work, write)
    assert written == [0, 1]
    assert len(worked) < 10  # bounded: the reader and the work stopped soon after


def test_a_base_exception_in_the_work_stops_the_reader() -> None:
    class Stop(BaseException):
        pass

    read: list[int] = []

    def chunks() -> Iterator[int]:
        for n in range(1000):
            read.append(n)
            yield n

    def work(n: int) -> int:
        if n == 1:
            raise Stop
        return n

    written: list[int] = []
    with pytest.raises(Stop):
        overlapped(chunks(), work, written.append)
    time.sleep(0.3)
    assert written == [0] and len(read) < 10
