"""The per-request hooks that every inference path installs (model_api.pipeline): the API's
model functions and the batch runner both take this one list, so a hook added here runs on
both paths. Order matters: hooks run in list order at each hook point."""

from __future__ import annotations

from model_api.pipeline import Hook


def installed() -> list[Hook]:
    """New instances of the installed hooks, for one process."""
    from model_api.aws.class_counts import ClassCounts  # Powertools: only where hooks run

    return [ClassCounts()]
