"""Erasing objects from the versioned batch bucket: every version and delete marker, not just
the current object (a plain DeleteObject on a versioned bucket only adds a delete marker and
keeps the data), and the multipart uploads in progress (a running job's `.npy` outputs); and a
job's data capture records (erase_captured). Used by DELETE /v2/batch/jobs/{job_id}
(batch.jobs_api) and by a runner that finds its job erased under it (batch.job).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

_DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys per request


def object_versions(s3: Any, bucket: str, prefix: str, exact: bool = False
                    ) -> list[dict[str, str]]:
    """Every version and delete marker under `prefix` (`exact`: of the key `prefix` only), as
    DeleteObjects wants them: [{"Key", "VersionId"}]."""
    found: list[dict[str, str]] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for entry in (*page.get("Versions", ()), *page.get("DeleteMarkers", ())):
            if not exact or entry["Key"] == prefix:
                found.append({"Key": entry["Key"], "VersionId": entry["VersionId"]})
    return found


def abort_uploads(s3: Any, bucket: str, prefix: str, exact: bool = False) -> int:
    """Abort every multipart upload in progress under `prefix` (`exact`: to that key), so that
    its parts (a running `.npy` job's outputs, batch.writer.NpyUpload) are dropped and no
    later completion can make them an object; how many were aborted."""
    aborted = 0
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket,
                                                                    Prefix=prefix):
        for upload in page.get("Uploads", ()):
            if not exact or upload["Key"] == prefix:
                s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"],
                                          UploadId=upload["UploadId"])
                aborted += 1
    return aborted


def erase(s3: Any, bucket: str, prefix: str, exact: bool = False) -> int:
    """Delete every version under `prefix` (`exact`: of that key), after aborting the multipart
    uploads in progress there; how many versions were deleted. Raises RuntimeError naming the
    keys S3 refused to delete."""
    abort_uploads(s3, bucket, prefix, exact)
    versions = object_versions(s3, bucket, prefix, exact)
    for first in range(0, len(versions), _DELETE_BATCH):
        answer = s3.delete_objects(Bucket=bucket, Delete={
            "Objects": versions[first:first + _DELETE_BATCH], "Quiet": True})
        refused = answer.get("Errors") or []
        if refused:
            raise RuntimeError(f"S3 refused to delete {len(refused)} object version(s), e.g. "
                               f"{refused[0].get('Key')}: {refused[0].get('Message')}")
    return len(versions)


def erase_captured(model: str, job_id: str, since: float | None,
                   environ: Mapping[str, str] = os.environ) -> int | None:
    """Erase batch job `job_id`'s data capture records of `model`, captured since `since`
    (epoch seconds: the job's creation, or the start of the attempt that erases; None: the job
    never started, so nothing was captured), from the store the environment names
    (CAPTURE_BUCKET, CAPTURE_DIR: model_api.aws.capture.store_from_environment; its folders
    model_api.capture.store.erase_job). How many objects were erased; None when no store is
    named (nothing is erased). Raises what the store raises."""
    from model_api.aws.capture import store_from_environment
    from model_api.capture.store import erase_job

    store = store_from_environment(environ)
    if store is None:
        return None
    if since is None:
        return 0
    erased = erase_job(store, model, job_id, datetime.fromtimestamp(since, UTC))
    logging.getLogger("batch").info("job %s: %d data capture object(s) erased", job_id, erased)
    return erased
