"""Drift reports: built from a capture store's window and a version's baseline, and kept in
the same store (the local folder, or the capture bucket) under

    monitoring/<model>/latest.json          what GET /v2/models/{model}/monitoring answers
    monitoring/<model>/<yyyy>/<mm>/<dd>/<HHMMSS>Z.json    every report, by its time

A report (JSON): {"model_name", "model_version", "window": {"start", "end", "rows"},
"features": [{"name", "statistic", "value", "threshold", "drifted"}], "predictions": {"output",
"statistic", "value", "threshold", "drifted"}, "status" ("ok" or "insufficient_data"),
"message", "created", "baseline": {"rows", "sha256"}, "statistics" (each statistic's
definition and source), "histograms" (per feature, the baseline's and the window's shares over
the same bins: the console's plot), "skipped" (inputs that cannot be compared, and why)}.
The statistics: model_api.monitoring.drift. Records of other versions than the one compared
are left out and counted in `window.other_versions`.

`make monitor MODEL=<m> [VERSION=] [SINCE=] [UNTIL=] [JSON=1]`: python -m
model_api.monitoring.reports (a table to read; JSON=1: the whole report).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from model_api.capture import store as capture_store
from model_api.capture.store import CaptureStore, FolderStore, parse_time, time_window
from model_api.manifest import MANIFEST_FILE, Manifest, load_manifest
from model_api.monitoring import baseline as baselines
from model_api.monitoring import drift
from model_api.monitoring.features import Window

PREFIX = "monitoring/"
LATEST = "latest.json"
DEFAULT_DAYS = 1  # the window when no start is given: the last day (the schedule's period)


class ReportError(ValueError):
    """No report can be made (no such version, no baseline); the message says why."""


def report_prefix(model: str) -> str:
    return f"{PREFIX}{model}/"


def latest_key(model: str) -> str:
    return f"{report_prefix(model)}{LATEST}"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build(store: CaptureStore, model: str, versions: Mapping[str, tuple[Manifest, Path]],
          version: str | None = None, since: datetime | None = None,
          until: datetime | None = None) -> dict[str, Any]:
    """The report of `model`'s captured records with since <= time < until (default: the last
    DEFAULT_DAYS day(s) up to now), against the baseline of `version` (default: the version
    most of the window's records came from, else the highest of `versions`: name -> (manifest,
    version folder)). ReportError when that version is not installed or has no baseline."""
    until = until or datetime.now(UTC)
    since = since or until - timedelta(days=DEFAULT_DAYS)
    records = list(capture_store.read(store, model, since, until))
    seen = Counter(str(r.get("version")) for r in records)
    chosen = version or (seen.most_common(1)[0][0] if seen else
                         (list(versions)[-1] if versions else None))
    if not versions:
        raise ReportError(f"model {model!r} is not exported (no version under the models "
                          "folder: `make models`, or check the name)")
    if chosen is None or chosen not in versions:
        raise ReportError(f"model {model!r} has no installed version {chosen!r} (installed: "
                          f"{', '.join(versions)})")
    manifest, folder = versions[chosen]
    try:
        baseline = baselines.read(manifest, folder)
    except baselines.BaselineError as exc:
        raise ReportError(str(exc)) from exc
    if baseline is None:
        raise ReportError(
            f"{model} version {chosen} has no baseline to compare with: it was added without "
            "rows to build one from (add it again with BASELINE=rows.npy, training rows: "
            "README 'Monitoring'), or, for a seed model, exported before baselines existed "
            "(`make models` exports it again with one)")
    window = Window(manifest)
    for record in records:
        if str(record.get("version")) == chosen:
            window.add(record)
    found = drift.compare(baseline, window.features(), window.prediction(), window.rows)
    return {"model_name": model, "model_version": chosen,
            "window": {"start": _iso(since), "end": _iso(until), "rows": window.rows,
                       "records": seen.get(chosen, 0),
                       "other_versions": sum(seen.values()) - seen.get(chosen, 0)},
            "features": found["features"], "predictions": found["predictions"],
            "status": found["status"], "message": found["message"],
            "created": _iso(datetime.now(UTC)),
            "baseline": {"rows": baseline["rows"], "source": baseline.get("source"),
                         "sha256": manifest.extra["monitoring"]["baseline"]["sha256"]},
            "statistics": drift.SOURCES, "histograms": found["histograms"],
            "skipped": window.unavailable}


def save(store: CaptureStore, report: Mapping[str, Any]) -> tuple[str, bool]:
    """Write `report` into the model's history and, unless the latest report covers a window
    that ends later (a report of an older window, a year mistyped say, never hides a newer
    one from GET .../monitoring and the console), as its latest. Returns the history key and
    whether it became the latest."""
    body = (json.dumps(report, indent=1, ensure_ascii=False) + "\n").encode()
    model = str(report["model_name"])
    created = parse_time(str(report["created"]))
    key = f"{report_prefix(model)}{created:%Y/%m/%d/%H%M%S}Z.json"
    store.put(key, body)
    current = latest(store, model)
    try:
        newer = current is not None and parse_time(str(current["window"]["end"])) > parse_time(
            str(report["window"]["end"]))
    except (KeyError, TypeError, ValueError):  # a latest of another shape: replaced
        newer = False
    if not newer:
        store.put(latest_key(model), body)
    return key, not newer


def latest(store: CaptureStore, model: str) -> dict[str, Any] | None:
    """The model's latest report, or None when none was made yet."""
    try:
        document = json.loads(store.get(latest_key(model)))
    except FileNotFoundError:
        return None
    except Exception as exc:  # S3's NoSuchKey is a botocore ClientError: no AWS import here
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code in ("NoSuchKey", "404"):
            return None
        raise
    return document if isinstance(document, dict) else None


def answer(store: CaptureStore | None, model: str) -> dict[str, Any]:
    """GET /v2/models/{model}/monitoring: the model's latest report (the caller checked the
    model exists). NotFound with a hint when no report was made yet."""
    from model_api.errors import NotFound

    report = latest(store, model) if store is not None else None
    if report is None:
        raise NotFound(f"model {model!r} has no monitoring report yet: reports are made daily "
                       "in AWS (MonitorFunction), locally with `make monitor MODEL="
                       f"{model}` once requests were captured, for a version that has a "
                       "baseline to compare with (training rows given to add-model as BASELINE "
                       "or EXAMPLES; the seed models have theirs) (README 'Monitoring')")
    return report


def erase(store: CaptureStore, model: str) -> int:
    """Delete every report of `model` (capture erasure of a whole model removes them too)."""
    keys = list(store.keys(report_prefix(model)))
    for key in keys:
        store.delete(key)
    return len(keys)


def installed_versions(models_dir: Path, model: str) -> dict[str, tuple[Manifest, Path]]:
    """The exported versions of `model` under models_dir (name -> (manifest, folder))."""
    from model_api.names import version_key

    folder = models_dir / model
    found = sorted((p for p in folder.glob(f"*/{MANIFEST_FILE}")
                    if not p.parent.name.startswith(".")),
                   key=lambda p: version_key(p.parent.name))
    return {p.parent.name: (load_manifest(p), p.parent) for p in found}


def summary(report: Mapping[str, Any]) -> str:
    """A report as a person reads it in a terminal: the window, one line per feature (the
    drifted first, then by value) and the predictions' line, with the statistic, its value and
    threshold. Every number of the report's `features` and `predictions` is in it; the
    histograms are the console's (or `--json`'s)."""
    window, base = report["window"], report.get("baseline") or {}
    lines = [f"{report['model_name']} version {report['model_version']}: {window['rows']:,} "
             f"rows in {window.get('records', 0):,} records, {window['start']} to "
             f"{window['end']}, against {base.get('rows', '?')} baseline rows"
             + (f" ({base['source']})" if base.get("source") else "")]
    if window.get("other_versions"):
        lines.append(f"  ({window['other_versions']:,} records of other versions left out)")
    rows = sorted(report.get("features", []), key=lambda f: (not f["drifted"], -f["value"]))
    predictions = report.get("predictions")
    named = [("feature " + f["name"], f) for f in rows]
    if predictions:
        named.append((f"prediction {predictions['output']}", predictions))
    # a number's Wasserstein distance / the baseline's std, reported beside its PSI
    histograms = report.get("histograms") or {}
    beside = {f"feature {f['name']}": histograms.get(f["name"], {}).get(drift.WASSERSTEIN)
              for f in rows}
    if named:
        width = max(len(name) for name, _ in named)
        lines.append(f"  {'':{width}}  {'statistic':<15} {'value':>9} {'threshold':>9}  "
                     f"{'':7}  wasserstein")
        lines += [f"  {name:{width}}  {f['statistic']:<15} {f['value']:>9.4f} "
                  f"{f['threshold']:>9g}  "
                  + ("DRIFTED" if f["drifted"] else "ok").ljust(
                      0 if beside.get(name) is None else 7)
                  + ("" if beside.get(name) is None else f"  {beside[name]:>11.4f}")
                  for name, f in named]
    lines += [f"  skipped {name}: {why}" for name, why in report.get("skipped", {}).items()]
    lines.append(f"{verdict(report)}: {report['message']}")
    return "\n".join(lines)


def verdict(report: Mapping[str, Any]) -> str:
    """A report in a word or two: "insufficient data" (its status), "DRIFT" (a
    feature or the predictions drifted) or "no drift". (`status` says only whether a
    comparison was made: "ok" for a report with drifted features too.)"""
    if report.get("status") != drift.OK:
        return "insufficient data"
    drifted = any(f["drifted"] for f in report.get("features", [])) or bool(
        (report.get("predictions") or {}).get("drifted"))
    return "DRIFT" if drifted else "no drift"


def main(argv: list[str] | None = None) -> int:
    """make monitor: compare a model's captured window (the local store) with its baseline,
    write the report as its latest and print it."""
    parser = argparse.ArgumentParser(prog="python -m model_api.monitoring.reports",
                                     description=main.__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", help="the version to compare (default: the window's)")
    parser.add_argument("--since", help="ISO 8601 time (UTC when no zone); default: a day ago")
    parser.add_argument("--until", help="ISO 8601 time; default: now")
    parser.add_argument("--dir", type=Path, default=Path(".local-api/capture"),
                        help="the capture store (make serve's)")
    parser.add_argument("--models-dir", type=Path, default=Path("build/models"))
    parser.add_argument("--json", action="store_true",
                        help="print the whole report as JSON (histograms included)")
    args = parser.parse_args(argv)
    try:
        since, until = time_window(args.since, args.until)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    now = datetime.now(UTC)
    if since is not None and until is None:
        until = now
    if until is not None and since is None:
        since = until - timedelta(days=DEFAULT_DAYS)
    if since is not None and since >= now:  # its report would hide the latest behind no rows
        print(f"error: the window starts at {since.isoformat()}, not before now "
              f"({now.isoformat(timespec='seconds')}): no record can be in it", file=sys.stderr)
        return 2
    if since is not None and until is not None and since >= until:
        print(f"error: --since ({since.isoformat()}) must be before --until "
              f"({until.isoformat()})", file=sys.stderr)
        return 2
    store = FolderStore(args.dir)
    try:
        report = build(store, args.model, installed_versions(args.models_dir, args.model),
                       args.version, since, until)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    key, is_latest = save(store, report)
    print(json.dumps(report, indent=1, ensure_ascii=False) if args.json else summary(report))
    print(f"report written to {args.dir / key} "
          + (f"(and {latest_key(args.model)})" if is_latest else
             f"(not as {latest_key(args.model)}: the latest report covers a later window)")
          + ("" if args.json else "; JSON=1 prints it whole"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
