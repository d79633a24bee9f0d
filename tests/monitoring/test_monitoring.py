"""Monitoring (model_api/monitoring, model_api/aws/monitor.py): the statistics against their
definitions, the false-alarm rate measured, and on the local stack the issue's "done means":
held-back rows of breast-cancer-mlp flag no feature, the same rows with two features scaled by
1.3 flag those two, GET .../monitoring answers the report (404 before), a text's words are
never stored or logged, and erasure leaves nothing."""

from __future__ import annotations

import io
import json
import time
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model_api.aws import capture as aws_capture
from model_api.aws import monitor as aws_monitor
from model_api.capture import record
from model_api.capture import store as capture_store
from model_api.capture.store import FolderStore
from model_api.manifest import load_manifest
from model_api.monitoring import baseline, drift, features, reports

from model_export.breast_cancer import splits
from tests.conftest import MODELS_DIR, ROOT, local_api_server

MODEL = "breast-cancer-mlp"
SCALED = ("mean radius", "worst texture")
SECRET_TEXT = "Quixotic pangolin sarsaparilla murmured"


def _manifest(name: str = MODEL) -> Any:
    return load_manifest(MODELS_DIR / name / "1" / "manifest.json")


def test_statistics_match_their_definitions() -> None:
    # PSI of shares (0.5, 0.5) against (0.9, 0.1): sum (w - b) ln(w / b)
    expected = (0.9 - 0.5) * np.log(0.9 / 0.5) + (0.1 - 0.5) * np.log(0.1 / 0.5)
    assert drift.psi(np.array([50.0, 50.0]), np.array([90.0, 10.0])) == pytest.approx(expected)
    # Jensen-Shannon distance (natural log) of (1, 0) and (0, 1) is sqrt(ln 2); equal is 0
    assert drift.jensen_shannon(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(
        np.sqrt(np.log(2)))
    assert drift.jensen_shannon(np.array([3.0, 1.0]), np.array([6.0, 2.0])) == 0
    # the baseline's deciles: 10 bins of 100 rows each from 1,000 distinct values
    summary = baseline.summarise(np.arange(1000.0))
    assert summary["kind"] == "number" and summary["counts"] == [100] * 10
    # Wasserstein of a shift by one standard deviation is 1
    values = np.random.default_rng(0).normal(size=20_000)
    summary = baseline.summarise(values)
    assert drift.wasserstein(summary["quantiles"], values + summary["std"],
                             summary["std"]) == pytest.approx(1, abs=0.02)


def test_too_few_rows_says_so_instead_of_guessing() -> None:
    manifest = _manifest()
    document = baseline.read(manifest, MODELS_DIR / MODEL / "1")
    assert document is not None and document["rows"] == 426
    rows = splits().test.x[:50]
    found = drift.compare(document, features.from_inputs(manifest, {"features": rows}), None,
                          len(rows))
    assert found["status"] == "insufficient_data" and found["features"] == []
    assert "50 captured row(s)" in found["message"] and "at least 122" in found["message"]
    # a text's out-of-vocabulary share, after the model's own lower-casing
    known = record.Vocabulary(frozenset({"goal", "match"}), True)
    assert record.oov_share(["Goal", "quokka", "match", "zebra"], known) == 0.5
    assert record.oov_share([], known) is None
    small = {**document, "rows": 60}
    assert "give at least 95 training rows" in drift.compare(small, {}, None, 500)["message"]


def test_false_alarm_rate_over_repeated_windows() -> None:
    """Baselines of 426 random rows of the data set against the other 143, repeated: an
    unchanged feature is flagged in a small share of windows (200 splits, measured once:
    8 % of windows flag one of 30 features, 0.3 % of features; here 40 splits, bounded)."""
    manifest, x = _manifest(), splits().full.x
    rng = np.random.default_rng(7)
    flagged = []
    for _ in range(40):
        order = rng.permutation(len(x))
        document = baseline.build(manifest, {"features": x[order[:426]]}, None, "split")
        found = drift.compare(document, features.from_inputs(
            manifest, {"features": x[order[426:]]}), None, 143)
        flagged.append(sum(feature["drifted"] for feature in found["features"]))
    assert np.mean(np.array(flagged) > 0) <= 0.2
    assert sum(flagged) / (40 * 30) <= 0.01


def _infer(client: Any, rows: np.ndarray, requests: int = 4) -> None:
    for part in np.array_split(rows, requests):
        body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": list(part.shape),
                            "data": part.tolist()}]}
        answer = client.post(f"/v2/models/{MODEL}/infer", json=body)
        assert answer.status_code == 200, answer.text


def _wait_for_rows(folder: Path, model: str, since: datetime, rows: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = sum(r["rows"] for r in capture_store.read(FolderStore(folder), model, since))
        if found >= rows:
            return
        time.sleep(0.1)
    raise AssertionError(f"{rows} captured rows of {model} did not arrive")


def _monitor(folder: Path, model: str, since: datetime, until: datetime) -> dict[str, Any]:
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        assert reports.main(["--model", model, "--since", since.isoformat(), "--until",
                             until.isoformat(), "--dir", str(folder), "--models-dir",
                             str(MODELS_DIR)]) == 0
    report = reports.latest(FolderStore(folder), model)
    assert report is not None
    return report


def test_held_back_rows_flag_nothing_and_two_scaled_features_are_flagged(
        tmp_path: Path) -> None:
    folder = tmp_path / "capture"
    held_back = splits().test.x
    names = list(features.from_inputs(_manifest(), {"features": held_back[:1]}))
    scaled = held_back.copy()
    for name in SCALED:
        scaled[:, names.index(name)] *= 1.3
    with local_api_server(tmp_path / "api.log", extra=("--capture-dir", str(folder))) as (
            client, _port):
        # Given no report yet: 404 in the protocol's error format, with a hint
        answer = client.get(f"/v2/models/{MODEL}/monitoring")
        assert answer.status_code == 404 and set(answer.json()) == {"error"}
        assert "make monitor" in answer.json()["error"]
        # When the held-back rows are sent, then the same rows with two features scaled
        start = datetime.now(UTC)
        _infer(client, held_back)
        _wait_for_rows(folder, MODEL, start, len(held_back))
        middle = datetime.now(UTC)
        _infer(client, scaled)
        _wait_for_rows(folder, MODEL, middle, len(scaled))
        end = datetime.now(UTC)
        answer = client.post("/v2/models/text-topics/infer", json={"inputs": [{
            "name": "text", "datatype": "BYTES", "shape": [1], "data": [SECRET_TEXT]}]})
        assert answer.status_code == 200, answer.text
        _wait_for_rows(folder, "text-topics", middle, 1)
        # Then the held-back window flags no feature, nor the predictions
        report = _monitor(folder, MODEL, start, middle)
        assert report["window"]["rows"] == len(held_back) and report["status"] == "ok"
        assert len(report["features"]) == 30
        assert [f["name"] for f in report["features"] if f["drifted"]] == []
        assert set(report["features"][0]) == {"name", "statistic", "value", "threshold",
                                              "drifted"}
        assert report["predictions"]["drifted"] is False
        served = client.get(f"/v2/models/{MODEL}/monitoring")
        assert served.status_code == 200 and served.json() == report
        assert client.get("/v2/models/no-such-model/monitoring").status_code == 404
        # and the scaled window flags exactly the two scaled features
        report = _monitor(folder, MODEL, middle, end)
        assert sorted(f["name"] for f in report["features"] if f["drifted"]) == sorted(SCALED)
        # make monitor's table lists the drifted features first, each with its value
        table = reports.summary(report).splitlines()
        assert {line.split("  psi")[0].strip() for line in table[2:4]} == \
            {f"feature {name}" for name in SCALED}
        assert all("DRIFTED" in line.split() for line in table[2:4])
        assert sum(bool({"ok", "DRIFTED"} & set(line.split())) for line in table) == 31
        # (30 features + the predictions), each number's Wasserstein distance beside its PSI
        assert float(table[2].split()[-1]) == pytest.approx(report["histograms"][
            table[2].split("  psi")[0].strip().removeprefix("feature ")]["wasserstein"],
            abs=5e-5)
        assert table[-1].startswith("DRIFT: 2 of 30 feature(s) drifted: ")
        assert table[-1].endswith("; the predictions (label) did not drift")
        assert client.get(f"/v2/models/{MODEL}/monitoring").json()["window"]["start"] == \
            report["window"]["start"]
        # A text's record keeps its length, tokens and out-of-vocabulary share, never its words
        (kept,) = [r["inputs"]["text"] for r in capture_store.read(
            FolderStore(folder), "text-topics", middle)]
        assert kept["length"] == [len(SECRET_TEXT)] and kept["tokens"] == [4]
        assert kept["oov"] == [1.0]  # none of its four words is in the model's vocabulary
        # One text request is too few rows: the report says so; its words are kept nowhere
        text = _monitor(folder, "text-topics", middle, datetime.now(UTC))
        assert text["status"] == "insufficient_data" and "1 captured row" in text["message"]
        # Erasure of the model leaves nothing: no record, no report, and the route says so
        with redirect_stderr(io.StringIO()):
            assert aws_capture.main(["erase", "--model", MODEL, "--dir", str(folder)]) == 0
        assert not [p for p in folder.rglob("*") if MODEL in str(p) and p.is_file()]
        assert client.get(f"/v2/models/{MODEL}/monitoring").status_code == 404
    written = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    logged = (tmp_path / "api.log").read_text()
    assert b"text-topics" in written  # the text's record and report are there, its words not
    for word in SECRET_TEXT.split():
        assert word.encode() not in written and word not in logged


def test_the_scheduled_function_writes_reports_and_a_metric_per_model(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """MonitorFunction's run over a store (the capture bucket's layout, here a folder): one
    report per model, DriftedFeatures per model as an embedded-metric log line."""
    store = FolderStore(tmp_path)
    done = aws_monitor.run({"MODELS_DIR": str(MODELS_DIR)}, store)
    assert {d["model"] for d in done} == {p.name for p in MODELS_DIR.iterdir() if p.is_dir()}
    assert reports.latest(store, MODEL)["status"] == "insufficient_data"
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith("{") and "_aws" in line]
    drifted = [line for line in lines if "DriftedFeatures" in line]
    assert {line["model"] for line in drifted} >= {MODEL}
    assert all(line["DriftedFeatures"] == [0] for line in drifted)


def test_the_template_schedules_the_report_with_least_privilege() -> None:
    """MonitorFunction: daily (EventBridge Scheduler), reads capture/ and monitoring/, writes
    only monitoring/; the server function reads only monitoring/; DriftAlarm on ModelsDrifted."""
    from tests.template.test_template import stack_resources

    resources = stack_resources(ROOT / "template.yaml")
    function = resources["MonitorFunction"]["Properties"]
    assert function["Events"]["Daily"]["Type"] == "ScheduleV2"
    statements = {s["Sid"]: s for policy in
                  resources["MonitorFunctionRole"]["Properties"]["Policies"]
                  for s in policy["PolicyDocument"]["Statement"]}
    assert statements["WriteReports"]["Action"] == "s3:PutObject"
    assert "monitoring/*" in json.dumps(statements["WriteReports"]["Resource"])
    assert "capture/*" not in json.dumps(statements["WriteReports"]["Resource"])
    writes = [s for s in statements.values() if "Put" in json.dumps(s["Action"])
              and "s3" in json.dumps(s["Action"])]
    assert len(writes) == 1
    server = json.dumps(resources["ServerFunctionRole"]["Properties"]["Policies"])
    assert "monitoring/*" in server and "capture/*" not in server
    alarm = resources["DriftAlarm"]["Properties"]
    assert (alarm["MetricName"], alarm["Threshold"]) == ("ModelsDrifted", 1)
    # The dashboard: per model requests, errors, latency percentiles, cold starts, drift
    body = resources["ModelsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(body.replace("${AWS::Region}", "us-east-1").replace(
        "${ModelFunctionPrefix}", "model-api-"))["widgets"]
    searched = json.dumps(widgets)
    for metric in ("Invocations", "Errors", "Duration", "ColdStart", "DriftedFeatures"):
        assert f'MetricName=\\"{metric}\\"' in searched, metric
    assert all(f"'p{p}'" in searched for p in (50, 90, 99))


def test_reports_in_a_bucket_missing_is_none_and_erasure_removes_every_version() -> None:
    """The S3 store as the server function and MonitorFunction use it (moto): a missing
    report is None (the route's 404), a saved one is the latest, erasure leaves no version."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="capture")
        s3.put_bucket_versioning(Bucket="capture",
                                 VersioningConfiguration={"Status": "Enabled"})
        store = aws_capture.S3Store("capture", s3)
        assert reports.latest(store, MODEL) is None
        report = {"model_name": MODEL, "created": "2026-12-05T10:00:00Z", "features": []}
        reports.save(store, report)
        reports.save(store, report)
        assert reports.latest(store, MODEL) == report
        assert reports.erase(store, MODEL) == 2
        listed = s3.list_object_versions(Bucket="capture", Prefix="monitoring/")
        assert not listed.get("Versions") and not listed.get("DeleteMarkers")


@pytest.mark.parametrize(("since", "until", "said"), [
    ("2026-12-06T00:00:00Z", "2026-12-01T00:00:00Z", "must be before --until"),
    ("2026-12-01T00:00:00Z", "2026-12-01T00:00:00Z", "must be before --until"),
    ("tomorrow", None, "not before now"),
], ids=["reversed", "empty", "future"])
def test_a_window_that_can_hold_no_record_is_refused_and_writes_no_report(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], since: str, until: str | None,
        said: str) -> None:
    """A report of an empty window would become the model's latest, hiding the last real one
    from GET .../monitoring and the console: a typo in --since/--until is an error instead."""
    folder = tmp_path / "capture"
    if since == "tomorrow":  # (made here: a test's id must be the same in every xdist worker)
        since = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    arguments = ["--model", MODEL, "--since", since, "--dir", str(folder), "--models-dir",
                 str(MODELS_DIR), *(["--until", until] if until else [])]
    assert reports.main(arguments) == 2
    assert said in capsys.readouterr().err
    assert reports.latest(FolderStore(folder), MODEL) is None
    with pytest.raises(ValueError, match="must be before --until"):
        capture_store.time_window("2026-12-06T00:00:00Z", "2026-12-01T00:00:00Z")


@pytest.mark.parametrize("command", ["read", "erase"])
def test_capture_of_a_model_with_no_records_at_all_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    """`make capture MODEL=Text-Topics` (a name mistyped) was silent: nothing printed, exit 0."""
    folder = tmp_path / "capture"
    FolderStore(folder).put(capture_store.object_key(MODEL), b"")
    assert aws_capture.main([command, "--model", "Text-Topics", "--dir", str(folder)]) == 2
    assert "no captured records of model 'Text-Topics'" in capsys.readouterr().err
    assert aws_capture.main([command, "--model", MODEL, "--dir", str(folder)]) == 0
    # a window the model's records are not in: said too
    FolderStore(folder).put(capture_store.object_key(MODEL), b"")  # (erase took the first)
    window = ["--since", "2027-01-01T00:00:00Z"]
    assert aws_capture.main([command, "--model", MODEL, "--dir", str(folder), *window]) == 0
    assert ("no record of" if command == "read" else "erased 0 record(s)") in \
        capsys.readouterr().err


def test_a_report_of_an_older_window_goes_into_the_history_not_over_the_latest(
        tmp_path: Path) -> None:
    """`make monitor SINCE=2025-12-01... UNTIL=2025-12-06...` (a year mistyped) made its empty
    report the latest, hiding the last real one from GET .../monitoring and the console."""
    store = FolderStore(tmp_path)

    def report(end: str, created: str) -> dict[str, Any]:
        return {"model_name": MODEL, "created": created,
                "window": {"start": "2026-11-01T00:00:00Z", "end": end, "rows": 1}}

    newer = report("2026-12-06T00:00:00Z", "2026-12-06T10:00:00Z")
    assert reports.save(store, newer)[1] is True
    key, is_latest = reports.save(store, report("2025-12-06T00:00:00Z", "2026-12-06T11:00:00Z"))
    assert is_latest is False and json.loads(store.get(key))["window"]["end"].startswith("2025")
    assert reports.latest(store, MODEL) == newer
    later = report("2026-12-07T00:00:00Z", "2026-12-07T10:00:00Z")
    assert reports.save(store, later)[1] is True and reports.latest(store, MODEL) == later
