"""`make cost`'s arithmetic: one row recomputed by hand from its prices and assumptions."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import fields

import pytest

from bench import cost
from bench.cost import PRICES, Assumptions, Measured, api_components, total

MEASURED = Measured(model="m", memory_mb=1024, handler_ms={1: 0.3, 32: 2.5},
                    request_bytes={1: 200, 32: 5000}, response_bytes={1: 100, 32: 2000},
                    init_ms=190.0, init_source="test", batch_rows_per_s=50_000.0)
OFF = Assumptions(snapstart=False)


def test_one_row_recomputed_from_its_components() -> None:
    # Given 32 rows a request on x86_64 at 1,024 MB, a cold start every 1,000 requests
    parts = {p.name: p.dollars for p in api_components(MEASURED, 32, "x86_64", OFF)}
    # When each component is computed by hand from the price table
    requests = 1000 / 32
    share = 1024 / 1769
    billed_ms = math.ceil(2.5 / share)  # 4.32 ms on Lambda's 0.58 vCPU, billed 5 ms
    assert billed_ms == 5
    duration = requests * billed_ms / 1000 * 1.0 * 0.0000166667
    init = requests / 1000 * math.ceil(190 / share) / 1000 * 1.0 * 0.0000166667
    expected = {"Lambda duration": duration, "Lambda init (cold starts)": init,
                "Lambda requests": requests * 0.20 / 1e6,
                "API Gateway REST requests": requests * 3.50 / 1e6,
                "SnapStart cache + restore": 0.0, "data capture": 0.0}
    # Then every component and their sum match
    assert parts == pytest.approx(expected, rel=1e-9)
    assert total(api_components(MEASURED, 32, "x86_64", OFF)) == pytest.approx(
        sum(expected.values()), rel=1e-12)
    # API Gateway's per-request price dominates a small model's bill
    assert max(parts, key=lambda name: parts[name]) == "API Gateway REST requests"


def test_arm64_prices_and_billing_steps() -> None:
    x86 = api_components(MEASURED, 1, "x86_64", OFF)[0].dollars
    arm = api_components(MEASURED, 1, "arm64", OFF)[0].dollars
    assert arm / x86 == pytest.approx(PRICES.lambda_gb_second["arm64"]
                                      / PRICES.lambda_gb_second["x86_64"])
    assert cost.lambda_ms(0.3, 1769, "x86_64", OFF) == pytest.approx(0.3)
    assert cost.lambda_ms(0.3, 4096, "x86_64", OFF) == pytest.approx(0.3)  # one vCPU at most
    assert api_components(MEASURED, 1, "x86_64", OFF)[0].how.startswith("1000 req x 1 ms")


def test_snapstart_replaces_init_with_restore_and_cache() -> None:
    on = Assumptions(snapstart=True, requests_per_month=1_000_000)
    parts = {p.name: p.dollars for p in api_components(MEASURED, 1, "x86_64", on)}
    assert parts["Lambda init (cold starts)"] == 0
    cache = 1000 * 1.0 * 30 * 24 * 3600 * PRICES.snapstart_cache_gb_second / 1_000_000
    restore = 1 * 1.0 * PRICES.snapstart_restore_gb
    assert parts["SnapStart cache + restore"] == pytest.approx(cache + restore)


def test_sagemaker_and_batch() -> None:
    duration, data = cost.sagemaker_serverless(MEASURED, 1, OFF)
    price = PRICES.sagemaker_serverless_gb_second
    assert duration.dollars == pytest.approx(1000 * 0.001 * 1 * price)
    assert data.dollars == pytest.approx(1000 * 300 / 1e9 * PRICES.sagemaker_data_gb)
    batch = cost.batch_per_1000_rows(50_000.0, OFF)
    seconds = 1000 / 50_000 + 300 * 1000 / 1_000_000
    assert batch["on_demand"] == pytest.approx(seconds / 3600 * 0.526)
    assert batch["spot"] == pytest.approx(batch["on_demand"] * 0.4)


def test_dollars_format() -> None:
    assert [cost.dollars(v) for v in (0, 0.003671, 0.035, 1.2549)] == ["0", "0.00367", "0.0350",
                                                                  "1.25"]


def test_zero_rows_say_why() -> None:
    lines = "\n".join(cost.model_table(MEASURED, OFF))
    assert "| SnapStart cache + restore: off (template parameter SnapStart" in lines
    assert "| data capture: off for this model (models.yaml capture) | 0 | 0 | 0 | 0 |" in lines
    assert "job start-up" in lines


def test_every_assumption_is_a_documented_flag() -> None:
    assert set(cost.ASSUMPTION_HELP) == {f.name for f in fields(Assumptions)}
    with pytest.raises(SystemExit) as done:
        cost.main(["--help"])
    assert done.value.code == 0


def test_data_capture_recomputed_from_its_prices() -> None:
    # Given 20 % of requests captured, 1 row a request (a record of 300 bytes: under Firehose's
    # 5 KB rounding) and 32 rows a request (7,000 bytes)
    captured = dataclasses.replace(MEASURED, capture_share=0.2)
    one, many = (cost.capture_component(captured, rows, OFF) for rows in (1, 32))
    # Then each is logs ingestion + logs and S3 storage for their retention + Firehose
    per_gb = 0.50 + 0.03 * 30 / 30 + 0.023 * 90 / 30
    assert one.dollars == pytest.approx(200 * 300e-9 * per_gb + 200 * 5e-6 * 0.029)
    records = 1000 / 32 * 0.2
    assert many.dollars == pytest.approx(records * 7000e-9 * (per_gb + 0.029))
    assert total(api_components(captured, 1, "x86_64", OFF)) == pytest.approx(
        total(api_components(MEASURED, 1, "x86_64", OFF)) + one.dollars)
