"""Drift: a window of captured records against the version's baseline, per feature and for the
prediction, with the field's standard statistics (numpy only).

Numbers: the population stability index over the baseline's decile bins (PSI = sum over bins
of (w - b) * ln(w / b), shares w of the window and b of the baseline, an empty bin counted as
EMPTY_SHARE as Evidently does), drifted when PSI >= PSI_THRESHOLD. The threshold is the
credit-scoring rule (E. M. Lewis, "An Introduction to Credit Scoring", 1990; quoted at
stats.stackexchange.com/q/219822): below 0.1 no change, 0.1 to 0.25 a moderate one, above 0.25
a significant shift; we flag the significant band only, because PSI grows with sampling noise
((bins - 1) * (1/n + 1/m) on average for two samples of one distribution: about 0.08 for the
426 training rows of breast-cancer-mlp against a window of 143), and the moderate band would
flag several of 30 unchanged features in every small window. The Wasserstein distance
divided by the baseline's standard deviation (Evidently's `wasserstein` test, threshold 0.1,
its default above 1,000 reference rows) is reported beside it as `wasserstein`, from the
baseline's percentiles.
Categories (a label, a 0/1 column): the Jensen-Shannon distance (natural logarithm, as
scipy.spatial.distance.jensenshannon and Evidently compute it) between the baseline's shares
and the window's (a value the baseline never saw is one more category), drifted when it is at
least JS_THRESHOLD = 0.1, Evidently's default (evidently v0.1.50 release notes: "For larger
data with > 1000 observations in the reference dataset ... Jensen-Shannon divergence. All tests
use a threshold = 0.1 by default").

Too few rows: for two samples of one distribution, PSI over B bins is about
(1/n + 1/m) * chi-square(B - 1) (n baseline rows, m window rows; the G-test's distribution, see
the stats.stackexchange answer above). A window is compared only when it holds enough rows that
an unchanged feature reaches PSI_THRESHOLD with probability at most 0.5 %:
m >= 1 / (PSI_THRESHOLD / CHI2_9_995 - 1/n), and at least MIN_ROWS (122 rows for the 426
training rows of breast-cancer-mlp). A smaller window, or a baseline too small for any window
(n < 95), gets no statistics: the report's `status` is "insufficient_data" and its `message`
says how many rows there are and how many are needed, instead of a guess. Measured on
breast-cancer-mlp (tests/monitoring): over 200 random 426/143 splits of its data, 8 % of
windows flag one of the 30 unchanged features (0.3 % of features); with 100-row windows it
would be 52 %.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from model_api.monitoring.baseline import NUMBER, bin_index, category_labels

PSI, WASSERSTEIN, JENSEN_SHANNON = "psi", "wasserstein", "jensen_shannon"
PSI_THRESHOLD = 0.25
WASSERSTEIN_THRESHOLD = 0.1
JS_THRESHOLD = 0.1
EMPTY_SHARE = 1e-4
MIN_ROWS = 100
CHI2_9_995 = 23.589  # the 99.5th percentile of chi-square with 9 (BINS - 1) degrees of freedom
OK, INSUFFICIENT = "ok", "insufficient_data"
SOURCES = {
    PSI: "population stability index over the baseline's deciles; >= 0.25 is a significant "
         "shift (E. M. Lewis, An Introduction to Credit Scoring, 1990: < 0.1 none, 0.1-0.25 "
         "moderate, > 0.25 significant)",
    WASSERSTEIN: "Wasserstein distance / the baseline's standard deviation (Evidently's "
                 "wasserstein test; its threshold 0.1), reported, not used to flag",
    JENSEN_SHANNON: "Jensen-Shannon distance, natural log; >= 0.1 drifted (Evidently's default)",
}


def rows_needed(baseline_rows: int) -> int | None:
    """The fewest window rows compared with a baseline of `baseline_rows` rows (see the
    module's docstring); None when the baseline is too small for any window."""
    room = PSI_THRESHOLD / CHI2_9_995 - 1 / max(baseline_rows, 1)
    return None if room <= 0 else max(MIN_ROWS, math.ceil(1 / room))


def psi(baseline_counts: np.ndarray, window_counts: np.ndarray) -> float:
    """The population stability index of two count vectors over the same bins."""
    b = np.maximum(baseline_counts / max(baseline_counts.sum(), 1), EMPTY_SHARE)
    w = np.maximum(window_counts / max(window_counts.sum(), 1), EMPTY_SHARE)
    return float(np.sum((w - b) * np.log(w / b)))


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """The Jensen-Shannon distance (square root of the divergence, natural log) of two count or
    share vectors over the same categories; 0 for equal shares, at most sqrt(ln 2)."""
    p, q = p / max(p.sum(), 1e-12), q / max(q.sum(), 1e-12)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        present = a > 0
        return float(np.sum(a[present] * np.log(a[present] / m[present])))

    return float(np.sqrt(max((kl(p) + kl(q)) / 2, 0.0)))


def wasserstein(quantiles: list[float], values: np.ndarray, std: float) -> float:
    """The Wasserstein-1 distance between the baseline (its percentiles) and `values`, from the
    two quantile functions on the same grid, divided by the baseline's std (at least 0.001)."""
    grid = np.linspace(0, 1, len(quantiles))
    window = np.quantile(values, grid)
    return float(np.trapezoid(np.abs(window - np.asarray(quantiles)), grid) / max(std, 1e-3))


def compare_feature(summary: Mapping[str, Any], values: np.ndarray) -> dict[str, Any]:
    """One feature's entry: {statistic, value, threshold, drifted} and its `histogram` (the
    baseline's and the window's shares over the same bins or categories, for the console)."""
    if summary["kind"] == NUMBER:
        finite = values[np.isfinite(values)]
        edges = summary["edges"]
        baseline_counts = np.asarray(summary["counts"], dtype=np.float64)
        window_counts = np.bincount(bin_index(edges, finite),
                                    minlength=len(edges) + 1).astype(np.float64)
        value = psi(baseline_counts, window_counts)
        return {"statistic": PSI, "value": round(value, 6), "threshold": PSI_THRESHOLD,
                "drifted": bool(value >= PSI_THRESHOLD),
                "wasserstein": round(wasserstein(summary["quantiles"], finite, summary["std"]),
                                     6) if finite.size else None,
                "histogram": {"edges": edges, "baseline": _shares(baseline_counts),
                              "window": _shares(window_counts)}}
    labels = category_labels(values) if values.dtype.kind in "iuf" else \
        [str(v) for v in values.tolist()]
    categories = list(summary["categories"])
    seen = set(categories)
    categories += sorted({label for label in labels if label not in seen})
    index = {name: i for i, name in enumerate(categories)}
    baseline_counts = np.zeros(len(categories))
    baseline_counts[:len(summary["counts"])] = summary["counts"]
    window_counts = np.bincount([index[label] for label in labels],
                                minlength=len(categories)).astype(np.float64)
    value = jensen_shannon(baseline_counts, window_counts)
    return {"statistic": JENSEN_SHANNON, "value": round(value, 6), "threshold": JS_THRESHOLD,
            "drifted": bool(value >= JS_THRESHOLD),
            "histogram": {"categories": categories, "baseline": _shares(baseline_counts),
                          "window": _shares(window_counts)}}


def _shares(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return [round(float(c / total), 6) if total else 0.0 for c in counts]


def compare(baseline: Mapping[str, Any], features: Mapping[str, np.ndarray],
            prediction: np.ndarray | None, rows: int) -> dict[str, Any]:
    """The report's statistics (`status`, `features`, `predictions`, `histograms`, `message`)
    for a window of `rows` rows: its `features` values and its `prediction` values against
    `baseline` (model_api.monitoring.baseline's document)."""
    base_rows = int(baseline.get("rows", 0))
    needed = rows_needed(base_rows)
    if needed is None or rows < needed:
        short = (f"the baseline holds {base_rows} row(s); give at least "
                 f"{math.ceil(CHI2_9_995 / PSI_THRESHOLD)} training rows (make add-model ... "
                 "BASELINE=rows.npy)" if needed is None else
                 f"the window holds {rows} captured row(s); at least {needed} are needed against "
                 f"a baseline of {base_rows} rows")
        return {"status": INSUFFICIENT, "features": [], "predictions": {}, "histograms": {},
                "message": f"too few rows to compare: {short}"}
    entries, histograms = [], {}
    for name, summary in baseline["features"].items():
        if name not in features or features[name].size == 0:
            continue
        found = compare_feature(summary, features[name])
        histograms[name] = found.pop("histogram")
        if WASSERSTEIN in found:
            histograms[name][WASSERSTEIN] = found.pop(WASSERSTEIN)
        entries.append({"name": name, **found})
    predictions: dict[str, Any] = {}
    if prediction is not None and prediction.size and "prediction" in baseline:
        summary = baseline["prediction"]
        found = compare_feature(summary, prediction)
        predictions = {"output": summary["output"], **found}
    drifted = [e["name"] for e in entries if e["drifted"]]
    said = (f"; the predictions ({predictions['output']}) "
            + ("drifted" if predictions["drifted"] else "did not drift") if predictions else "")
    return {"status": OK, "features": entries, "predictions": predictions,
            "histograms": histograms,
            "message": (f"{len(drifted)} of {len(entries)} feature(s) drifted"
                        + (f": {', '.join(drifted)}" if drifted else "") + said)}
