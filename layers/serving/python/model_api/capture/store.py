"""Where captured records are kept, and how they are read back and erased.

Key layout (the same in S3 and in a local folder), JSON Lines objects date-partitioned by UTC
time under each model's prefix:

    capture/<model>/<yyyy>/<mm>/<dd>/<HHMMSS.ffffff>Z-<uuid4 hex>.jsonl    one per flush (make
        serve: a worker's lines as the local API reads them)
    capture/<model>/<yyyy>/<mm>/<dd>/job-<job_id>/<HHMMSS.ffffff>Z-<uuid4 hex>.jsonl    one per
        flush of a batch job (a chunk), its records carrying its `job_id`: erasing the job
        (DELETE of it, batch.jobs_api) erases these folders (erase_job)
    capture/<model>/<yyyy>/<mm>/<dd>/<HH>/<stream>-<n>-<time>-<uuid>.jsonl  Firehose's objects
        (the Lambda functions' log lines, a few minutes' worth each)

A store is anything with put / keys / get / delete / replace (CaptureStore): FolderStore here
(make serve's .local-api/capture/), S3Store in model_api/aws/capture.py (a versioned bucket:
its delete removes every version and delete marker of the key, so erased means gone).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from model_api.capture.record import FORMAT, MARKER

PREFIX = "capture/"


JOB_FOLDER = "job-"  # capture/<model>/<day>/job-<job_id>/: one batch job's flushes of that day


class CaptureStore(Protocol):
    """The operations capture, `make capture` and erasure need of a store."""

    def put(self, key: str, body: bytes) -> None:
        """Write one object (raises on failure)."""

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under `prefix`, in ascending order."""

    def get(self, key: str) -> bytes:
        """One object's bytes."""

    def delete(self, key: str) -> None:
        """Remove the object and every earlier version of it."""

    def replace(self, key: str, body: bytes) -> None:
        """Write `body` as the object's only content: no earlier version remains."""

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under `prefix`, every version; how many (versions) went."""


def model_prefix(model: str) -> str:
    return f"{PREFIX}{model}/"


def object_key(model: str, when: datetime | None = None, job_id: str | None = None) -> str:
    """A new object's key for `model` at `when` (default now, UTC), in the folder of batch job
    `job_id` when given (see the module's docstring). ValueError for a job id that could leave
    its folder."""
    when = when or datetime.now(UTC)
    folder = (f"{model_prefix(model)}{when:%Y/%m/%d}/" if job_id is None
              else job_folder(model, when.date(), job_id))
    return f"{folder}{when:%H%M%S.%f}Z-{uuid.uuid4().hex}.jsonl"


def job_folder(model: str, day: date, job_id: str) -> str:
    """The folder of batch job `job_id`'s flushes of `model` on UTC `day`. ValueError for a job
    id that could leave it."""
    return f"{model_prefix(model)}{day:%Y/%m/%d}/{JOB_FOLDER}{_checked_job(job_id)}/"


def _checked_job(job_id: str) -> str:
    if not job_id or "/" in job_id or job_id in (".", ".."):
        raise ValueError(f"not a batch job id for a capture key: {job_id!r}")
    return job_id


def job_prefixes(model: str, job_id: str, since: datetime,
                 until: datetime | None = None) -> list[str]:
    """The folders batch job `job_id` of `model` flushed records into from `since` (the job's
    creation) to `until` (default now): one per UTC day. ValueError as object_key."""
    _checked_job(job_id)  # (refused even when the window holds no day)
    day, last = since.astimezone(UTC).date(), (until or datetime.now(UTC)).astimezone(UTC).date()
    found = []
    while day <= last:
        found.append(job_folder(model, day, job_id))
        day += timedelta(days=1)
    return found


def erase_job(store: CaptureStore, model: str, job_id: str, since: datetime,
              until: datetime | None = None) -> int:
    """Delete every record batch job `job_id` of `model` captured from `since` to `until`
    (default now; job_prefixes), every version: its folders whole, none of another job's or
    of the API's records. Returns the number of objects (flushes) erased."""
    erased = 0
    for prefix in job_prefixes(model, job_id, since, until):
        erased += sum(1 for _ in store.keys(prefix))
        store.delete_prefix(prefix)  # also older versions an object without a current one left
    return erased


def day_of(key: str) -> date | None:
    """The UTC day a key is partitioned under (capture/<model>/<yyyy>/<mm>/<dd>/..., as written
    here and as Firehose writes with its hour level below); None for a key not of the layout
    (Firehose's error output, capture/<model>/errors/...)."""
    parts = key.split("/")
    try:
        return date(int(parts[2]), int(parts[3]), int(parts[4]))
    except (IndexError, ValueError):
        return None


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (a trailing Z is UTC; a time without a zone is taken as UTC).
    ValueError when it is not one."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def time_window(since: str | None, until: str | None
                ) -> tuple[datetime | None, datetime | None]:
    """The --since/--until of a command line, parsed (parse_time; None where not given).
    ValueError naming both options when either is not an ISO 8601 time, or when --since is
    not before --until (an empty window is a typo, not a question)."""
    try:
        window = (parse_time(since) if since else None, parse_time(until) if until else None)
    except ValueError as exc:
        raise ValueError(f"--since/--until must be ISO 8601 times: {exc}") from None
    if window[0] is not None and window[1] is not None and window[0] >= window[1]:
        raise ValueError(f"--since ({since}) must be before --until ({until})")
    return window


def has_records(store: CaptureStore, model: str) -> bool:
    """Whether the store holds any object of `model` (in any window)."""
    return next(iter(store.keys(model_prefix(model))), None) is not None


def _in_days(key: str, since: datetime | None, until: datetime | None) -> bool:
    day = day_of(key)
    if day is None:
        return False
    # a flush's key is named at its end: its records may be a little older (a batch chunk)
    if since is not None and day < (since - timedelta(days=1)).date():
        return False
    return not (until is not None and day > until.date())


def _within(record: dict[str, Any], since: datetime | None, until: datetime | None) -> bool:
    try:
        when = parse_time(str(record["time"]))
    except (KeyError, ValueError):
        return since is None and until is None
    return (since is None or when >= since) and (until is None or when < until)


_DECODER = json.JSONDecoder()


def _records(body: bytes) -> list[dict[str, Any]]:
    """The JSON objects of an object's body: one per line as written here, and as Firehose
    writes the log lines (with or without a line break between them; none is lost when two
    are run together). The record format's marker (record.MARKER) is left out."""
    text, at = body.decode("utf-8"), 0
    found: list[dict[str, Any]] = []
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return found
        item, at = _DECODER.raw_decode(text, at)
        if isinstance(item, dict):
            item.pop(MARKER, None)
            found.append(item)


def read(store: CaptureStore, model: str, since: datetime | None = None,
         until: datetime | None = None) -> Iterator[dict[str, Any]]:
    """The model's records with since <= time < until (either bound optional), oldest object
    first."""
    for key in store.keys(model_prefix(model)):
        if _in_days(key, since, until):
            for record in _records(store.get(key)):
                if _within(record, since, until):
                    yield record


def erase(store: CaptureStore, model: str, since: datetime | None = None,
          until: datetime | None = None) -> int:
    """Delete the model's records with since <= time < until (no bound: all of them), every
    version; an object holding records outside the window is rewritten without those in it.
    Returns the number of records erased."""
    erased = 0
    for key in list(store.keys(model_prefix(model))):
        if since is None and until is None:
            erased += len(_records(store.get(key)))
            store.delete(key)
            continue
        if not _in_days(key, since, until):
            continue
        records = _records(store.get(key))
        kept = [r for r in records if not _within(r, since, until)]
        erased += len(records) - len(kept)
        if not kept:
            store.delete(key)
        elif len(kept) < len(records):
            store.replace(key, b"".join(
                (json.dumps({MARKER: FORMAT, **r}, separators=(",", ":"), ensure_ascii=False)
                 + "\n").encode()
                for r in kept))
    return erased


class FolderStore:
    """A store in a local folder (keys are relative paths): make serve's capture store."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, key: str, body: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".part")
        temporary.write_bytes(body)
        os.replace(temporary, path)  # a reader never sees half an object

    def keys(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix
        if base.is_dir():
            for path in sorted(base.rglob("*.json*")):
                if path.suffix in (".jsonl", ".json"):  # not a .part being written
                    yield path.relative_to(self.root).as_posix()

    def get(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def replace(self, key: str, body: bytes) -> None:
        self.put(key, body)

    def delete_prefix(self, prefix: str) -> int:
        base = self.root / prefix
        if not base.is_dir():
            return 0
        found = sum(1 for path in base.rglob("*") if path.is_file())
        shutil.rmtree(base)
        return found
