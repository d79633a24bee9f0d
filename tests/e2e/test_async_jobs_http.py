"""End to end: asynchronous jobs over HTTP on the local stack, as a client with nothing but the
API runs them after `make serve` (issue 14): POST a job, PUT the input to its presigned
`upload_url` (the local S3 checks presigned URLs as S3 does, local_api.batch.s3), poll, fetch every
output through `output_urls`, DELETE. The upload starts the job through the real path: S3's
EventBridge event, the trigger handler, the runner as a process.

The 200 MB JSON Lines and .npy inputs of the issue run when MODEL_API_BIG_JOBS=1 (about a minute
each on 2 cores, see batch/README.md); a smaller job of each format always runs.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
import httpx
import numpy as np
import pytest
from botocore.config import Config
from model_api.model import LoadedModel

from batch import notify
from local_api.batch import sample
from local_api.batch.loop import BUCKET
from tests.conftest import local_api_server

MODEL, OTHER = "breast-cancer-mlp", "diabetes-linear"
MODELS_DIR = Path(__file__).resolve().parents[2] / "build" / "models"
BIG = os.environ.get("MODEL_API_BIG_JOBS") == "1"
BIG_JSONL_ROWS = 600_000  # 203 MB of JSON Lines
BIG_NPY_ROWS = 1_750_000  # 210 MB of float32 rows
CHUNK_BYTES = 1 << 20  # the runner's chunks here: several per job, so a DELETE lands mid-run


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local API's capture store (the runner writes its records there too)."""
    return tmp_path_factory.mktemp("async-jobs-capture")


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local API's output, the runners' logs included."""
    return tmp_path_factory.mktemp("async-jobs") / "server.log"


@pytest.fixture(scope="module")
def api(server_log: Path, capture_dir: Path) -> Iterator[httpx.Client]:
    log = server_log
    saved = os.environ.get("BATCH_CHUNK_BYTES")
    os.environ["BATCH_CHUNK_BYTES"] = str(CHUNK_BYTES)  # the runner inherits the server's
    try:
        with local_api_server(log, extra=("--capture-dir", str(capture_dir))) as (client, _):
            yield client
    finally:
        if saved is None:
            os.environ.pop("BATCH_CHUNK_BYTES", None)
        else:
            os.environ["BATCH_CHUNK_BYTES"] = saved


def local_aws(url: str) -> dict[str, str]:
    """boto3's arguments for the local stack a presigned URL points at."""
    return {"endpoint_url": urlunsplit((*urlsplit(url)[:2], "", "", "")),
            "region_name": "us-east-1", "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing"}


def s3_at(url: str) -> Any:
    """An S3 client of the local stack the URL points at (to look, not to use the API)."""
    return boto3.client("s3", **local_aws(url),
                        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))


def keys_under(s3: Any, prefix: str) -> list[str]:
    """Every object version and delete marker under `prefix`, listed through S3."""
    answer = s3.list_object_versions(Bucket=BUCKET, Prefix=prefix)
    return [entry["Key"] for entry in (*answer.get("Versions", ()),
                                       *answer.get("DeleteMarkers", ()))]


def create(api: httpx.Client, size: int, format_: str = "jsonl", model: str = MODEL,
           **extra: Any) -> dict[str, Any]:
    response = api.post(f"/v2/models/{model}/jobs", json={"size": size, "format": format_,
                                                         **extra})
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    assert job["status"] == "awaiting_upload" and job["upload"]["size"] == size
    assert job["upload"]["expires_in"] == 3600 and job["upload"]["method"] == "PUT"
    assert job["status_url"] == f"/v2/models/{model}/jobs/{job['job_id']}"
    return job


def upload(job: dict[str, Any], path: Path) -> None:
    with path.open("rb") as body:
        answer = httpx.put(job["upload_url"], content=body, timeout=300,
                           headers={"Content-Length": str(path.stat().st_size)})
    assert answer.status_code == 200, answer.text


def wait_for(api: httpx.Client, job: dict[str, Any], done: Any, timeout: float = 600
             ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        record: dict[str, Any] = api.get(job["status_url"]).json()
        if done(record) or time.monotonic() > deadline:
            return record
        time.sleep(0.2)


def finished(record: dict[str, Any]) -> bool:
    return record.get("status") in ("succeeded", "failed")


def fetch(url: str) -> bytes:
    answer = httpx.get(url, timeout=300)
    assert answer.status_code == 200, answer.text
    return answer.content


def captured_by(folder: Path, job_id: str) -> list[Path]:
    """The data capture objects of batch job `job_id` in the local capture store `folder`
    (capture/<model>/<yyyy>/<mm>/<dd>/job-<job_id>/: model_api.capture.store)."""
    return sorted(folder.glob(f"capture/*/*/*/*/job-{job_id}/*.jsonl"))


def erase_and_check(api: httpx.Client, job: dict[str, Any], record: dict[str, Any],
                    capture_dir: Path) -> int:
    """DELETE the job: then it is 404, S3 holds nothing under its input key and its output
    prefix (every version listed), and the capture store nothing it captured (records it
    kept, each naming the job, until then). How many capture objects it had."""
    s3 = s3_at(job["upload_url"])
    prefix = record["output_prefix"].split(f"s3://{BUCKET}/", 1)[1]
    captured = captured_by(capture_dir, job["job_id"])
    for path in captured:
        assert all(json.loads(line)["job_id"] == job["job_id"] and
                   json.loads(line)["path"] == "batch" for line in path.read_text().splitlines())
    answer = api.delete(f"/v2/batch/jobs/{job['job_id']}")
    assert answer.status_code == 200, answer.text
    erased = answer.json()["erased"]
    assert erased["input"]["versions"] == 1 and erased["record"] is True
    assert erased["captured"] == {"objects": len(captured)}
    assert api.get(job["status_url"]).status_code == 404
    assert keys_under(s3, record["input"]["key"]) == [] and keys_under(s3, prefix) == []
    assert captured_by(capture_dir, job["job_id"]) == []
    return len(captured)


def run_jsonl(api: httpx.Client, tmp_path: Path, rows: int, capture_dir: Path) -> None:
    path = tmp_path / "rows.jsonl"
    sample.main(["--model", MODEL, "--rows", str(rows), "--out", str(path)])
    parameters = {"owner": "e2e", "weights": [0.5, 1e-3], "": {"nested": [None, True]}}
    job = create(api, path.stat().st_size, parameters=parameters)
    started = time.monotonic()
    upload(job, path)
    record = wait_for(api, job, finished)
    seconds = time.monotonic() - started
    assert record["status"] == "succeeded", record
    assert (record["rows_read"], record["outputs_written"], record["errors"]) == (rows, rows, 0)
    assert record["parameters"] == parameters and record["progress"]["fraction_done"] == 1
    assert (record["progress"]["rows_done"], record["progress"]["rows_total"],
            record["progress"]["rows_total_exact"]) == (rows, rows, True)
    urls = record["output_urls"]
    assert urls["total"] == len(urls["parts"]) and urls["next_start"] is None
    manifest = json.loads(fetch(urls["manifest"]))
    assert [part["name"] for part in urls["parts"]] == manifest["parts"]
    ids = []
    for part in urls["parts"]:
        for line in fetch(part["url"]).splitlines():
            record_ = json.loads(line)
            assert "error" not in record_, record_
            ids.append(record_["id"])
    assert ids == [str(n) for n in range(rows)]  # every line exactly one record, in order
    print(f"\n{rows} rows, {path.stat().st_size / 1e6:.0f} MB of JSON Lines: upload to "
          f"outputs available in {seconds:.1f} s ({rows / seconds:,.0f} rows/s)")
    # every line an exchange of one row, sampled (make serve's 100 %): records in each chunk's
    # flush, in the job's folders, erased with it
    assert erase_and_check(api, job, record, capture_dir) > 0


def run_npy(api: httpx.Client, tmp_path: Path, rows: int, capture_dir: Path) -> None:
    path = tmp_path / "rows.npy"
    sample.main(["--model", MODEL, "--rows", str(rows), "--out", str(path)])
    job = create(api, path.stat().st_size, "npy")
    started = time.monotonic()
    upload(job, path)
    record = wait_for(api, job, finished)
    seconds = time.monotonic() - started
    assert record["status"] == "succeeded", record
    assert (record["rows_read"], record["outputs_written"]) == (rows, rows)
    # the finished job's progress, though its rows may all be done before a record update
    progress = record["progress"]
    assert (progress["rows_done"], progress["rows_total"], progress["rows_total_exact"],
            progress["fraction_done"], progress["eta_seconds"]) == (rows, rows, True, 1.0, 0.0)
    assert progress["rows_per_second"] > 0
    parts = {part["name"]: part["url"] for part in record["output_urls"]["parts"]}
    assert sorted(parts) == ["label.npy", "probabilities.npy"]
    inputs = np.load(path)
    model = LoadedModel.load(MODELS_DIR / MODEL / "1")
    expected = model.run({"features": inputs[:4096]}, ["label", "probabilities"])
    for name, url in parts.items():
        (tmp_path / name).write_bytes(fetch(url))
        answer = np.load(tmp_path / name)
        assert answer.shape[0] == rows  # one answer per row
        np.testing.assert_allclose(answer[:4096], expected[name.removesuffix(".npy")],
                                   rtol=1e-5, atol=1e-6)
    print(f"\n{rows} rows, {path.stat().st_size / 1e6:.0f} MB of .npy: upload to outputs "
          f"available in {seconds:.1f} s ({rows / seconds:,.0f} rows/s)")
    erase_and_check(api, job, record, capture_dir)


@pytest.mark.slow
def test_a_json_lines_job_over_http(api: httpx.Client, tmp_path: Path,
                                    capture_dir: Path) -> None:
    run_jsonl(api, tmp_path, 20_000, capture_dir)


@pytest.mark.slow
def test_a_npy_job_over_http(api: httpx.Client, tmp_path: Path,
                             capture_dir: Path) -> None:
    run_npy(api, tmp_path, 100_000, capture_dir)


@pytest.mark.slow
@pytest.mark.skipif(not BIG, reason="the 200 MB inputs run with MODEL_API_BIG_JOBS=1")
def test_a_200_mb_json_lines_job_over_http(api: httpx.Client, tmp_path: Path,
                                           capture_dir: Path) -> None:
    run_jsonl(api, tmp_path, BIG_JSONL_ROWS, capture_dir)


@pytest.mark.slow
@pytest.mark.skipif(not BIG, reason="the 200 MB inputs run with MODEL_API_BIG_JOBS=1")
def test_a_200_mb_npy_job_over_http(api: httpx.Client, tmp_path: Path,
                                    capture_dir: Path) -> None:
    run_npy(api, tmp_path, BIG_NPY_ROWS, capture_dir)


def test_s3_refuses_a_tampered_expired_or_oversized_upload(api: httpx.Client) -> None:
    body = b'{"id": "x", "inputs": []}\n'
    job = create(api, len(body))
    url, s3 = job["upload_url"], s3_at(job["upload_url"])
    key = urlsplit(url).path.split(f"/{BUCKET}/", 1)[1]

    def put(target: str, content: bytes) -> httpx.Response:
        return httpx.put(target, content=content, timeout=30)

    # Over (or under) the stated size: the URL is signed for that Content-Length
    for content in (body + b" ", body[:-1]):
        refused = put(url, content)
        assert refused.status_code == 403 and "SignatureDoesNotMatch" in refused.text
    # Tampered: another key, another expiry, another signature
    last = job["job_id"][-1]
    other_key = url.replace(job["job_id"], job["job_id"][:-1] + ("1" if last == "0" else "0"))
    other_expiry = url.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200")
    signature = urlsplit(url).query.rsplit("X-Amz-Signature=", 1)[1]
    other_signature = url.replace(signature, signature[::-1])
    for tampered in (other_key, other_expiry, other_signature):
        assert tampered != url
        refused = put(tampered, body)
        assert refused.status_code == 403 and "SignatureDoesNotMatch" in refused.text
    # Expired: a URL for the same key, signed as the API signs, valid for one second
    expired = s3.generate_presigned_url("put_object", ExpiresIn=1, HttpMethod="PUT", Params={
        "Bucket": BUCKET, "Key": key, "ContentLength": len(body)})
    time.sleep(2)
    refused = put(expired, body)
    assert refused.status_code == 403 and "Request has expired" in refused.text
    # None of them wrote anything; the job still waits for its upload, which then works
    assert keys_under(s3, key) == []
    assert api.get(job["status_url"]).json()["status"] == "awaiting_upload"
    assert put(url, body).status_code == 200
    record = wait_for(api, job, finished, timeout=60)
    assert record["status"] == "succeeded" and record["errors"] == 1  # `inputs` is empty
    api.delete(job["status_url"])


@pytest.mark.parametrize("client", ["urllib", "form", "multipart"])
def test_an_upload_with_a_form_content_type_keeps_its_bytes(api: httpx.Client,
                                                            client: str) -> None:
    # Given a job's input, uploaded as stock clients send it: urllib (and curl --data-binary)
    # say application/x-www-form-urlencoded, which moto alone would parse as a form
    body = b"".join(json.dumps({"id": str(n), "inputs": [{
        "name": "features", "shape": [1, 30], "datatype": "FP32",
        "data": [n / 7 + 0.25] * 30}]}).encode() + b"\n" for n in range(3))
    job = create(api, len(body))
    if client == "urllib":
        request = urllib.request.Request(job["upload_url"], data=body, method="PUT")
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
        assert request.get_header("Content-type") == "application/x-www-form-urlencoded"
    else:
        media_type = {"form": "application/x-www-form-urlencoded",
                      "multipart": "multipart/form-data; boundary=x"}[client]
        answer = httpx.put(job["upload_url"], content=body, timeout=30,
                           headers={"Content-Type": media_type})
        assert answer.status_code == 200, answer.text
    # Then S3 holds exactly those bytes, and the job runs every row
    record = wait_for(api, job, finished, timeout=60)
    stored = s3_at(job["upload_url"]).get_object(Bucket=BUCKET, Key=record["input"]["key"])
    assert stored["Body"].read() == body
    assert record["status"] == "succeeded", record
    assert (record["rows_read"], record["outputs_written"], record["errors"]) == (3, 3, 0)
    api.delete(job["status_url"])


@pytest.mark.parametrize(("request_body", "status", "says"), [
    ({}, 400, "`size`"),
    ({"size": "12"}, 400, "`size`"),
    ({"size": 0}, 400, "at least one byte"),
    ({"size": 6 * 1024**3}, 413, "at most"),
    ({"size": 10, "format": "csv"}, 400, "format"),
    ({"size": 10, "parameters": []}, 400, "parameters"),
    ({"size": 10, "colour": "red"}, 400, "unknown field"),
    ({"size": 10, "parameters": {"shards": 0}}, 400, "`shards` must be an integer from 1"),
    ("not json", 400, "not JSON"),
    ('{"size": 10, "parameters": {"x": NaN}}', 400, "not JSON"),
], ids=["no-size", "string-size", "zero", "over-5-GiB", "format", "parameters", "unknown",
        "shards", "not-json", "nan"])
def test_a_job_request_that_cannot_be_served_is_refused(
        api: httpx.Client, request_body: Any, status: int, says: str) -> None:
    content = request_body if isinstance(request_body, str) else json.dumps(request_body)
    answer = api.post(f"/v2/models/{MODEL}/jobs", content=content)
    assert answer.status_code == status and says in answer.json()["error"], answer.text


def test_a_npy_job_of_a_text_model_is_refused_when_created(api: httpx.Client) -> None:
    # text-topics takes and answers text: its .npy job could only fail after the upload
    answer = api.post("/v2/models/text-topics/jobs", json={"size": 10, "format": "npy"})
    assert answer.status_code == 400, answer.text
    assert "input 'text', output 'label'" in answer.json()["error"], answer.text
    assert api.post("/v2/models/text-topics/jobs", json={"size": 10}).status_code == 201


def test_a_job_of_another_model_or_an_unknown_one_is_404(api: httpx.Client) -> None:
    job = create(api, 10)
    job_id = job["job_id"]
    for method in ("GET", "DELETE"):
        for path in (f"/v2/models/{OTHER}/jobs/{job_id}",
                     f"/v2/batch/jobs/{job_id[:-1]}{'0' if job_id[-1] != '0' else '1'}",
                     f"/v2/models/{MODEL}/jobs/0123456789abcdef-0123456789ab",
                     "/v2/batch/jobs/not-a-job"):
            answer = api.request(method, path)
            assert answer.status_code == 404 and "no batch job" in answer.json()["error"], path
    assert api.post("/v2/models/no-such-model/jobs", json={"size": 10}).status_code == 404
    # The job itself is untouched by those, and is erased through its own model's route
    assert api.get(f"/v2/batch/jobs/{job_id}").json()["status"] == "awaiting_upload"
    assert api.delete(job["status_url"]).status_code == 200
    assert api.get(f"/v2/batch/jobs/{job_id}").status_code == 404


def test_a_versioned_job_runs_that_version(api: httpx.Client, tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    sample.main(["--model", MODEL, "--rows", "50", "--out", str(path)])
    answer = api.post(f"/v2/models/{MODEL}/versions/1/jobs", json={"size": path.stat().st_size})
    assert answer.status_code == 201, answer.text
    job = answer.json()
    assert "/versions/1/jobs/" in job["upload_url"] and job["model_version"] == "1"
    upload(job, path)
    record = wait_for(api, job, finished, timeout=60)
    assert record["status"] == "succeeded" and record["model_version"] == "1"
    assert api.delete(job["status_url"]).status_code == 200


def test_delete_mid_run_stops_the_runner_and_leaves_nothing(api: httpx.Client, tmp_path: Path,
                                                            capture_dir: Path,
                                                            server_log: Path) -> None:
    path = tmp_path / "rows.jsonl"
    sample.main(["--model", MODEL, "--rows", "100000", "--out", str(path)])  # 34 chunks
    job = create(api, path.stat().st_size)
    upload(job, path)
    running = wait_for(api, job, lambda r: finished(r) or r.get("rows_read", 0) > 0)
    assert running["status"] == "running", running  # some chunks done, more to come
    s3 = s3_at(job["upload_url"])
    prefix = running["output_prefix"].split(f"s3://{BUCKET}/", 1)[1]
    assert keys_under(s3, prefix)  # the runner has written parts
    assert captured_by(capture_dir, job["job_id"])  # and captured some of its rows
    answer = api.delete(f"/v2/models/{MODEL}/jobs/{job['job_id']}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["erased"]["captured"]["objects"] > 0
    assert api.get(job["status_url"]).status_code == 404
    # Nothing under its prefixes once the runner has met the erasure, and nothing after it had
    # time for several more chunks. A write it had in flight as the erasure began (a chunk's
    # checkpoint goes out beside its record update) may land just after the erasure's listing:
    # the runner deletes it at its next check, a chunk later at most (docs/security.md).
    # So too what it captured of a chunk it was working as the erasure began: the runner
    # erases that itself as it stops (its log says so), then nothing of the job is left.
    left = (running["input"]["key"], prefix)
    stopped = f"job {job['job_id']} was erased while it ran: stopped"
    deadline = time.monotonic() + 30
    while ((any(keys_under(s3, key) for key in left) or stopped not in server_log.read_text())
           and time.monotonic() < deadline):
        time.sleep(0.1)
    assert stopped in server_log.read_text()
    for _ in range(3):
        assert keys_under(s3, running["input"]["key"]) == [] and keys_under(s3, prefix) == []
        assert captured_by(capture_dir, job["job_id"]) == []
        time.sleep(1)


def test_a_finished_job_sends_its_event(api: httpx.Client, tmp_path: Path) -> None:
    body = (json.dumps({"id": "a", "inputs": [{"name": "features", "shape": [1, 30],
                                               "datatype": "FP32", "data": [0.0] * 30}]})
            + "\n").encode()
    job = create(api, len(body))
    aws = local_aws(job["upload_url"])
    events, sqs = boto3.client("events", **aws), boto3.client("sqs", **aws)
    queue = sqs.create_queue(QueueName="job-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"]
                                   )["Attributes"]["QueueArn"]
    events.put_rule(Name="job-events", EventPattern=json.dumps({
        "source": [notify.SOURCE], "detail-type": [notify.DETAIL_TYPE]}))
    events.put_targets(Rule="job-events", Targets=[{"Id": "queue", "Arn": arn}])
    assert httpx.put(job["upload_url"], content=body).status_code == 200
    assert wait_for(api, job, finished, timeout=60)["status"] == "succeeded"
    details: list[dict[str, Any]] = []  # the runner sends it just after recording success
    deadline = time.monotonic() + 10
    while not details and time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=1).get("Messages", [])
        details += [json.loads(m["Body"])["detail"] for m in messages]
    assert [d for d in details if d["job_id"] == job["job_id"]] == [{
        "job_id": job["job_id"], "model": MODEL, "model_version": "1", "status": "succeeded",
        "rows_read": 1, "outputs_written": 1, "errors": 0, "attempts": 1,
        "output_prefix": details[0]["output_prefix"], "finished_at": details[0]["finished_at"]}]
    api.delete(job["status_url"])


def test_a_job_asking_for_4_shards_runs_as_four_children(api: httpx.Client,
                                                         tmp_path: Path,
                                                         capture_dir: Path) -> None:
    """`"parameters": {"shards": 4}`: an array job of four children (local: four runner
    processes), each visible in the job's status, one job to the client."""
    rows = 4000
    path = tmp_path / "rows.jsonl"
    sample.main(["--model", MODEL, "--rows", str(rows), "--out", str(path)])
    job = create(api, path.stat().st_size, parameters={"shards": 4})
    upload(job, path)
    seen = wait_for(api, job, lambda record: "shards" in record or finished(record))
    assert [child["shard"] for child in seen["shards"]] == [0, 1, 2, 3]
    record = wait_for(api, job, finished)
    assert record["status"] == "succeeded", record
    assert record["shards"] and [c["state"] for c in record["shards"]] == ["succeeded"] * 4
    assert sum(child["rows"] for child in record["shards"]) == rows == record["rows_read"]
    assert all(child["rows"] > 0 for child in record["shards"])
    progress = record["progress"]
    assert (progress["rows_done"], progress["rows_total"], progress["shards_done"],
            progress["fraction_done"], progress["eta_seconds"]) == (rows, rows, 4, 1.0, 0.0)
    assert progress["rows_per_second"] > 0  # the children's own paces, once all are done
    manifest = json.loads(fetch(record["output_urls"]["manifest"]))
    assert [child["shard"] for child in manifest["shards"]] == [0, 1, 2, 3]
    ids = [json.loads(line)["id"] for part in record["output_urls"]["parts"]
           for line in fetch(part["url"]).splitlines()]
    assert ids == [str(n) for n in range(rows)]
    # the four children captured into the one job's folders, all erased with it
    assert erase_and_check(api, job, record, capture_dir) > 0
