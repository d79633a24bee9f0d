"""The S3 layout of a batch job, in one place, and the job id derived from an object version.

Inputs (an upload starts a job):
    batch/input/<model>/<job>.jsonl|.npy                          the model's current version
    batch/input/<model>/versions/<version>/<job>.jsonl|.npy       that version
(the same choice the API makes between /v2/models/<model>/infer and
/v2/models/<model>/versions/<version>/infer). A job created through the API
(`POST /v2/models/<model>[/versions/<version>]/jobs`, batch.jobs_api) has its own folder:
    batch/input/<model>[/versions/<version>]/jobs/<job_id>.jsonl|.npy
where the job id was issued before the upload (`issue_job_id`): that key is the job, so a
second upload to it is a duplicate, not a new job.

Outputs, under `batch/output/<model>/<job_id>/`:
    part-00000.jsonl …               JSON Lines: one part per chunk
    <output>.npy                     .npy: one per model output, written as the job goes (one
                                     multipart upload, batch.writer.NpyUpload)
    _checkpoint.json                 how far the completed chunks reach (batch.checkpoint)
    _SUCCESS.json                    written last: the counts and the parts, in order
A job of N > 1 children (an AWS Batch array job, batch.shards) keeps each child's parts and
checkpoint under `shard-<i>/` (`shard-00002/part-00000.jsonl`, `shard-00002/_checkpoint.json`,
`shard-00002/<output>.npy`: the child's rows), its end in `shard-<i>/_DONE.json`;
`_FINISHING.json` names the child that writes the job's `.npy` outputs (its children's
concatenated) and `_SUCCESS.json` (listing every child's parts, in input order).

The job id of an upload is `<job>-<12 hex>`, the hex a hash of bucket/key/versionId, so each
object version maps to exactly one id: that is what makes the trigger idempotent, and a re-upload
of the same key a new job with its own output folder. An API job's id is its key's file name.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from model_api.names import MODEL_NAME, VERSION

from batch.shards import requested_in_key

INPUT_PREFIX = "batch/input/"
OUTPUT_PREFIX = "batch/output/"
VERSIONS = "versions"  # batch/input/<model>/versions/<version>/<job>.<format>
ISSUED = "jobs"  # batch/input/<model>[/versions/<version>]/jobs/<job_id>.<format>
FORMATS = ("jsonl", "npy")
CHECKPOINT = "_checkpoint.json"
SUCCESS = "_SUCCESS.json"
DONE = "_DONE.json"  # a child's end (an array job's)
FINISHING = "_FINISHING.json"  # which child writes an array job's _SUCCESS.json
_JOB = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}-[0-9a-f]{12}")


class InvalidKey(ValueError):
    """The object key is not `batch/input/<model>[/versions/<version>][/jobs]/<job>.jsonl|.npy`."""


def input_key(model: str, job: str, format: str, version: str | None = None,
              issued: bool = False) -> str:
    """The key an upload must have to start a job of `model` (at `version`; None: current);
    `issued`: `job` is a job id the API issued (issue_job_id)."""
    folder = f"{model}/{VERSIONS}/{version}" if version is not None else model
    if issued:
        folder += f"/{ISSUED}"
    return f"{INPUT_PREFIX}{folder}/{job}.{format}"


def issue_job_id() -> str:
    """A fresh, unguessable job id for the API (112 random bits), of the JOB_ID form."""
    return f"{secrets.token_hex(8)}-{secrets.token_hex(6)}"


@dataclass(frozen=True)
class InputObject:
    """One uploaded object version that a job runs over; `version` None means the model's
    current version (resolved by the runner, batch.models.resolve_version)."""

    bucket: str
    key: str
    version_id: str
    model: str
    job: str
    format: str
    version: str | None = None
    issued: bool = False  # the API issued the job id: it is `job`, whatever the object version

    @property
    def job_id(self) -> str:
        if self.issued:
            return self.job
        digest = hashlib.sha256(f"{self.bucket}/{self.key}#{self.version_id}".encode()).hexdigest()
        return f"{self.job}-{digest[:12]}"

    @property
    def output_prefix(self) -> str:
        return f"{OUTPUT_PREFIX}{self.model}/{self.job_id}/"

    # Keys under output_prefix. Parts are named relative to it (as the checkpoint and the
    # _SUCCESS.json marker list them); the others are whole keys.
    @property
    def checkpoint_key(self) -> str:
        return self.output_prefix + CHECKPOINT

    @property
    def success_key(self) -> str:
        return self.output_prefix + SUCCESS

    def output_key(self, part: str) -> str:
        """The key of a part (or of an assembled output) named relative to output_prefix."""
        return self.output_prefix + part

    @property
    def shards_requested(self) -> int | None:
        """The number of children the key asks for (`<job>.shards-<N>.<ext>`), or None."""
        return requested_in_key(self.job)

    @staticmethod
    def shard_folder(index: int, count: int) -> str:
        """Where child `index` of `count` keeps its parts and checkpoint, relative to
        output_prefix: "" for a job of one child."""
        return f"shard-{index:05d}/" if count > 1 else ""

    @staticmethod
    def jsonl_part(chunk: int) -> str:
        return f"part-{chunk:05d}.jsonl"

    @staticmethod
    def npy_output(output: str) -> str:
        return f"{output}.npy"


def parse_key(bucket: str, key: str, version_id: str) -> InputObject:
    """The job an input key describes; InvalidKey says what a valid key looks like."""
    expected = (f"expected {INPUT_PREFIX}<model>/<job>.jsonl|.npy (the current version) or "
                f"{INPUT_PREFIX}<model>/{VERSIONS}/<version>/<job>.jsonl|.npy")
    if not key.startswith(INPUT_PREFIX):
        raise InvalidKey(f"key {key!r} is not under {INPUT_PREFIX}: {expected}")
    parts = key[len(INPUT_PREFIX):].split("/")
    version: str | None = None
    issued = len(parts) in (3, 5) and parts[-2] == ISSUED
    if issued:
        parts = parts[:-2] + parts[-1:]
    if len(parts) == 4 and parts[1] == VERSIONS:
        model, _, version, filename = parts
    elif len(parts) == 2:
        model, filename = parts
    else:
        raise InvalidKey(f"key {key!r}: {expected}")
    job, dot, extension = filename.rpartition(".")
    if not dot or extension not in FORMATS:
        raise InvalidKey(f"key {key!r}: the file must end in .jsonl or .npy")
    if not MODEL_NAME.fullmatch(model):
        raise InvalidKey(f"key {key!r}: model {model!r} must be lower-case words joined by hyphens")
    if version is not None and not VERSION.fullmatch(version):
        raise InvalidKey(f"key {key!r}: version {version!r} must be 1-32 characters of "
                         "[0-9A-Za-z._-], starting with a letter or digit")
    if issued and not JOB_ID.fullmatch(job):
        raise InvalidKey(f"key {key!r}: {job!r} is not a job id the API issues "
                         "(<16 hex>-<12 hex>); jobs/ holds only the uploads of API jobs")
    if not _JOB.fullmatch(job):
        raise InvalidKey(
            f"key {key!r}: job name {job!r} must be 1-64 characters of [A-Za-z0-9_.-], "
            "starting with a letter or digit")
    return InputObject(bucket, key, version_id or "null", model, job, extension, version, issued)
