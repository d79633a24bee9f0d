"""The S3 layout of a batch job and the job id derived from an object version.

`batch/input/<model>/<job>.jsonl|.npy` starts a job; its outputs go under
`batch/output/<model>/<job_id>/`. The job id is `<job>-<12 hex>`, the hex a hash of
bucket/key/versionId, so each object version maps to exactly one id: that is what makes the
trigger idempotent, and a re-upload of the same key a new job with its own output folder.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

INPUT_PREFIX = "batch/input/"
OUTPUT_PREFIX = "batch/output/"
FORMATS = ("jsonl", "npy")
_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")  # model names, as model_registry requires
_JOB = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}-[0-9a-f]{12}")


class InvalidKey(ValueError):
    """The object key is not `batch/input/<model>/<job>.jsonl|.npy`."""


@dataclass(frozen=True)
class InputObject:
    """One uploaded object version that a job runs over."""

    bucket: str
    key: str
    version_id: str
    model: str
    job: str
    format: str

    @property
    def job_id(self) -> str:
        digest = hashlib.sha256(f"{self.bucket}/{self.key}#{self.version_id}".encode()).hexdigest()
        return f"{self.job}-{digest[:12]}"

    @property
    def output_prefix(self) -> str:
        return f"{OUTPUT_PREFIX}{self.model}/{self.job_id}/"


def parse_key(bucket: str, key: str, version_id: str) -> InputObject:
    """The job an input key describes; InvalidKey says what a valid key looks like."""
    expected = f"expected {INPUT_PREFIX}<model>/<job>.jsonl or .npy"
    if not key.startswith(INPUT_PREFIX):
        raise InvalidKey(f"key {key!r} is not under {INPUT_PREFIX}: {expected}")
    parts = key[len(INPUT_PREFIX):].split("/")
    if len(parts) != 2:
        raise InvalidKey(f"key {key!r}: {expected}")
    model, filename = parts
    job, dot, extension = filename.rpartition(".")
    if not dot or extension not in FORMATS:
        raise InvalidKey(f"key {key!r}: the file must end in .jsonl or .npy")
    if not _NAME.fullmatch(model):
        raise InvalidKey(f"key {key!r}: model {model!r} must be lower-case words joined by hyphens")
    if not _JOB.fullmatch(job):
        raise InvalidKey(
            f"key {key!r}: job name {job!r} must be 1-64 characters of [A-Za-z0-9_.-], "
            "starting with a letter or digit")
    return InputObject(bucket, key, version_id or "null", model, job, extension)
