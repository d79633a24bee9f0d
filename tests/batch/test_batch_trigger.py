"""The trigger: validation, and exactly one job per object version whatever the deliveries."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import S3EventBridgeNotificationEvent

from batch import jobs, trigger
from batch.keys import InputObject, InvalidKey, input_key, issue_job_id, parse_key
from local_api.batch.loop import load_handler, object_created_event
from model_registry.registry import ModelEntry, RegistryError, check
from tests.batch.conftest import MODEL, Cloud, shipping
from tests.conftest import EVENTS_DIR, LambdaContext, catalog_file, catalog_of

SETTINGS = trigger.TriggerConfig(models=catalog_of(MODEL), max_bytes=1000)


class RecordingSubmitter:
    """Stands in for AWS Batch: records each submission (optionally failing the first ones)."""

    compute = jobs.AWS_BATCH

    def __init__(self, failures: int = 0) -> None:
        self.submitted: list[InputObject] = []
        self.failures = failures
        self.lock = threading.Lock()

    def submit(self, obj: InputObject, shards: int = 1) -> str:
        with self.lock:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("Batch said no")
            self.submitted.append(obj)
            return f"batch-{len(self.submitted)}"


def event_for(cloud: Cloud, key: str = f"batch/input/{MODEL}/rows.jsonl", size: int = 10,
              version: str = "v1") -> S3EventBridgeNotificationEvent:
    raw = object_created_event(cloud.bucket, key, size, "e", version)
    return S3EventBridgeNotificationEvent(raw)


def handle(cloud: Cloud, event: S3EventBridgeNotificationEvent, submitter: RecordingSubmitter,
           token: str = "req-1", expires_in: float = 30) -> trigger.Outcome:
    return trigger.handle(event, cloud.store, submitter, SETTINGS, token, time.time() + expires_in)


def test_the_sample_event_is_what_eventbridge_delivers() -> None:
    event = json.loads((EVENTS_DIR / "batch" / "object-created.json").read_text())
    assert event["source"] == "aws.s3" and event["detail-type"] == "Object Created"
    assert set(event["detail"]["object"]) == {"key", "size", "etag", "version-id", "sequencer"}
    parsed = S3EventBridgeNotificationEvent(event)
    assert parse_key(parsed.detail.bucket.name, parsed.detail.object.key, "v").model


@pytest.mark.parametrize("key", [
    "batch/input/model/job.csv", "batch/input/job.jsonl", "batch/input/a/b/job.jsonl",
    "other/model/job.jsonl", "batch/input/Bad_Model/job.jsonl", "batch/input/model/.jsonl",
    "batch/input/model/../x.jsonl"])
def test_invalid_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidKey):
        parse_key("b", key, "v")


def test_job_id_is_one_per_object_version() -> None:
    first = parse_key("b", f"batch/input/{MODEL}/rows.jsonl", "v1")
    assert first.job_id == parse_key("b", f"batch/input/{MODEL}/rows.jsonl", "v1").job_id
    assert first.job_id != parse_key("b", f"batch/input/{MODEL}/rows.jsonl", "v2").job_id
    assert first.job_id.startswith("rows-") and first.output_prefix.endswith(f"/{first.job_id}/")


def test_a_valid_upload_submits_one_job_and_records_it(cloud: Cloud) -> None:
    submitter = RecordingSubmitter()
    outcome = handle(cloud, event_for(cloud), submitter)
    assert outcome.status == "submitted" and outcome.batch_job_id == "batch-1"
    record = cloud.store.get(outcome.job_id or "")
    assert record is not None and record["status"] == jobs.SUBMITTED
    assert record["input"]["version_id"] == "v1" and "claim_token" not in record


def test_the_same_event_twice_starts_one_job(cloud: Cloud) -> None:
    submitter = RecordingSubmitter()
    event = event_for(cloud)
    first = handle(cloud, event, submitter, token="req-1")
    second = handle(cloud, event, submitter, token="req-2")
    assert (first.status, second.status) == ("submitted", "duplicate")
    assert len(submitter.submitted) == 1


def test_concurrent_deliveries_start_one_job(cloud: Cloud) -> None:
    submitter = RecordingSubmitter()
    event = event_for(cloud)
    outcomes: list[trigger.Outcome] = []
    threads = [threading.Thread(target=lambda n=n: outcomes.append(
        handle(cloud, event, submitter, token=f"req-{n}"))) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o.status for o in outcomes).count("submitted") == 1
    assert len(submitter.submitted) == 1


def test_a_retried_event_after_a_failed_submission_starts_one_job(cloud: Cloud) -> None:
    submitter = RecordingSubmitter(failures=1)
    event = event_for(cloud)
    with pytest.raises(RuntimeError, match="Batch said no"):
        handle(cloud, event, submitter, token="req-1")
    job_id = parse_key(cloud.bucket, event.detail.object.key, "v1").job_id
    record = cloud.store.get(job_id)
    assert record is not None and record["status"] == jobs.SUBMIT_FAILED
    assert "Batch said no" in record["reason"]
    assert handle(cloud, event, submitter, token="req-2").status == "submitted"
    assert handle(cloud, event, submitter, token="req-3").status == "duplicate"
    assert len(submitter.submitted) == 1


def test_a_claim_of_a_dead_invocation_expires_and_the_retry_takes_it_over(cloud: Cloud) -> None:
    submitter = RecordingSubmitter()
    event = event_for(cloud)
    obj = parse_key(cloud.bucket, event.detail.object.key, "v1")
    # Given an invocation that claimed the job and died before submitting (claim now expired)
    assert cloud.store.claim(trigger.job_item(obj, 10, "e"), "dead", time.time() - 1)
    # When the event is retried, then the job is submitted once
    assert handle(cloud, event, submitter, token="retry").status == "submitted"
    assert len(submitter.submitted) == 1


def test_a_live_claim_is_not_taken_over(cloud: Cloud) -> None:
    event = event_for(cloud)
    obj = parse_key(cloud.bucket, event.detail.object.key, "v1")
    assert cloud.store.claim(trigger.job_item(obj, 10, "e"), "alive", time.time() + 60)
    submitter = RecordingSubmitter()
    assert handle(cloud, event, submitter, token="other").status == "duplicate"
    assert submitter.submitted == []


def test_a_new_version_of_the_same_key_is_a_new_job(cloud: Cloud) -> None:
    submitter = RecordingSubmitter()
    assert handle(cloud, event_for(cloud, version="v1"), submitter).status == "submitted"
    assert handle(cloud, event_for(cloud, version="v2"), submitter).status == "submitted"
    assert len({obj.job_id for obj in submitter.submitted}) == 2


@pytest.mark.parametrize(("key", "size", "reason"), [
    (f"batch/input/{MODEL}/rows.csv", 10, "must end in .jsonl or .npy"),
    ("batch/input/no-such-model/rows.jsonl", 10, "unknown model 'no-such-model'"),
    (f"batch/input/{MODEL}/rows.jsonl", 0, "empty"),
    (f"batch/input/{MODEL}/rows.jsonl", 1001, "the limit is 1000 bytes"),
])
def test_uploads_that_cannot_run_are_refused(cloud: Cloud, key: str, size: int,
                                             reason: str) -> None:
    submitter = RecordingSubmitter()
    outcome = handle(cloud, event_for(cloud, key=key, size=size), submitter)
    assert outcome.status == "rejected" and reason in (outcome.reason or "")
    assert submitter.submitted == []
    if outcome.job_id:  # a well-formed key: the refusal is readable through the jobs API
        record = cloud.store.get(outcome.job_id)
        assert record is not None and record["status"] == jobs.FAILED


def test_a_npy_upload_of_a_text_model_is_refused_before_any_instance_starts(
        cloud: Cloud) -> None:
    from model_api.catalog import Catalog, CatalogModel

    why = "model text has a BYTES (text) input; a .npy holds numbers: send JSON Lines"
    settings = trigger.TriggerConfig(models=Catalog((CatalogModel(
        "text", ("1", "2"), "2", 0, jsonl_only=(("2", why),)),)), max_bytes=1000)
    submitter = RecordingSubmitter()

    def upload(key: str) -> trigger.Outcome:
        return trigger.handle(event_for(cloud, key=key, size=10), cloud.store, submitter,
                              settings, "req-1", time.time() + 30)

    refused = upload("batch/input/text/rows.npy")  # the current version, 2
    assert refused.status == "rejected" and refused.reason == f"a .npy input: {why}"
    record = cloud.store.get(refused.job_id or "")
    assert record is not None and record["status"] == jobs.FAILED and why in record["reason"]
    assert submitter.submitted == []
    # JSON Lines of it, and a .npy of a version that can take one, are submitted
    assert upload("batch/input/text/rows.jsonl").status == "submitted"
    assert upload("batch/input/text/versions/1/rows.npy").status == "submitted"


def test_the_handler_submits_once_for_the_sample_event(
        cloud: Cloud, monkeypatch: pytest.MonkeyPatch, lambda_context: LambdaContext,
        tmp_path: Path) -> None:
    # Given the handler's environment, with the real Batch submitter pointed at a fake client
    for name, value in {"JOBS_TABLE": cloud.table,
                        "MODEL_CATALOG": catalog_file(tmp_path, MODEL, "other"),
                        "BATCH_BUCKET": cloud.bucket, "BATCH_SUBMITTER": "batch",
                        "BATCH_JOB_QUEUE": "queue", "BATCH_JOB_DEFINITION": "definition"}.items():
        monkeypatch.setenv(name, value)
    app = load_handler("batch_trigger")
    calls: list[dict[str, Any]] = []

    class FakeBatch:
        def submit_job(self, **request: Any) -> dict[str, str]:
            calls.append(request)
            return {"jobId": "aws-batch-job-1"}

    app.submitter.batch = FakeBatch()
    event = json.loads((EVENTS_DIR / "batch" / "object-created.json").read_text())
    event["detail"]["bucket"]["name"] = cloud.bucket
    event["detail"]["object"]["key"] = f"batch/input/{MODEL}/example.jsonl"
    # When EventBridge delivers it twice
    first = app.lambda_handler(event, lambda_context)
    second = app.lambda_handler(copy.deepcopy(event), lambda_context)
    # Then one SubmitJob, with the runner's job in its environment
    assert (first["status"], second["status"]) == ("submitted", "duplicate")
    assert len(calls) == 1 and calls[0]["jobQueue"] == "queue"
    environment = {e["name"]: e["value"] for e in calls[0]["containerOverrides"]["environment"]}
    assert environment["BATCH_JOB_ID"] == first["job_id"]
    assert environment["BATCH_INPUT_KEY"] == f"batch/input/{MODEL}/example.jsonl"


def test_jobs_api_returns_the_record_or_404(cloud: Cloud, monkeypatch: pytest.MonkeyPatch,
                                            lambda_context: LambdaContext,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv("JOBS_TABLE", cloud.table)
    monkeypatch.setenv("MODEL_CATALOG", catalog_file(tmp_path, MODEL))
    handle(cloud, event_for(cloud), RecordingSubmitter())
    job_id = parse_key(cloud.bucket, f"batch/input/{MODEL}/rows.jsonl", "v1").job_id
    app = load_handler("batch_jobs")
    template = json.loads((EVENTS_DIR / "batch" / "get-job.json").read_text())

    def get(job: str) -> tuple[int, dict[str, Any]]:
        event = {**template, "path": f"/v2/batch/jobs/{job}", "pathParameters": {"job_id": job}}
        answer = app.lambda_handler(event, lambda_context)
        return answer["statusCode"], json.loads(answer["body"])

    status, body = get(job_id)
    assert status == 200 and body["status"] == "submitted" and body["job_id"] == job_id
    assert "claim_token" not in body
    assert get("rows-000000000000")[0] == 404
    status, body = get("not a job")
    assert status == 404 and "error" in body


def test_built_batch_layer_holds_the_lambda_modules() -> None:
    layer = Path(__file__).resolve().parents[2] / ".aws-sam" / "build" / "BatchLayer"
    if not layer.exists():
        pytest.skip("run `make build` (make test does)")
    names = {p.name for p in (layer / "python" / "batch").glob("*.py")}
    assert {"keys.py", "jobs.py", "submit.py", "trigger.py", "state.py", "aws.py"} <= names
    assert "runner.py" not in names  # numpy/onnxruntime code belongs to the image
    assert {str(p.relative_to(layer / "python")) for p in (layer / "python").rglob("*.py")} == {
        path for path, targets in shipping().items() if "layer" in targets}  # the one list


def test_the_built_trigger_runs_from_its_layers_as_lambda_lays_them_out(
        cloud: Cloud, tmp_path: Path) -> None:
    build = Path(__file__).resolve().parents[2] / ".aws-sam" / "build"
    if not (build / "BatchTriggerFunction").exists():
        pytest.skip("run `make build` (make test does)")
    # Given only the built function and its layers on the path (not the repository's batch/)
    path = [build / "BatchTriggerFunction", build / "BatchLayer" / "python",
            build / "RuntimeLayer" / "python"]
    event = object_created_event(cloud.bucket, "batch/input/not-served/rows.jsonl", 10, "e", "v")
    script = (
        "import json, sys, app, batch\n"
        "ctx = type('Ctx', (), {'function_name': 'f', 'memory_limit_in_mb': 256,\n"
        "    'invoked_function_arn': 'arn:aws:lambda:us-east-1:1:function:f',\n"
        "    'aws_request_id': 'r', 'get_remaining_time_in_millis': lambda self: 9000})()\n"
        "print(json.dumps({'batch': batch.__file__,\n"
        "    'outcome': app.lambda_handler(json.loads(sys.argv[1]), ctx)}))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, path)),
           "JOBS_TABLE": cloud.table, "MODEL_CATALOG": catalog_file(tmp_path, MODEL),
           "BATCH_BUCKET": cloud.bucket,
           "BATCH_SUBMITTER": "batch", "BATCH_JOB_QUEUE": "q", "BATCH_JOB_DEFINITION": "d",
           "POWERTOOLS_TRACE_DISABLED": "true"}
    # When it handles an upload for a model it does not serve
    result = subprocess.run([sys.executable, "-c", script, json.dumps(event)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60)
    # Then the layer's code answered, and recorded the refusal in the table
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer["batch"].startswith(str(build / "BatchLayer"))
    assert answer["outcome"]["status"] == "rejected"
    record = cloud.store.get(answer["outcome"]["job_id"])
    assert record is not None and "unknown model 'not-served'" in record["reason"]


def registry_accepts(name: str, version: str) -> bool:
    """Whether models.yaml would accept a model `name` with `version` (registry.check)."""
    try:
        check(ModelEntry(name=name, source="seed", versions=[version], current=version))
    except RegistryError:
        return False
    return True


@pytest.mark.parametrize("name", ["breast-cancer-mlp", "a", "m2", "x-1-y", "Model", "-a", "a-",
                                  "a--b", "a_b", "1a", "a.b", ""])
def test_a_key_names_a_model_exactly_when_the_registry_would_accept_the_name(name: str) -> None:
    """batch/keys.py and the registry check names with the same rule (model_api.names; the
    trigger's layers do not carry model_registry): the two must agree."""
    key = f"batch/input/{name}/job.jsonl"
    try:
        parse_key("bucket", key, "v1")
        accepted = True
    except InvalidKey:
        accepted = False
    assert accepted == registry_accepts(name, "1"), name


@pytest.mark.parametrize("version", ["1", "10", "2024.1", "v2-rc_1", "a" * 32, "a" * 33, "-1",
                                     ".1", "v/2", "", "v 2"])
def test_a_key_names_a_version_exactly_when_the_registry_would_accept_it(version: str) -> None:
    """The same for versions: batch/input/<model>/versions/<version>/<job>.jsonl."""
    key = f"batch/input/{MODEL}/versions/{version}/job.jsonl"
    try:
        obj = parse_key("bucket", key, "v1")
        accepted = obj.version == version and obj.model == MODEL and obj.job == "job"
    except InvalidKey:
        accepted = False
    assert accepted == registry_accepts(MODEL, version), version


def test_the_key_names_a_version_or_leaves_it_to_the_current_one() -> None:
    current = parse_key("b", input_key(MODEL, "rows", "jsonl"), "v1")
    named = parse_key("b", input_key(MODEL, "rows", "jsonl", "2"), "v1")
    assert (current.key, current.version) == (f"batch/input/{MODEL}/rows.jsonl", None)
    assert (named.key, named.version) == (f"batch/input/{MODEL}/versions/2/rows.jsonl", "2")
    assert current.job_id != named.job_id and named.output_prefix.startswith(
        f"batch/output/{MODEL}/rows-")
    for bad in (f"batch/input/{MODEL}/version/2/rows.jsonl",
                f"batch/input/{MODEL}/versions/rows.jsonl",
                f"batch/input/{MODEL}/versions/2/x/rows.jsonl"):
        with pytest.raises(InvalidKey, match="versions/<version>"):
            parse_key("b", bad, "v1")


@pytest.mark.parametrize(("key", "size", "shards"), [
    (f"batch/input/{MODEL}/rows.shards-3.jsonl", 10, 3),  # asked for in the key
    (f"batch/input/{MODEL}/rows.jsonl", 450, 5),  # from the size: 100 bytes per child
    (f"batch/input/{MODEL}/big.jsonl", 999, 8),  # at most BATCH_MAX_SHARDS
    (f"batch/input/{MODEL}/rows.jsonl", 100, 1),  # one child: a plain job
])
def test_a_large_or_asked_for_job_is_submitted_as_an_array_job(
        cloud: Cloud, monkeypatch: pytest.MonkeyPatch, key: str, size: int,
        shards: int) -> None:
    from batch.submit import BatchSubmitter

    monkeypatch.setenv("BATCH_SHARD_BYTES", "100")
    monkeypatch.setenv("BATCH_MAX_SHARDS", "8")
    calls: list[dict[str, Any]] = []
    during: list[dict[str, Any]] = []  # the job's record while it is being submitted

    class FakeBatch:
        def submit_job(self, **request: Any) -> dict[str, str]:
            calls.append(request)
            during.extend(cloud.store.table.scan()["Items"])
            return {"jobId": "aws-batch-job-1"}

    submitter = BatchSubmitter("queue", "definition")
    submitter.batch = FakeBatch()
    outcome = handle(cloud, event_for(cloud, key=key, size=size), submitter)  # type: ignore[arg-type]
    assert outcome.status == "submitted", outcome
    (call,) = calls
    environment = {e["name"]: e["value"] for e in call["containerOverrides"]["environment"]}
    assert environment["BATCH_SHARDS"] == str(shards)
    if shards > 1:
        assert call["arrayProperties"] == {"size": shards}
    else:
        assert "arrayProperties" not in call
    record = cloud.store.get(outcome.job_id or "")
    assert record is not None and record.get("shards", 1) == shards
    assert len(record.get("shard_states", {})) == (shards if shards > 1 else 0)
    # no child is further on than its job: submitting with it, then submitted with it
    (submitting,) = during
    assert submitting["status"] == "submitting" and record["status"] == "submitted"
    assert {child["state"] for child in submitting.get("shard_states", {}).values()} <= {
        "submitting"}
    assert {child["state"] for child in record.get("shard_states", {}).values()} <= {
        "submitted"}


def test_more_children_than_allowed_are_refused_with_the_reason(
        cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_MAX_SHARDS", "8")
    submitter = RecordingSubmitter()
    outcome = handle(cloud, event_for(cloud, key=f"batch/input/{MODEL}/rows.shards-9.jsonl"),
                     submitter)
    assert outcome.status == "rejected" and "from 1 to 8" in (outcome.reason or "")
    assert submitter.submitted == []


def test_an_upload_to_a_job_being_erased_is_deleted_and_a_failed_delete_still_rejects(
        cloud: Cloud) -> None:
    # The job is `erasing` (DELETE under way): an upload through its URL is deleted too
    job_id = issue_job_id()
    key = input_key(MODEL, job_id, "jsonl", issued=True)
    cloud.store.create({"job_id": job_id, "model": MODEL, "status": jobs.AWAITING_UPLOAD})
    cloud.store.mark_erasing(job_id)
    discarded: list[InputObject] = []
    outcome = trigger.handle(event_for(cloud, key), cloud.store, RecordingSubmitter(), SETTINGS,
                             "req-1", time.time() + 30, discard=discarded.append)
    assert outcome.status == "rejected" and [obj.key for obj in discarded] == [key]
    assert "erasing" in str(outcome.reason) and "the upload was deleted" in str(outcome.reason)

    # A delete S3 refuses leaves the rejection as it is (no retry of the event for it)
    def refused(obj: InputObject) -> None:
        raise RuntimeError("AccessDenied")

    outcome = trigger.handle(event_for(cloud, input_key(MODEL, issue_job_id(), "jsonl",
                                                        issued=True)),
                             cloud.store, RecordingSubmitter(), SETTINGS, "req-2",
                             time.time() + 30, discard=refused)
    assert outcome.status == "rejected"
    assert "the upload could not be deleted" in str(outcome.reason)
