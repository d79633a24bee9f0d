"""CI's quick pass of `make bench`: every section runs on the built template with a few rounds,
repeats and rows (`python -m bench --quick`), so a change that breaks one fails the build. No
target is judged; the numbers mean little."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import SECTIONS
from bench.batch import JSONL_ROWS, ROWS
from model_registry import registry

ROOT = Path(__file__).resolve().parents[2]


def bench_env() -> dict[str, str]:
    """The tests' own settings (tracing off) must not leak into what the bench measures."""
    return {key: value for key, value in os.environ.items() if not key.startswith("POWERTOOLS_")}


@pytest.mark.slow
def test_every_bench_section_runs(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out)],
                          cwd=ROOT, env=bench_env(), capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(out.read_text())
    assert results["quick"] is True
    assert set(SECTIONS) <= set(results), f"sections missing: {set(SECTIONS) - set(results)}"
    # Every section measured something for every model or function it covers.
    assert {r["model"] for r in results["warm"]} == {r["model"] for r in results["http"]}
    assert all(r["handler"]["n"] > 0 for r in results["warm"])
    assert any(r["model"] is None for r in results["cold"])  # the server function's cold start
    # ... and the floor under every handler: the baseline inside Powertools' three decorators
    assert all(r["floor"]["total"] > 0 and r["floor_ratio"] > 0 for r in results["cold"])
    # .npy for the numeric models; JSON Lines for every model the bench lists (all the seed
    # models), measured on both sides; the runner's metric lines kept off the table (stdout)
    assert all(r["runner_rows_per_s"] > 0 for r in results["batch"] if "runner_rows_per_s" in r)
    assert {r["model"] for r in results["batch"] if "runner_rows_per_s" in r} == set(ROWS)
    assert {r["model"] for r in results["batch"]
            if r["jsonl_runner_rows_per_s"] > 0 and r["jsonl_raw_job_rows_per_s"] > 0} == \
        set(JSONL_ROWS)
    assert not any(line.startswith("{") for line in done.stdout.splitlines())
    assert "| **scale**" in done.stdout and "yes" not in done.stdout.split("**warm**")[1]


@pytest.mark.slow
def test_make_cost_runs(tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    done = subprocess.run([sys.executable, "-m", "bench.cost", "--quick", "--out", str(out)],
                          cwd=ROOT, env=bench_env(), capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    models = json.loads(out.read_text())["models"]
    assert sorted(m["model"] for m in models) == sorted(e.name for e in registry.load())
    assert all(m["handler_ms"]["1"] > 0 and m["handler_ms"]["32"] > 0 for m in models)
    for m in models:
        assert f"\n{m['model']}: " in done.stdout
    assert done.stdout.count("**API total**") == len(models)
    assert not any(line.startswith("{") for line in done.stdout.splitlines())  # no log lines


def test_the_parser_bench_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import parse
    assert parse.main(["--rounds", "1"]) == 0
    table = capsys.readouterr().out
    assert all(name in table for name, _, _ in parse.SHAPES)
