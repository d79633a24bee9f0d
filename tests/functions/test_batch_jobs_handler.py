"""The jobs handler (functions/batch_jobs/app.py) on API Gateway events, in-process over moto's
DynamoDB: the job's public record, and for everything else the API's 4xx `{"error": ...}`,
never a 500 (a path Powertools cannot route once fell into the catch-all handler and was one).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from model_api.routes import BATCH_JOBS, routes_of
from moto import mock_aws

from local_api.batch.loop import load_handler
from tests.conftest import EVENTS_DIR, LambdaContext, catalog_file

TABLE = "jobs"
JOB = "rows-0123456789ab"
MODELS = ("breast-cancer-mlp", "diabetes-linear", "text-topics", "digits-cnn")
TEMPLATE = json.loads((EVENTS_DIR / "batch" / "get-job.json").read_text())


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ModuleType]:
    for name, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "JOBS_TABLE": TABLE,
                        "BATCH_BUCKET": "batch", "MODEL_CATALOG": catalog_file(tmp_path, *MODELS),
                        "POWERTOOLS_TRACE_DISABLED": "true",
                        "POWERTOOLS_METRICS_NAMESPACE": "Test"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        table = boto3.resource("dynamodb").create_table(
            TableName=TABLE, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}])
        table.put_item(Item={"job_id": JOB, "status": "running", "rows_read": 7,
                             "claim_token": "secret", "claim_expires_at": 1})
        yield load_handler("batch_jobs")


def call(jobs: ModuleType, path: str, method: str = "GET",
         job_id: str | None = None) -> tuple[int, dict[str, Any]]:
    event = copy.deepcopy(TEMPLATE)
    event.update(path=path, httpMethod=method,
                 pathParameters={"job_id": job_id} if job_id is not None else None)
    event["requestContext"].update(path=f"/prod{path}", httpMethod=method)
    answer = jobs.lambda_handler(event, LambdaContext())
    assert answer["multiValueHeaders"]["Content-Type"] == ["application/json"], answer
    return answer["statusCode"], json.loads(answer["body"])


def assert_error(answer: tuple[int, dict[str, Any]], status: int) -> str:
    assert answer[0] == status, answer
    assert set(answer[1]) == {"error"} and isinstance(answer[1]["error"], str), answer
    return str(answer[1]["error"])


def test_every_jobs_event_reaches_its_route(jobs: ModuleType) -> None:
    """events/batch/ as `make events` writes them: a job request is created (201, its upload
    URL signed for the stated size); the example job does not exist, so reading or erasing
    it, under its model or by id, is 404."""
    names = {route.example for route in routes_of(BATCH_JOBS)}
    assert names == {"create-job", "version-create-job", "get-model-job", "delete-model-job",
                     "get-job", "delete-job"}
    events = {name: json.loads((EVENTS_DIR / "batch" / f"{name}.json").read_text())
              for name in names}
    for name, event in sorted(events.items()):
        answer = jobs.lambda_handler(event, LambdaContext())
        body = json.loads(answer["body"])
        if name.endswith("create-job"):
            assert answer["statusCode"] == 201, body
            assert "content-length" in body["upload_url"] and body["upload"]["size"] == 1024
        else:
            assert answer["statusCode"] == 404 and "no batch job" in body["error"], (name, body)


def test_a_job_is_its_public_record(jobs: ModuleType) -> None:
    status, body = call(jobs, f"/v2/batch/jobs/{JOB}", job_id=JOB)
    assert status == 200 and body == {"job_id": JOB, "status": "running", "rows_read": 7}


@pytest.mark.parametrize(("path", "method", "job_id"), [
    ("/v2/batch/jobs/rows-000000000000", "GET", "rows-000000000000"),  # no such job
    ("/v2/batch/jobs/not-a-job", "GET", "not-a-job"),                  # not an id
    ("/v2/batch/jobs/\x03U", "GET", "\x03U"),                          # Powertools: no route
    ("/v2/batch/jobs/a\nb", "GET", "a\nb"),
    ("/v2/batch/jobs/a/b", "GET", None),
    ("/v2/batch/jobs", "GET", None),
    (f"/v2/batch/jobs/{JOB}", "POST", JOB),
], ids=["unknown", "malformed", "control-character", "newline", "two-segments", "no-id",
        "post"])
def test_anything_else_is_a_404_in_the_error_format(jobs: ModuleType, path: str, method: str,
                                                    job_id: str | None) -> None:
    assert_error(call(jobs, path, method, job_id), 404)


def test_an_unexpected_failure_is_a_500_naming_only_the_request(
        jobs: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(_: str) -> None:
        raise RuntimeError("table secrets")

    monkeypatch.setattr(jobs.jobs.store, "get", fail)
    message = assert_error(call(jobs, f"/v2/batch/jobs/{JOB}", job_id=JOB), 500)
    assert "secrets" not in message and LambdaContext.aws_request_id in message
