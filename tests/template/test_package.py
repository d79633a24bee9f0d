"""`sam package`, the upload step of `make deploy` (sam deploy packages first), on the built
template with its nested group stacks, against S3 on a local moto server: every group's
template is uploaded and the root names it by URL, and the runtime layer, declared by the root
and by every group, is uploaded once (the same content, the same S3 key)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer

from tests.conftest import BUILT_TEMPLATE, SAM

BUCKET = "artifacts"


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        yield endpoint
    finally:
        server.stop()


def test_sam_package_uploads_every_group_and_one_runtime_layer(s3: str, tmp_path: Path) -> None:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": s3,
           "SAM_CLI_TELEMETRY": "0"}
    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    packaged = tmp_path / "packaged.yaml"
    result = subprocess.run(
        [SAM, "package", "--template-file", str(BUILT_TEMPLATE), "--s3-bucket", BUCKET,
         "--output-template-file", str(packaged)],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    root = yaml.load(packaged.read_text(), Loader=yaml.CSafeLoader)
    groups = {name: r for name, r in root["Resources"].items()
              if r["Type"] == "AWS::Serverless::Application"}
    assert groups
    for name, group in groups.items():
        location = group["Properties"]["Location"]
        assert location.startswith(f"{s3}/{BUCKET}/") and location.endswith(".template"), name
    objects = client.list_objects_v2(Bucket=BUCKET)["Contents"]
    keys = {o["Key"] for o in objects}
    templates = [k for k in keys if k.endswith(".template")]
    assert len(templates) == len(groups)
    # The runtime layer (tens of MB zipped) is in S3 once, however many stacks declare it
    runtime = [o for o in objects if o["Size"] > 10_000_000]
    assert len(runtime) == 1, sorted((o["Size"], o["Key"]) for o in objects)[-4:]
    layer_uri = root["Resources"]["RuntimeLayer"]["Properties"]["ContentUri"]
    assert layer_uri.endswith(runtime[0]["Key"])
