"""Data capture on this machine: where `make serve` and `make batch-local` keep the captured
records (a folder store that `make capture` reads), and what the served functions and the
local batch runner are given for it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from local_api.background import PROJECT_ROOT

# make serve's capture store (model_api.capture.store.FolderStore): make capture reads it.
CAPTURE_DIR = PROJECT_ROOT / ".local-api" / "capture"


def capture_environment(capture: str, folder: Path = CAPTURE_DIR) -> dict[str, str]:
    """What the served functions get for data capture (model_api.aws.capture): every request
    sampled (capture "1") or none ("0"), records on stdout as on Lambda (the local API reads
    them from the worker's output and writes them to `folder`: local_api.worker.forward_logs),
    a local hash key file, never the deployed bucket or secret; the drift reports of
`make monitor` (model_api.monitoring.reports) are read from the same folder."""
    from model_api.aws.capture import BUCKET_ENV, DIR_ENV, KEY_FILE_ENV, KEY_SECRET_ENV
    from model_api.aws.monitor import REPORTS_BUCKET_ENV, REPORTS_DIR_ENV
    from model_api.capture.config import SAMPLING_ENV

    return {SAMPLING_ENV: "100" if capture == "1" else "0", DIR_ENV: "", BUCKET_ENV: "",
            KEY_SECRET_ENV: "", KEY_FILE_ENV: str((folder / ".hash-key").resolve()),
            # GET .../monitoring answers `make monitor`'s reports, kept in the same folder
            REPORTS_BUCKET_ENV: "", REPORTS_DIR_ENV: str(folder.resolve())}


def runner_capture_environment(capture: str, folder: Path = CAPTURE_DIR) -> dict[str, str]:
    """What the local batch runner gets (through this process's environment, which the local
    submitter passes on): it writes its records to `folder` itself, one object per chunk, as
    the deployed runner writes them to the capture bucket."""
    from model_api.aws.capture import DIR_ENV
    from model_api.capture.config import SAMPLING_ENV

    return {DIR_ENV: str(folder.resolve()), SAMPLING_ENV: "100" if capture == "1" else "0"}


def eraser_environment(environments: Mapping[str, Mapping[str, str]],
                       folder: Path = CAPTURE_DIR) -> dict[str, dict[str, str]]:
    """For the function that erases batch jobs (its template environment names the jobs table
    and the capture bucket: DELETE erases a job's captured records, batch.erase.erase_captured),
    the local capture store instead of the deployed bucket: `folder`, where the local runner
    writes them."""
    from model_api.aws.capture import BUCKET_ENV, DIR_ENV
    from model_api.aws.dependencies import JOBS_TABLE_ENV

    return {function: {DIR_ENV: str(folder.resolve()), BUCKET_ENV: ""}
            for function, environment in environments.items()
            if JOBS_TABLE_ENV in environment and BUCKET_ENV in environment}
