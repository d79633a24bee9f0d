"""The per-request hooks that every inference path installs (model_api.pipeline): the API's
model functions and the batch runner both take this one list, so a hook added here runs on
both paths. Order matters: hooks run in list order at each hook point."""

from __future__ import annotations

import os
from collections.abc import Mapping

from model_api.capture.config import CaptureConfig, from_environment
from model_api.pipeline import Hook


def installed(capture: Mapping[str, CaptureConfig] | None = None,
              job_id: str | None = None) -> list[Hook]:
    """New instances of the installed hooks, for one process. `capture`: each model's capture
    settings where the process serves many (the batch runner, from the registry); None: the
    function's own (its CAPTURE environment variable). `job_id`: the batch job they serve
    (data capture keeps its records apart, so that erasing the job erases them)."""
    from model_api.aws.class_counts import ClassCounts

    found: list[Hook] = [ClassCounts()]
    if capture is None and not from_environment(os.environ).active:
        return found  # nothing is captured: data capture's modules are not imported (8-10 ms)
    from model_api.aws import capture as data_capture  # Powertools: only where hooks run

    capture_hook = data_capture.hook(os.environ, capture, job_id)
    if capture_hook is not None:
        found.append(capture_hook)
    return found
