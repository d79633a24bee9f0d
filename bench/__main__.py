"""`python -m bench [--only warm,http,...]`: run the sections, print the table, write the JSON."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from bench import batch, cold, explain, http, scale, size, warm
from bench.common import BUILT_TEMPLATE, RESULTS, machine
from bench.report import table

SECTIONS: dict[str, Callable[[], Any]] = {
    "warm": warm.run, "http": http.run, "explain": explain.run, "cold": cold.run,
    "size": size.run, "batch": batch.run, "scale": scale.run}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections (default: all of {', '.join(SECTIONS)})")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}")
    if not BUILT_TEMPLATE.is_file():
        parser.error(f"{BUILT_TEMPLATE} is missing: run `make build` (make bench does)")
    results: dict[str, Any] = {"machine_before": machine()}
    seconds: dict[str, float] = {}
    for name in chosen:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        results[name] = SECTIONS[name]()
        seconds[name] = round(time.perf_counter() - started, 1)
    results["machine_after"] = machine()
    results["seconds"] = seconds
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    before = results["machine_before"]
    print(f"{before['cpu']}, {before['cores']} cores, python {before['python']}; "
          f"load before: {before['uptime']}; after: {results['machine_after']['uptime']}")
    print(table(results))
    print(f"written to {RESULTS.relative_to(RESULTS.parent.parent)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
