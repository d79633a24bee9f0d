"""One candidate's record: its file, its figures against the parent, and the rules it failed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

ROW_COUNTS = (1, 1024)


@dataclass
class Result:
    """One candidate: its file, its figures against the parent, and the rules it failed."""

    method: str
    model_bytes: bytes | None = None
    error: str | None = None
    size_ratio: float = math.nan
    latency_ms: dict[int, tuple[float, float]] = field(default_factory=dict)  # rows: parent, cand
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # split: candidate's
    parent_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # the same run's
    agreement: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def latency_ratio(self, rows: int) -> float:
        """Parent latency / candidate latency at `rows` rows: above 1 is faster."""
        parent, candidate = self.latency_ms.get(rows, (math.nan, math.nan))
        return parent / candidate

    @property
    def metric_delta(self) -> dict[str, dict[str, float]]:
        """Candidate minus parent, per split and metric (no row counts)."""
        return {split: {key: value - self.parent_metrics[split][key]
                        for key, value in found.items() if key != "rows"}
                for split, found in self.metrics.items()}

    def relative_change(self, split: str, key: str) -> float:
        """(candidate - parent) / |parent| of one metric: R² and MAE are judged this way."""
        parent = self.parent_metrics[split][key]
        return (self.metrics[split][key] - parent) / abs(parent) if parent else math.inf

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failures

    @property
    def score(self) -> float:
        """Geometric mean of the size and latency ratios: which passing candidate is best."""
        ratios = [self.size_ratio, *(self.latency_ratio(rows) for rows in ROW_COUNTS)]
        return math.prod(ratios) ** (1 / len(ratios))


def first_line(exc: BaseException) -> str:
    """An exception's message on one line, at most 160 characters, for a table cell."""
    return " ".join((str(exc) or repr(exc)).split())[:160]
