"""Overload on the local API serving the built template (docs/architecture.md, "Overload"):
more clients than this machine has workers are served late, never refused, and one model's
burst does not starve another. Ratios are asserted, never absolute speed; each phase is bounded
in time (bench/overload.py measures the same with longer phases)."""

from __future__ import annotations

import httpx
import pytest

from bench import overload

# Speeds compared: make test runs these alone, after the parallel pass (no other test's load).
pytestmark = pytest.mark.serial

PHASE_S = 1.0


def test_goodput_holds_at_32_and_64_clients(local_api: httpx.Client) -> None:
    port = local_api.base_url.port
    assert port is not None
    overload.load(port, overload.MODEL, 8, 1.0)  # every worker warm: cold starts aside
    levels = overload.goodput(port, PHASE_S)
    for level in levels.values():
        assert set(level["statuses"]) == {200}, levels  # served late, never refused
    best_low = max(levels[1]["goodput_per_s"], levels[8]["goodput_per_s"])
    # The rule is 0.8 (bench/overload.py measures it with longer phases); on 2 shared cores a
    # one-second phase varies by a third between identical runs, so the test holds the line
    # that tells collapse from noise: before the rule, 32 and 64 clients kept 0.15 of it.
    for clients in (32, 64):
        assert levels[clients]["goodput_per_s"] >= 0.6 * best_low, levels
    print({clients: level["goodput_per_s"] for clients, level in levels.items()})


def test_a_burst_on_one_model_leaves_another_models_latency(local_api: httpx.Client) -> None:
    port = local_api.base_url.port
    assert port is not None
    overload.load(port, overload.BURST_MODEL, 8, 1.0)
    found = overload.isolation(port, PHASE_S)
    assert found["during_burst_failed"] == 0, found
    assert set(found["burst"]["statuses"]) == {200}, found
    # Before the worker budget waited instead of refusing, the burst made it 37-75 times slower.
    assert found["during_burst_median_ms"] <= 10 * max(found["alone_median_ms"], 2.0), found
