"""`python -m model_registry.optimize` (`make optimize`): the command line of the step."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import model_registry.optimize as optimize_package
from model_registry import registry
from model_registry.add import AddError
from model_registry.optimize.candidates import METHODS
from model_registry.optimize.data import OptimizeError
from model_registry.optimize.step import optimize
from model_registry.optimize.timing import Timing


def main(argv: list[str] | None = None) -> int:
    """Optimise one model as the flags say; 0, or 2 when the step refuses (the reason on
    stderr). `--help` prints the package's description of the step."""
    parser = argparse.ArgumentParser(prog="python -m model_registry.optimize",
                                     description=optimize_package.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="name in models.yaml")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", help="version to optimise (default: current)")
    which.add_argument("--newest", action="store_true",
                       help="optimise the version listed last (what add-model just added)")
    parser.add_argument("--rows", type=Path,
                        help="an added model's rows: .npz with one array per input name and "
                             "`targets` (held-back rows; also used to calibrate)")
    parser.add_argument("--task", choices=("classification", "regression"),
                        help="for an added model whose manifest has no task")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, from {','.join(METHODS)}")
    parser.add_argument("--passes", type=int, default=Timing.passes)
    parser.add_argument("--pass-seconds", type=float, default=Timing.pass_seconds)
    parser.add_argument("--lambda-memory-mb", type=int, default=Timing.lambda_memory_mb,
                        help="time with the session options of a function this size "
                             "(0: the options outside Lambda)")
    parser.add_argument("--dry-run", action="store_true", help="measure, publish nothing")
    args = parser.parse_args(argv)
    version = args.version
    if args.newest:
        entry = next((e for e in registry.load() if e.name == args.model), None)
        version = entry.versions[-1] if entry else None
    timing = Timing(passes=args.passes, pass_seconds=args.pass_seconds,
                    lambda_memory_mb=args.lambda_memory_mb or None)
    try:
        optimize(args.model, version, args.rows, tuple(args.methods.split(",")), timing,
                 publish=not args.dry_run, task=args.task)
    except (OptimizeError, AddError) as exc:
        print(f"optimize refused: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
