"""Progress lines in the job's log: rows done, rows/s and an ETA, every few seconds."""

from __future__ import annotations

import logging
import time

LOG = logging.getLogger("batch.progress")


class Progress:
    """Tracks rows done and how far through the input (bytes or rows) the job is."""

    def __init__(self, total: int, done: int, rows: int, interval: float = 5.0) -> None:
        self.total, self.start_done, self.start_rows = total, done, rows
        self.interval = interval
        self.started = self.last = time.monotonic()
        self.logged: tuple[int, int] | None = None

    def update(self, done: int, rows: int, force: bool = False) -> None:
        now = time.monotonic()
        if (not force and now - self.last < self.interval) or self.logged == (done, rows):
            return
        self.last, self.logged = now, (done, rows)
        elapsed = max(now - self.started, 1e-9)
        rate = (rows - self.start_rows) / elapsed
        fraction = done / self.total if self.total else 1.0
        through = (done - self.start_done) / elapsed
        eta = (self.total - done) / through if through > 0 else float("inf")
        LOG.info("progress: rows=%d rows/s=%.0f done=%.1f%% eta=%.0fs", rows, rate,
                 100 * fraction, eta)
