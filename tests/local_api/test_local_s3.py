"""The local S3 of `make serve` (local_api.batch.s3): moto's listings of object versions copy
no object's bytes, and answer as before."""

from __future__ import annotations

import os
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws
from moto.s3.models import FakeKey

from local_api.batch.s3 import listings_share_values

BUCKET = "local-s3-listings"
MIB = 1 << 20


def held_temp_bytes() -> int:
    """Bytes of the temporary files this process holds open (moto's object values past its
    in-memory limit: SpooledTemporaryFile, unlinked once made)."""
    total = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.endswith("(deleted)") or target.startswith("/tmp/"):
                total += os.fstat(int(fd)).st_size
        except OSError:
            continue  # the listing's own descriptor, or one closed meanwhile
    return total


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setattr(FakeKey, "__deepcopy__", None, raising=False)  # undone afterwards
    listings_share_values()
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET,
                                     VersioningConfiguration={"Status": "Enabled"})
        yield client


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_listing_object_versions_copies_no_bytes_and_answers_as_before(s3: object) -> None:
    client = s3  # boto3's S3 client on moto in this process
    for n in range(3):
        client.put_object(Bucket=BUCKET, Key=f"big-{n}", Body=os.urandom(8 * MIB))
    client.put_object(Bucket=BUCKET, Key="big-0", Body=b"second version")
    client.delete_object(Bucket=BUCKET, Key="big-1")  # a delete marker on top
    before = held_temp_bytes()
    for _ in range(10):  # moto copied every version of every key on each, whatever the prefix
        client.list_object_versions(Bucket=BUCKET, Prefix="elsewhere/")
    assert held_temp_bytes() - before < MIB
    listed = client.list_object_versions(Bucket=BUCKET)
    versions = [(v["Key"], v["Size"], v["IsLatest"]) for v in listed["Versions"]]
    assert versions == [("big-0", 14, True), ("big-0", 8 * MIB, False),
                        ("big-1", 8 * MIB, False), ("big-2", 8 * MIB, True)]
    assert [(m["Key"], m["IsLatest"]) for m in listed["DeleteMarkers"]] == [("big-1", True)]
    # the listed copies did not close or move the keys' own bytes
    assert client.get_object(Bucket=BUCKET, Key="big-0")["Body"].read() == b"second version"
    assert len(client.get_object(Bucket=BUCKET, Key="big-2")["Body"].read()) == 8 * MIB
    for version in listed["Versions"]:
        client.delete_object(Bucket=BUCKET, Key=version["Key"], VersionId=version["VersionId"])
    assert "Versions" not in client.list_object_versions(Bucket=BUCKET)
