"""A job over a large input as an AWS Batch array job: how many children, and which part each reads.

A job runs as N children ("shards"), N = 1 being the plain job. Child i of N (AWS Batch's
`AWS_BATCH_JOB_ARRAY_INDEX`) takes:
- JSON Lines: the lines that BEGIN in its byte range [i·size/N, (i+1)·size/N) (the last of them
  read to its end, even past the range), so every line belongs to exactly one child whatever
  the cut; a line's number is its number in the whole input (the lines before the child's
  first are counted once, then pinned in its checkpoint);
- .npy: its rows [i·rows/N, (i+1)·rows/N).
Each child has its own checkpoint and parts under `shard-<i>/` of the job's output prefix
(batch.keys) and, once its rows are done, `shard-<i>/_DONE.json` (its counts, its parts, in
order). The child that finds every child done writes the job's `_SUCCESS.json`, once (a
conditional claim, then a conditional write: see batch.job).

N is chosen, in this order, by:
1. the job's creator: `"parameters": {"shards": N}` on `POST /v2/models/<model>/jobs`, or a
   key suffix on the S3-upload path: `batch/input/<model>/<job>.shards-<N>.jsonl|.npy`;
2. the input's size: one child per BATCH_SHARD_BYTES (default 4 GiB) of input, rounded up;
3. at most BATCH_MAX_SHARDS (default 20) children, whichever way N was chosen (a requested
   N above it is refused, never cut quietly).
"""

from __future__ import annotations

import json
import math
import os
import re

SHARD_BYTES = 4 << 30  # of input per child, by default: hours of work for a GPU instance
MAX_SHARDS = 20  # children of one job, by default (AWS Batch allows array jobs of 2-10,000)
ARRAY_LIMIT = 10_000  # AWS Batch's largest array size
INDEX_VARIABLE = "AWS_BATCH_JOB_ARRAY_INDEX"  # set by AWS Batch in each child's container
COUNT_VARIABLE = "BATCH_SHARDS"  # set by the submitter: the number of children
SUFFIX = re.compile(r"\.shards-([1-9][0-9]{0,4})$")  # <job>.shards-<N>.<ext>


class ShardsError(ValueError):
    """A requested number of children that cannot be run (says the allowed range)."""


def shard_bytes() -> int:
    """The input bytes per child that N is chosen from (BATCH_SHARD_BYTES)."""
    return max(1, int(os.environ.get("BATCH_SHARD_BYTES", SHARD_BYTES)))


def max_shards() -> int:
    """The most children a job may have (BATCH_MAX_SHARDS, at most AWS Batch's 10,000)."""
    return max(1, min(int(os.environ.get("BATCH_MAX_SHARDS", MAX_SHARDS)), ARRAY_LIMIT))


def requested_in_key(job: str) -> int | None:
    """N from a job name's `.shards-<N>` suffix, or None when it has none."""
    found = SUFFIX.search(job)
    return int(found.group(1)) if found else None


def check(requested: object, limit: int | None = None) -> int:
    """A requested N, checked: an integer from 1 to the maximum. ShardsError otherwise."""
    limit = max_shards() if limit is None else limit
    if isinstance(requested, bool) or not isinstance(requested, int) \
            or not 1 <= requested <= limit:
        raise ShardsError(f"`shards` must be an integer from 1 to {limit} (BATCH_MAX_SHARDS), "
                          f"not {json.dumps(requested, default=repr)}")
    return requested


def choose(size: int, requested: int | None = None) -> int:
    """How many children run a job over `size` bytes of input: `requested` (checked) when
    given, else one per shard_bytes() of input, rounded up, at most max_shards()."""
    if requested is not None:
        return check(requested)
    return max(1, min(math.ceil(size / shard_bytes()), max_shards()))


def nominal_range(total: int, index: int, count: int) -> tuple[int, int]:
    """Child `index` of `count`'s share of `total` bytes (JSON Lines) or rows (.npy):
    [index·total/count, (index+1)·total/count), the shares covering [0, total) once."""
    return total * index // count, total * (index + 1) // count


def from_environment() -> tuple[int, int]:
    """(this child's index, the number of children) from the container's environment:
    (0, 1) for a job that is not an array job."""
    count = int(os.environ.get(COUNT_VARIABLE, "1") or 1)
    index = int(os.environ.get(INDEX_VARIABLE, "0") or 0) if count > 1 else 0
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"child {index} of {count}: {INDEX_VARIABLE} must be in [0, "
                         f"{COUNT_VARIABLE})")
    return index, count
