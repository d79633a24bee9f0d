"""A per-request hook: rows predicted per model and output class, as a CloudWatch metric.

`PredictedRows` (Count), dimensions `model` and `class`, written in CloudWatch's embedded
metric format as Powertools' `single_metric` writes it, when the pipeline flushes (after each
API request; after each chunk of a batch job), so a day of traffic reads as a class mix per model in
CloudWatch, from the API and batch alike. A row's class is, in the first of these that the
answer holds: an integer output of one value per row (named by the model's labels when it has
them), a BYTES output of one string per row, or the largest score of a float output of one
score per class and row; else (a regression) "-". At most MAX_CLASSES classes per model are
told apart (the rest count as "other"): each one is a CloudWatch metric, billed.

The classes are counted on the arrays (`class_counts`: numpy's unique / bincount), not row by
row in Python: a batch chunk (.npy) is one exchange of tens of thousands of rows, and a Python
step per row there cost more than the model run (docs/performance.md, "Batch").
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import orjson

from model_api.pipeline import Exchange, Hook

METRIC = "PredictedRows"
# The template's POWERTOOLS_METRICS_NAMESPACE, for a process that has none (a batch job).
DEFAULT_NAMESPACE = "ServerlessModelApi"
MAX_CLASSES = 50
NO_CLASS = "-"
OTHER = "other"
MAX_CLASS_CHARS = 64
FEW_ROWS = 64  # an exchange of at most this many rows is counted row by row (faster there)


IDS, NAMES, SCORES = "ids", "names", "scores"


def class_output(exchange: Exchange) -> tuple[str, np.ndarray] | None:
    """The first output that says each row's class, and how: IDS (class ids [rows], integers),
    NAMES (class names [rows], text) or SCORES (per-class scores [rows, classes > 1], floats);
    None when no output does."""
    for spec in exchange.manifest.outputs:
        array = exchange.results.get(spec.name)
        if array is None or array.shape[:1] != (exchange.rows,):
            continue
        if array.ndim == 1 and array.dtype.kind in "iu":
            return IDS, array
        if array.ndim == 1 and array.dtype.kind in "OUS":
            return NAMES, array
        if array.ndim == 2 and array.shape[1] > 1 and array.dtype.kind == "f":
            return SCORES, array
    return None


def _label(labels: tuple[str, ...] | list[str], i: int) -> str:
    return labels[i] if 0 <= i < len(labels) else str(i)


def row_classes(exchange: Exchange) -> list[str]:
    """The predicted class of each of the exchange's rows (see the module's docstring):
    `exchange.rows` names, or [NO_CLASS] * rows for an answer with no class output."""
    found = class_output(exchange)
    labels = exchange.manifest.labels or ()
    if found is None:
        return [NO_CLASS] * exchange.rows
    kind, array = found
    if kind == NAMES:
        return [str(value)[:MAX_CLASS_CHARS] for value in array.tolist()]
    ids = array if kind == IDS else np.argmax(array, axis=1)
    return [_label(labels, i) for i in ids.tolist()]


def class_counts(exchange: Exchange) -> Counter[str]:
    """Rows per predicted class of the exchange: `Counter(row_classes(exchange))`, counted on
    the arrays (one numpy pass over the class output), not row by row; an exchange of a few
    rows (a JSON Lines record's) row by row, which costs less there than numpy's calls."""
    rows = exchange.rows
    if rows <= FEW_ROWS:
        return Counter(row_classes(exchange))
    found = class_output(exchange)
    if found is None:  # a regression: every row is NO_CLASS (not a list of `rows` names)
        return Counter({NO_CLASS: rows}) if rows else Counter()
    kind, array = found
    labels = exchange.manifest.labels or ()
    if kind == SCORES:
        counts = np.bincount(np.argmax(array, axis=1), minlength=array.shape[1])
        return _named((_label(labels, i), count) for i, count in enumerate(counts.tolist())
                      if count)
    try:
        values, counts = np.unique(array, return_counts=True)
    except TypeError:  # objects that do not sort (mixed types): one by one
        return Counter(row_classes(exchange))
    pairs = zip(values.tolist(), counts.tolist(), strict=True)
    if kind == IDS:
        return _named((_label(labels, i), count) for i, count in pairs)
    return _named((str(value)[:MAX_CLASS_CHARS], count) for value, count in pairs)


def _named(pairs: Iterable[tuple[str, int]]) -> Counter[str]:
    """(class name, rows) pairs summed per name (two values may share a name: a clipped one)."""
    counted: Counter[str] = Counter()
    for name, rows in pairs:
        counted[name] += rows
    return counted


class ClassCounts(Hook):
    """Counts rows per (model, class) after the model; emits them as PredictedRows on flush."""

    name = "class_counts"

    def __init__(self, namespace: str | None = None) -> None:
        self.namespace = (namespace or os.environ.get("POWERTOOLS_METRICS_NAMESPACE")
                          or DEFAULT_NAMESPACE)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.seen: dict[str, set[str]] = {}
        self._template: dict[str, Any] | None = None

    def after_model(self, exchange: Exchange) -> None:
        self._add(exchange.manifest.name, class_counts(exchange))

    def after_model_many(self, exchanges: Sequence[Exchange]) -> None:
        """after_model on each, in order, the classes of the small exchanges (a JSON Lines
        batch job's records) counted into one Counter per model first, in the order they are
        first seen, so that the classes kept apart (MAX_CLASSES) are the same."""
        pending: dict[str, Counter[str]] = {}
        for exchange in exchanges:
            if exchange.rows > FEW_ROWS:  # counted on its arrays, in its turn
                self._add_all(pending)
                pending = {}
                self.after_model(exchange)
                continue
            model = exchange.manifest.name
            counted = pending.get(model)
            if counted is None:
                counted = pending[model] = Counter()
            counted.update(row_classes(exchange))
        self._add_all(pending)

    def _add_all(self, pending: dict[str, Counter[str]]) -> None:
        for model, counted in pending.items():
            self._add(model, counted)

    def _add(self, model: str, counted: Counter[str]) -> None:
        seen = self.seen.setdefault(model, set())
        for name, rows in counted.items():
            if name not in seen and len(seen) >= MAX_CLASSES:
                name = OTHER
            else:
                seen.add(name)
            self.counts[model, name] += rows

    def flush(self) -> None:
        """One PredictedRows line per (model, class) counted since the last flush, printed
        together: each the line Powertools' single_metric writes (the template below), with
        its own model, class, rows and time."""
        counts, self.counts = self.counts, Counter()
        if not counts:
            return
        if self._template is None:
            self._template = _template(self.namespace)
        template = self._template
        aws = {"Timestamp": int(time.time() * 1000),
               "CloudWatchMetrics": template["_aws"]["CloudWatchMetrics"]}
        lines = b"\n".join(
            orjson.dumps({**template, "_aws": aws, "model": model, "class": name,
                          METRIC: [float(rows)]})
            for (model, name), rows in sorted(counts.items()))
        print(lines.decode())


def _template(namespace: str) -> dict[str, Any]:
    """A PredictedRows line as Powertools' single_metric makes it in this process (namespace,
    unit, dimensions in order, the `service` dimension where POWERTOOLS_SERVICE_NAME is set),
    made once per hook: single_metric itself cost ~35 us a line, and a flush writes one line
    per class after every request (10 for digits-cnn)."""
    from aws_lambda_powertools.metrics import MetricUnit
    from aws_lambda_powertools.metrics.base import SingleMetric

    metric = SingleMetric(namespace=namespace)
    metric.add_metric(name=METRIC, unit=MetricUnit.Count, value=0)
    metric.add_dimension(name="model", value="-")
    metric.add_dimension(name="class", value="-")
    return metric.serialize_metric_set()
