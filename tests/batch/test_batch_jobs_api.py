"""Jobs created through the API (batch.jobs_api) against the trigger and the runner, over the
moto server: the key layout of an issued job, one job per issued key, and a runner that finds
its job erased under it (the HTTP side is tests/e2e/test_async_jobs_http.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from model_api.errors import BadRequest, NotFound

from batch import job as batch_job
from batch import jobs, runner, trigger
from batch import jobs_api as jobs_api_module
from batch.jobs_api import JobsApi, JobsApiConfig
from batch.keys import InvalidKey, input_key, issue_job_id, parse_key
from tests.batch.conftest import FEATURES, MODEL, Cloud, request_line, runner_env
from tests.batch.test_batch_runner import (
    RNG,
    checkpoint_chunks,
    settings,
    upload_lines,
    wait_for,
)
from tests.batch.test_batch_trigger import SETTINGS, RecordingSubmitter, event_for, handle
from tests.conftest import catalog_of


def test_an_issued_job_id_is_its_key_whatever_the_object_version() -> None:
    job_id = issue_job_id()
    for version in (None, "2"):
        key = input_key("m", job_id, "npy", version, issued=True)
        assert key == ("batch/input/m/" + (f"versions/{version}/" if version else "")
                       + f"jobs/{job_id}.npy")
        first, second = parse_key("b", key, "v1"), parse_key("b", key, "v2")
        assert first.issued and first.job_id == second.job_id == job_id
        assert first.version == version and first.output_prefix == f"batch/output/m/{job_id}/"
    plain = parse_key("b", "batch/input/m/rows.jsonl", "v1")
    assert not plain.issued and plain.job_id != parse_key("b", plain.key, "v2").job_id
    with pytest.raises(InvalidKey, match="job id the API issues"):
        parse_key("b", "batch/input/m/jobs/rows.jsonl", "v1")


def api(cloud: Cloud) -> JobsApi:
    return JobsApi(JobsApiConfig(cloud.bucket, catalog_of(MODEL), 1 << 20, 30), cloud.store,
                   cloud.s3, None)


def test_the_upload_claims_its_job_once_and_never_after_delete(cloud: Cloud) -> None:
    created = api(cloud).create(MODEL, None, json.dumps(
        {"size": 10, "parameters": {"team": "x"}}).encode())
    described = api(cloud).describe(created["job_id"], MODEL)
    assert described["parameters"] == {"team": "x"}
    key = input_key(MODEL, created["job_id"], "jsonl", issued=True)
    submitter = RecordingSubmitter()
    # The upload claims the job the API created, keeping what the API recorded
    outcome = handle(cloud, event_for(cloud, key, version="v1"), submitter)
    assert (outcome.status, outcome.job_id) == ("submitted", created["job_id"])
    record = cloud.store.get(created["job_id"])
    assert record is not None and record["status"] == jobs.SUBMITTED
    assert json.loads(record["parameters"]) == {"team": "x"}
    assert record["input"]["version_id"] == "v1"
    # A second upload to the same URL starts nothing
    again = handle(cloud, event_for(cloud, key, version="v2"), submitter)
    assert again.status == "rejected" and "submitted, not awaiting" in str(again.reason)
    # An upload to the key of a job that was erased (or never created) records nothing, and
    # its bytes are deleted (the presigned URL outlives an erasure; no job would erase them)
    gone = input_key(MODEL, issue_job_id(), "jsonl", issued=True)
    uploaded = cloud.put(gone, b'{"inputs": []}\n')
    outcome = trigger.handle(event_for(cloud, gone, version=uploaded), cloud.store, submitter,
                             SETTINGS, "req-2", time.time() + 30,
                             discard=trigger.delete_version(cloud.s3))
    assert outcome.status == "rejected" and cloud.store.get(str(outcome.job_id)) is None
    assert "the upload was deleted" in str(outcome.reason)
    assert not cloud.s3.list_object_versions(Bucket=cloud.bucket, Prefix=gone).get("Versions")
    assert len(submitter.submitted) == 1


def test_a_runner_whose_job_is_erased_stops_and_leaves_nothing(
        cloud: Cloud, models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPTURE_SAMPLING", "100")  # every row captured, chunk by chunk
    monkeypatch.setenv("CAPTURE_DIR", str(tmp_path / "capture"))
    lines = [request_line(f"r{n}", RNG.normal(size=(1, FEATURES))) for n in range(40)]
    created = api(cloud).create(MODEL, None, json.dumps({"size": 10}).encode())
    key = input_key(MODEL, created["job_id"], "jsonl", issued=True)
    version = cloud.put(key, ("\n".join(lines) + "\n").encode())
    obj = parse_key(cloud.bucket, key, version)
    assert handle(cloud, event_for(cloud, key, version=version),
                  RecordingSubmitter()).status == "submitted"
    settings = batch_job.JobConfig(bucket=cloud.bucket, key=key, version_id=version,
                               job_id=obj.job_id, models_dir=models_dir, table=cloud.table,
                               chunk_rows=10, progress_seconds=0)
    s3 = cloud.s3
    written: list[str] = []

    def erase_before_second_part(params: dict[str, Any], **_: Any) -> None:
        """DELETE begins between the runner's check and its write of the second part."""
        written.append(params["Key"])
        if params["Key"].endswith("part-00001.jsonl"):
            cloud.store.mark_erasing(obj.job_id)

    s3.meta.events.register("provide-client-params.s3.PutObject", erase_before_second_part)
    captured: list[Path] = []

    def flushed(**_: Any) -> None:
        captured.extend((tmp_path / "capture").rglob("*.jsonl"))

    s3.meta.events.register("provide-client-params.s3.PutObject", flushed)
    with pytest.raises(jobs.JobErased):
        batch_job.run_job(settings, s3=s3)
    # what it captured (the first chunk's rows, before the erasure) it erased too
    assert captured and all(f"/job-{obj.job_id}/" in str(path) for path in captured)
    assert list((tmp_path / "capture").rglob("*.jsonl")) == []
    # It wrote the first part and checkpoint, then the second part, whose record update was
    # refused: it stopped there (no third part) and deleted every version it had written
    assert [k.rsplit("/", 1)[1] for k in written] == [
        "part-00000.jsonl", "_checkpoint.json", "part-00001.jsonl", "_checkpoint.json"]
    listed = s3.list_object_versions(Bucket=cloud.bucket, Prefix=obj.output_prefix)
    assert not listed.get("Versions") and not listed.get("DeleteMarkers")
    assert runner.main(["--bucket", cloud.bucket, "--key", key, "--version-id", version,
                        "--job-id", obj.job_id, "--models-dir", str(models_dir),
                        "--table", cloud.table]) == 2  # a retry finds it erased: exit 2
    record = cloud.store.get(obj.job_id)
    assert record is not None and record["status"] == jobs.ERASING  # the record never moved on



@pytest.mark.slow
@pytest.mark.parametrize("erased", [False, True], ids=["reclaimed", "erased"])
def test_sigterm_updates_the_record_on_the_way_out(cloud: Cloud, models_dir: Path,
                                                   erased: bool) -> None:
    """ECS's SIGTERM (a spot reclaim, or TerminateJob after DELETE) reaches the runner as an
    exception: a reclaimed job records why and exits 1 (retried); an erased one finds its
    update refused, deletes what it wrote and exits 2. Never a bare -15."""
    lines = [request_line(f"r{n}", RNG.normal(size=(1, FEATURES))) for n in range(12_000)]
    key, version = upload_lines(cloud, lines, name=f"sigterm-{erased}")
    job = settings(cloud, models_dir, key, version)
    prefix = parse_key(job.bucket, key, version).output_prefix
    runner_process = subprocess.Popen(
        [sys.executable, "-m", "batch.runner", "--bucket", job.bucket, "--key", key,
         "--version-id", version, "--job-id", job.job_id, "--chunk-rows", "100"],
        env=runner_env(cloud, models_dir), stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: checkpoint_chunks(cloud, prefix) >= 2, runner_process)
    if erased:
        cloud.store.mark_erasing(job.job_id)
    runner_process.send_signal(signal.SIGTERM)
    _, log = runner_process.communicate(timeout=60)
    record = cloud.store.get(job.job_id)
    assert record is not None
    if erased:
        assert runner_process.returncode == 2, log
        listed = cloud.s3.list_object_versions(Bucket=cloud.bucket, Prefix=prefix)
        assert not listed.get("Versions") and not listed.get("DeleteMarkers")
        assert record["status"] == jobs.ERASING
    else:
        assert runner_process.returncode == 1, log
        assert record["status"] == jobs.RUNNING and "SIGTERM" in record["reason"]


class RecordingBatch:
    """AWS Batch's TerminateJob as the jobs API calls it (moto's Batch finishes a job before
    a test could stop it): the calls, in order."""

    def __init__(self) -> None:
        self.terminated: list[tuple[str, str]] = []

    def terminate_job(self, jobId: str, reason: str) -> None:
        self.terminated.append((jobId, reason))


@pytest.mark.parametrize(("status", "batch_job_id", "compute", "stopped"), [
    (jobs.RUNNING, "batch-7", jobs.AWS_BATCH, True),
    (jobs.SUBMITTED, "batch-7", jobs.AWS_BATCH, True),
    (jobs.RUNNING, "batch-7", None, True),  # a record from before the `compute` field
    (jobs.SUCCEEDED, "batch-7", jobs.AWS_BATCH, False),
    (jobs.RUNNING, "pid-123", jobs.LOCAL, False),
    (jobs.AWAITING_UPLOAD, None, None, False)])
def test_delete_terminates_the_batch_job_only_while_it_may_run(
        cloud: Cloud, status: str, batch_job_id: str | None, compute: str | None,
        stopped: bool) -> None:
    batch = RecordingBatch()
    jobs_api = JobsApi(JobsApiConfig(cloud.bucket, catalog_of(MODEL), 1 << 20, 30), cloud.store,
                       cloud.s3, batch)
    job_id = jobs_api.create(MODEL, None, b'{"size": 10}')["job_id"]
    fields = {"batch_job_id": batch_job_id} if batch_job_id else {}
    if compute:
        fields["compute"] = compute
    cloud.store.update(job_id, status, fields=fields)
    with pytest.raises(NotFound):
        jobs_api.erase(job_id, "another-model")
    answer = jobs_api.erase(job_id, MODEL)
    assert answer["stopped"] == (batch_job_id if stopped else None)
    assert batch.terminated == ([(batch_job_id, f"job {job_id} erased (DELETE)")]
                                if stopped else [])
    assert cloud.store.get(job_id) is None
    with pytest.raises(NotFound):
        jobs_api.describe(job_id)


@pytest.mark.parametrize("format_", ["jsonl", "npy"])
def test_a_job_of_a_version_the_model_does_not_have_is_a_404_before_any_upload(
        cloud: Cloud, format_: str) -> None:
    """As its infer and ready routes answer: never a job that fails once its input is in."""
    with pytest.raises(NotFound) as refused:
        api(cloud).create(MODEL, "9", json.dumps({"size": 10, "format": format_}).encode())
    assert refused.value.message == f"model '{MODEL}' has no version '9'; versions: '1'"
    assert cloud.s3.list_objects_v2(Bucket=cloud.bucket).get("KeyCount", 0) == 0
    assert api(cloud).create(MODEL, "1", b'{"size": 10}')["model_version"] == "1"


def test_an_upload_its_job_cannot_run_fails_that_job(cloud: Cloud) -> None:
    """A model taken out of the batch models between POST and the upload: the job is
    recorded failed with the reason (a PutItem, all the trigger's role may write)."""
    job_id = api(cloud).create(MODEL, None, b'{"size": 10}')["job_id"]
    key = input_key(MODEL, job_id, "jsonl", issued=True)
    without = trigger.TriggerConfig(models=catalog_of("another-model"), max_bytes=1000)
    outcome = trigger.handle(event_for(cloud, key), cloud.store, RecordingSubmitter(), without,
                             "req-1", time.time() + 30)
    record = cloud.store.get(job_id)
    assert outcome.status == "rejected" and record is not None
    assert record["status"] == jobs.FAILED and "unknown model" in record["reason"]
    assert record["input"]["key"] == key and record["expires_at"]  # the API's fields kept


def test_output_urls_page_through_every_part(cloud: Cloud,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A succeeded job's outputs, as its _SUCCESS.json lists them, JOB_MAX_OUTPUT_URLS at a
    time (2 here), each a presigned GET of that part's key."""
    monkeypatch.setattr(jobs_api_module, "JOB_MAX_OUTPUT_URLS", 2)
    jobs_api = api(cloud)
    job_id = jobs_api.create(MODEL, None, b'{"size": 10}')["job_id"]
    obj = parse_key(cloud.bucket, input_key(MODEL, job_id, "jsonl", issued=True), "null")
    parts = [obj.jsonl_part(chunk) for chunk in range(5)]
    cloud.put(obj.success_key, json.dumps({"parts": parts}).encode())
    cloud.store.update(job_id, jobs.SUCCEEDED)
    pages = []
    start: int | None = 0
    while start is not None:
        urls = jobs_api.describe(job_id, MODEL, start)["output_urls"]
        pages.append([part["name"] for part in urls["parts"]])
        assert urls["total"] == 5 and obj.success_key in urls["manifest"]
        assert all(obj.output_key(part["name"]) in part["url"] for part in urls["parts"])
        start = urls["next_start"]
    assert pages == [parts[0:2], parts[2:4], parts[4:5]]
    with pytest.raises(BadRequest, match="0 to 4"):
        jobs_api.describe(job_id, MODEL, 5)


@pytest.mark.parametrize(("job", "child", "shown"), [
    ("submitting", "submitting", "submitting"),
    ("submit_failed", "submitting", "submitting"),
    # a local child process started (the job is running) before the trigger moved its
    # siblings to submitted: they were submitted all the same
    ("running", "submitting", "submitted"),
    ("running", "running", "running"),
    ("failed", "stopped", "stopped"),
    # another child failed the job: these stop at their next chunk, or as they start
    ("failed", "running", "stopping"),
    ("failed", "submitted", "stopping"),
    ("failed", "succeeded", "succeeded"),
])
def test_an_array_jobs_children_are_never_shown_behind_or_ahead_of_it(
        job: str, child: str, shown: str) -> None:
    answer = jobs_api_module.array_job({"0": {"state": child}, "1": {"state": child}},
                                       {"status": job})
    assert [entry["state"] for entry in answer["shards"]] == [shown, shown]
