"""Fill the model store (template.src.yaml's ModelStoreBucket, or `make serve`'s local one) with
the versions that live there (model_registry.placement): `make deploy` runs it after `sam
deploy`, `make serve` at start-up. Each built version whose manifest names a stored object is
uploaded under its key with its sha256 as object metadata (an unchanged object is not sent
again), and every object under models/ that no built version names any more (a removed model
or version) is deleted, so remove-model + deploy leaves the store as clean as the tree.

    python -m model_registry.store --bucket <ModelStoreBucketName output>
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from model_registry.registry import PROJECT

PREFIX = "models/"
SHA256_METADATA = "sha256"


def stored_versions(models_dir: Path, fallback: Path | None = None
                    ) -> dict[str, tuple[Path, str]]:
    """Every version under `models_dir` (<name>/<version>/manifest.json) whose manifest names a
    stored object: key -> (its file, sha256); the file is beside the manifest, else (a layer
    folder, which leaves it out) at the same place under `fallback`."""
    found: dict[str, tuple[Path, str]] = {}
    for manifest_path in sorted(models_dir.glob("*/*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        stored = manifest.get("store")
        if not (isinstance(stored, dict) and isinstance(stored.get("key"), str)):
            continue
        data = stored.get("data") or {}
        for key, name, sha256 in ((stored["key"], manifest["model_file"], manifest["sha256"]),
                                  *([(data["key"], data["location"], data["sha256"])]
                                    if data else [])):
            path = manifest_path.parent / name
            if not path.is_file() and fallback is not None:
                path = fallback / path.relative_to(models_dir)
            found[key] = (path, sha256)
    return found


def sync(wanted: dict[str, tuple[Path, str]], bucket: str, s3: Any, log: Any = print,
         delete: bool = True) -> tuple[list[str], list[str]]:
    """Upload `wanted` (key -> (file, sha256): stored_versions) to `bucket` through the boto3
    client `s3`, skipping an object already there with that sha256, and (with `delete`) delete
    every other object under models/; the keys uploaded and deleted."""
    from boto3.s3.transfer import TransferConfig

    present: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX):
        for item in page.get("Contents", []):
            present[item["Key"]] = s3.head_object(Bucket=bucket, Key=item["Key"]).get(
                "Metadata", {}).get(SHA256_METADATA, "")
    from model_api.store import size_text

    uploaded = []
    for key, (path, sha256) in wanted.items():
        if present.get(key) == sha256:
            continue
        started = time.perf_counter()
        s3.upload_file(str(path), bucket, key,
                       ExtraArgs={"Metadata": {SHA256_METADATA: sha256}},
                       Config=TransferConfig(multipart_chunksize=64 << 20, max_concurrency=8))
        log(f"model store: {key} ({size_text(path.stat().st_size)}) uploaded in "
            f"{time.perf_counter() - started:.1f} s")
        uploaded.append(key)
    deleted = sorted(set(present) - set(wanted)) if delete else []
    for key in deleted:
        s3.delete_object(Bucket=bucket, Key=key)
        log(f"model store: {key} deleted (no version names it any more)")
    return uploaded, deleted


def deployed_bucket(cloudformation: Any, samconfig: Path = PROJECT.root / "samconfig.toml"
                    ) -> str | None:
    """The ModelStoreBucketName output of the stack samconfig.toml deploys, or None when there
    is no such stack (yet)."""
    import tomllib

    from botocore.exceptions import ClientError

    config = tomllib.loads(samconfig.read_text()) if samconfig.is_file() else {}
    default = config.get("default", {})
    name = (default.get("deploy", {}).get("parameters", {}).get("stack_name")
            or default.get("global", {}).get("parameters", {}).get("stack_name"))
    if not name:
        return None
    try:
        stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    except ClientError:
        return None
    return next((output["OutputValue"] for output in stack.get("Outputs", [])
                 if output["OutputKey"] == "ModelStoreBucketName"), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bucket", help="the stack's ModelStoreBucketName output (default: "
                        "read from the stack samconfig.toml names)")
    parser.add_argument("--models-dir", type=Path, default=PROJECT.models_dir)
    parser.add_argument("--keep", action="store_true",
                        help="upload only, delete nothing (before `sam deploy`: the functions "
                             "still deployed, and a rollback, read the present objects)")
    args = parser.parse_args(argv)
    import boto3

    bucket = args.bucket or deployed_bucket(boto3.client("cloudformation"))
    if bucket is None:
        print("no deployed stack with a ModelStoreBucketName output yet: nothing to fill")
        return 0
    uploaded, deleted = sync(stored_versions(args.models_dir), bucket, boto3.client("s3"),
                             delete=not args.keep)
    print(f"model store s3://{bucket}: {len(uploaded)} uploaded, {len(deleted)} deleted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
