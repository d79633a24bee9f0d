"""The Markdown table `make optimize` prints, one row per candidate."""

from __future__ import annotations

from model_registry.optimize.result import Result

# The latency columns hold the candidate's median, then its parent's (timed in the same run)
COLUMNS = ("method", "size KB", "smaller", "1 row ms new/parent", "faster",
           "1,024 rows ms new/parent", "faster", "Δ test", "Δ whole", "agree", "max|Δ|",
           "verdict")
WIDTHS = (15, 7, 7, 19, 6, 24, 6, 20, 20, 7, 7, 0)


def table_row(cells: tuple[str, ...]) -> str:
    """One Markdown table row, padded to WIDTHS."""
    return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, WIDTHS, strict=True)) + " |"


def table_header() -> str:
    """The table's header and rule lines."""
    rule = "|" + "|".join("-" * (w + 2) for w in WIDTHS[:-1]) + "|---------|"
    return table_row(COLUMNS) + "\n" + rule


def delta_text(result: Result, task: str | None, split: str) -> str:
    """A metric change for the table: pp of accuracy, or % relative for R² and MAE."""
    deltas = result.metric_delta.get(split)
    if not deltas:
        return "-"
    if task == "classification":
        return f"{deltas['accuracy'] * 100:+.2f} pp"
    return " ".join(f"{key} {result.relative_change(split, key):+.2%}" for key in deltas)


def describe(result: Result, task: str | None) -> str:
    """The result as one row of the table."""
    if result.model_bytes is None or not result.latency_ms:
        size = f"{len(result.model_bytes) / 1024:.1f}" if result.model_bytes else "-"
        return table_row((result.method, size, *["-"] * 9, f"FAIL {result.error}"))
    (p1, c1), (pk, ck) = result.latency_ms[1], result.latency_ms[1024]
    verdict = "PASS" if result.passed else "FAIL " + "; ".join(result.failures)
    agree = result.agreement.get("label_agreement")
    return table_row((
        result.method, f"{len(result.model_bytes) / 1024:.1f}", f"{result.size_ratio:.2f}x",
        f"{c1:.4f}/{p1:.4f}", f"{result.latency_ratio(1):.2f}x",
        f"{ck:.3f}/{pk:.3f}", f"{result.latency_ratio(1024):.2f}x",
        delta_text(result, task, "test"), delta_text(result, task, "full_dataset"),
        "-" if agree is None else f"{agree:.1%}",
        f"{result.agreement.get('max_abs_diff', 0):.2g}", verdict))
