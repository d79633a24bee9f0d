"""Progress lines in the job's log: rows done, rows/s and an ETA, every few seconds."""

from __future__ import annotations

import logging
import time
from typing import Any

LOG = logging.getLogger("batch.progress")


def finished(rows: int, rows_this_attempt: int, seconds: float) -> dict[str, Any]:
    """A finished job's progress for its record: every one of its `rows` rows done (the
    total exact), and the pace of its last attempt (`rows_this_attempt` rows in `seconds`
    seconds). A job whose rows all fit before its first record update has no other."""
    return {"rows_done": rows, "rows_total": rows, "rows_total_exact": True,
            "fraction_done": 1.0, "eta_seconds": 0.0,
            "rows_per_second": round(rows_this_attempt / max(seconds, 1e-3), 1)}


class Progress:
    """Tracks rows done and how far through the input (bytes or rows) the job is."""

    def __init__(self, total: int, done: int, rows: int, interval: float = 5.0) -> None:
        self.total, self.start_done, self.start_rows = total, done, rows
        self.interval = interval
        self.started = self.last = time.monotonic()
        self.logged: tuple[int, int] | None = None

    def snapshot(self, done: int, rows: int, unit: str) -> dict[str, Any]:
        """The job's progress for its record: rows done of rows (a JSON Lines input's total
        estimated from the bytes read until its end, `rows_total_exact` false), how far through
        the input `done` is (in `unit`: "bytes" of a JSON Lines input, "rows" of a .npy one),
        rows/s this attempt and the seconds left at that pace."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        through = (done - self.start_done) / elapsed
        # A child of an array job reads on to the end of the line its byte range cuts: up to
        # one line past its `total`, which is done, not more than done.
        left = max(self.total - done, 0)
        # A JSON Lines file's line count is known only at its end: estimated from the bytes.
        estimate = round(rows * self.total / done) if done else None
        return {"rows_done": rows, "rows_total": self.total if unit == "rows" else estimate,
                "rows_total_exact": unit == "rows" or done == self.total,
                f"input_{unit}_done": done, f"input_{unit}_total": self.total,
                "fraction_done": round(min(done / self.total, 1.0), 4) if self.total else 1.0,
                "rows_per_second": round((rows - self.start_rows) / elapsed, 1),
                "eta_seconds": round(left / through, 1) if through > 0 else None}

    def update(self, done: int, rows: int, force: bool = False) -> None:
        now = time.monotonic()
        if (not force and now - self.last < self.interval) or self.logged == (done, rows):
            return
        self.last, self.logged = now, (done, rows)
        elapsed = max(now - self.started, 1e-9)
        rate = (rows - self.start_rows) / elapsed
        fraction = min(done / self.total, 1.0) if self.total else 1.0
        through = (done - self.start_done) / elapsed
        eta = max(self.total - done, 0) / through if through > 0 else float("inf")
        LOG.info("progress: rows=%d rows/s=%.0f done=%.1f%% eta=%.0fs", rows, rate,
                 100 * fraction, eta)
