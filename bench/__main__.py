"""`python -m bench [--only warm,http,...] [--quick] [--out FILE]`: run the sections, print the
table, write the JSON. `--quick` is CI's pass: every section with a few rounds, repeats and rows
(bench.common.quick), no target judged, results in bench-results/quick.json."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import batch, cold, explain, http, large, scale, size, warm
from bench.common import BUILT_TEMPLATE, QUICK_ENV, QUICK_RESULTS, RESULTS, machine
from bench.report import table

SECTIONS: dict[str, Callable[[], Any]] = {
    "warm": warm.run, "http": http.run, "explain": explain.run, "cold": cold.run,
    "size": size.run, "batch": batch.run, "scale": scale.run, "large": large.run}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections (default: all of {', '.join(SECTIONS)})")
    parser.add_argument("--quick", action="store_true",
                        help="a few rounds, repeats and rows per section (CI: proves every "
                             "section runs; its numbers mean little, no target is judged)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"the JSON results (default: {RESULTS.relative_to(RESULTS.parents[1])}"
                             f", {QUICK_RESULTS.relative_to(QUICK_RESULTS.parents[1])} if --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        os.environ[QUICK_ENV] = "1"  # the sections' child processes inherit it
    out: Path = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}")
    if not BUILT_TEMPLATE.is_file():
        parser.error(f"{BUILT_TEMPLATE} is missing: run `make build` (make bench does)")
    results: dict[str, Any] = {"quick": args.quick, "machine_before": machine()}
    seconds: dict[str, float] = {}
    for name in chosen:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        results[name] = SECTIONS[name]()
        seconds[name] = round(time.perf_counter() - started, 1)
    results["machine_after"] = machine()
    results["seconds"] = seconds
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    before = results["machine_before"]
    print(f"{before['cpu']}, {before['cores']} cores, python {before['python']}; "
          f"load before: {before['uptime']}; after: {results['machine_after']['uptime']}")
    print(table(results, judge=not args.quick))
    print(f"written to {out}; seconds per section: {seconds}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
