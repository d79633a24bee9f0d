"""The gate: what a candidate must show to be published, and the rules a measured one fails."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from model_registry.optimize.result import ROW_COUNTS, Result


@dataclass(frozen=True)
class Gate:
    """What a candidate must show to be published (defaults: issue 15's gate, plus slowdown)."""

    max_accuracy_loss_pp: float = 0.5  # percentage points of accuracy, held-back and whole
    max_relative_regression: float = 0.01  # R² lower or MAE higher by at most this fraction
    min_speedup: float = 1.2  # parent latency / candidate latency, at 1 or at 1,024 rows
    min_size_ratio: float = 2.0  # parent bytes / candidate bytes
    max_slowdown: float = 1.25  # candidate latency / parent latency, at 1 and at 1,024 rows
    # A speed-up counts only at a row count where the parent timed against a second session of
    # itself (the control) came out within this factor of 1: else the machine was too noisy.
    max_control_deviation: float = 1.1


def judge(result: Result, task: str | None, gate: Gate,
          control: Mapping[int, float] | None = None) -> list[str]:
    """The rules `result` fails (empty: it passes); each names the figure and the threshold.
    `control`: the parent's latency ratio against itself by row count (1.0 when absent)."""
    failures = []
    if not result.metric_delta:
        failures.append("metric: not measured (no rows with targets; give --rows)")
    for split, deltas in result.metric_delta.items():
        if task == "classification":
            loss = -deltas["accuracy"] * 100
            if not loss <= gate.max_accuracy_loss_pp:
                failures.append(f"metric: accuracy {-loss:+.2f} pp on {split} "
                                f"(loss > {gate.max_accuracy_loss_pp} pp)")
        else:  # R² lower or MAE higher is worse
            worse = {"r2": -result.relative_change(split, "r2"),
                     "mae": result.relative_change(split, "mae")}
            for key, change in worse.items():
                if not change <= gate.max_relative_regression:
                    failures.append(f"metric: {key} {change:+.1%} worse on {split} "
                                    f"(> {gate.max_relative_regression:.0%})")
    speedups = [result.latency_ratio(rows) for rows in ROW_COUNTS]
    noisy = {rows: ratio for rows, ratio in (control or {}).items()
             if not 1 / gate.max_control_deviation <= ratio <= gate.max_control_deviation}
    faster = any(speedup >= gate.min_speedup and rows not in noisy
                 for rows, speedup in zip(ROW_COUNTS, speedups, strict=True))
    if not (faster or result.size_ratio >= gate.min_size_ratio):
        uncounted = "".join(f"; not counted at {rows:,} rows: the parent timed {ratio:.2f}x "
                            "against itself" for rows, ratio in sorted(noisy.items()))
        failures.append(f"benefit: {speedups[0]:.2f}x/{speedups[1]:.2f}x faster at "
                        f"{ROW_COUNTS[0]}/{ROW_COUNTS[1]:,} rows, {result.size_ratio:.2f}x "
                        f"smaller (needs >= {gate.min_speedup}x faster or "
                        f">= {gate.min_size_ratio}x smaller{uncounted})")
    for rows, speedup in zip(ROW_COUNTS, speedups, strict=True):
        if not speedup >= 1 / gate.max_slowdown:
            failures.append(f"slower: {1 / speedup:.2f}x the parent's time at {rows:,} "
                            f"row{'s' if rows > 1 else ''} "
                            f"(> {gate.max_slowdown}x)")
    return failures
