"""The scheduled drift report in AWS (MonitorFunction, daily by EventBridge Scheduler) and the
report store the model functions answer GET /v2/models/{model}/monitoring from.

MonitorFunction: for every model under MODELS_DIR (its baselines layer: each version's
manifest.json and baseline.json, no model file), the report of the last day's captured records
in REPORTS_BUCKET (the capture bucket: Firehose's objects under capture/<model>/) is written to
monitoring/<model>/ there (model_api.monitoring.reports), and two metrics per model are put
(embedded metric format, namespace POWERTOOLS_METRICS_NAMESPACE, dimension `model`):
DriftedFeatures (features whose statistic passed its threshold; 0 with too few rows) and
MonitoredRows (rows in the window); PredictionDrift (1 when the prediction's distribution
drifted) too; and once per run, without a dimension, ModelsDrifted (models with a drifted
feature), on which the template's DriftAlarm fires.

Report store (the model functions, read only): REPORTS_BUCKET (S3), else REPORTS_DIR (make
serve's capture folder), else none (the route answers 404 saying so).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from model_api.aws.capture import DEFAULT_NAMESPACE, S3Store
from model_api.capture.store import CaptureStore, FolderStore
from model_api.monitoring import reports

REPORTS_BUCKET_ENV, REPORTS_DIR_ENV = "REPORTS_BUCKET", "REPORTS_DIR"
DEFAULT_MODELS_DIR = "/opt/models"


def report_store(environ: Mapping[str, str]) -> CaptureStore | None:
    """Where reports are read and written (see the module's docstring)."""
    if environ.get(REPORTS_BUCKET_ENV):
        return S3Store(environ[REPORTS_BUCKET_ENV])
    if environ.get(REPORTS_DIR_ENV):
        return FolderStore(Path(environ[REPORTS_DIR_ENV]))
    return None


def put_metrics(report: Mapping[str, Any], namespace: str) -> None:
    """The report's per-model metrics (embedded metric format: a log line, no API call)."""
    drifted = sum(1 for feature in report["features"] if feature["drifted"])
    values = {"DriftedFeatures": drifted, "MonitoredRows": report["window"]["rows"],
              "PredictionDrift": int(bool(report["predictions"].get("drifted")))}
    for name, value in values.items():
        with single_metric(name=name, unit=MetricUnit.Count, value=value, namespace=namespace,
                           default_dimensions={"model": str(report["model_name"])}):
            pass


def run(environ: Mapping[str, str], store: CaptureStore) -> list[dict[str, Any]]:
    """One report per model under MODELS_DIR, written and measured; what each said."""
    logger = Logger(service="monitor")  # here, not at import: the functions import report_store
    models_dir = Path(environ.get("MODELS_DIR") or DEFAULT_MODELS_DIR)
    namespace = environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE
    done: list[dict[str, Any]] = []
    drifted_models = 0
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        try:
            report = reports.build(store, folder.name,
                                   reports.installed_versions(models_dir, folder.name))
        except reports.ReportError as exc:
            logger.warning("no report", extra={"model": folder.name, "reason": str(exc)})
            done.append({"model": folder.name, "error": str(exc)})
            continue
        key, _ = reports.save(store, report)  # the day's window: the latest unless clocks err
        put_metrics(report, namespace)
        drifted_models += any(feature["drifted"] for feature in report["features"])
        logger.info("report", extra={"model": folder.name, "key": key,
                                     "status": report["status"], "summary": report["message"]})
        done.append({"model": folder.name, "key": key, "message": report["message"]})
    with single_metric(name="ModelsDrifted", unit=MetricUnit.Count, value=drifted_models,
                       namespace=namespace):
        pass
    return done


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The schedule's target: every model's report of the last day."""
    store = report_store(os.environ)
    if store is None:
        raise RuntimeError(f"{REPORTS_BUCKET_ENV} is not set")
    return {"reports": run(os.environ, store)}
