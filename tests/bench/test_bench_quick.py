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

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_every_bench_section_runs(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    # The tests' own settings (tracing off) must not leak into what the bench measures.
    env = {key: value for key, value in os.environ.items() if not key.startswith("POWERTOOLS_")}
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(out.read_text())
    assert results["quick"] is True
    assert set(SECTIONS) <= set(results), f"sections missing: {set(SECTIONS) - set(results)}"
    # Every section measured something for every model or function it covers.
    assert {r["model"] for r in results["warm"]} == {r["model"] for r in results["http"]}
    assert all(r["handler"]["n"] > 0 for r in results["warm"])
    assert any(r["model"] is None for r in results["cold"])  # the server function's cold start
    assert all(r["runner_rows_per_s"] > 0 for r in results["batch"])
    assert "| **scale**" in done.stdout and "yes" not in done.stdout.split("**warm**")[1]
