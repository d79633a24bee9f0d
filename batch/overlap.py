"""Overlapping a job's three stages: reading the next chunk, running the model, writing the last.

A job's chunk goes through reading (S3 GETs, splitting lines), work (decoding, the model runs,
encoding) and writing (its part, then the checkpoint). Done one after the other, the model
waits on S3 and S3 on the model. `overlapped` runs them as a bounded pipeline of three threads:
a reader at most `depth` chunks ahead, the work in the calling thread, and a writer that writes
the finished chunks in their order, one at a time, so a checkpoint still follows its part and
names only chunks whose parts are written (resume and exactly-once are as in a sequential
job). onnxruntime, S3's sockets and numpy's copies release the GIL, so the stages overlap
even in one Python process. Memory stays bounded: at most 2 x `depth` + 3 chunks exist at once
(one being read, `depth` read, one in work, `depth` done, one being written).

Errors: the first error of any stage is raised in the calling thread. The chunks worked before
a read or work error are written first (as a sequential job would have written them); a write
error stops the job at once. The calling thread's own exceptions (Terminated, the SIGTERM of a
spot reclaim, included) stop the reader and let the writer finish the chunk it writes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")
POLL_SECONDS = 0.1  # how often a blocked stage looks whether another one failed


class _End:
    """The end of a stage's items (or, with `error`, its failure)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class _Stage[T]:
    """A bounded queue between two stages that either side can close because of a failure."""

    def __init__(self, depth: int, stop: threading.Event) -> None:
        self.items: queue.Queue[T | _End] = queue.Queue(maxsize=depth)
        self.stop = stop

    def put(self, item: T | _End) -> bool:
        """Hand `item` on; False when the pipeline stopped meanwhile."""
        while not self.stop.is_set():
            try:
                self.items.put(item, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> T | _End:
        return self.items.get()


def overlapped[T, U](chunks: Iterator[T], work: Callable[[T], U], write: Callable[[U], None],
               depth: int = 1, name: str = "job") -> None:
    """Run `work` on every item of `chunks` in this thread, with `chunks` read in a thread of
    its own (at most `depth` items ahead) and each result passed to `write`, in order, in a
    third thread (at most `depth` results waiting). Returns once every result is written;
    raises the first error of any of the three (see the module's docstring)."""
    stop_reading, stop_writing = threading.Event(), threading.Event()
    read: _Stage[T] = _Stage(depth, stop_reading)
    done: _Stage[U] = _Stage(depth, stop_writing)
    write_error: list[BaseException] = []

    def reader() -> None:
        try:
            for chunk in chunks:
                if not read.put(chunk):
                    return
        except BaseException as error:  # handed to the calling thread, raised there
            read.put(_End(error))
            return
        read.put(_End())

    def writer() -> None:
        while not isinstance(item := done.get(), _End):
            try:
                write(item)
            except BaseException as error:
                write_error.append(error)
                stop_writing.set()
                return

    threads = [threading.Thread(target=reader, name=f"{name}-reader", daemon=True),
               threading.Thread(target=writer, name=f"{name}-writer", daemon=True)]
    for thread in threads:
        thread.start()
    failure: BaseException | None = None
    try:
        while not isinstance(item := read.get(), _End):
            if not done.put(work(item)):
                break  # the writer failed: its error is raised below
        else:
            failure = item.error
    except BaseException as error:
        failure = error
    finally:
        stop_reading.set()
        # What was worked gets written (unless the writer failed), then the writer ends.
        while not stop_writing.is_set():
            try:
                done.items.put(_End(), timeout=POLL_SECONDS)
                break
            except queue.Full:
                continue
        threads[1].join()
    if write_error:
        raise write_error[0] from failure
    if failure is not None:
        raise failure
