"""A main module that starts chunk workers, for test_batch_workers: run by name (`python -m
tests.batch.pool_main <version folder>`), as the runner is (`python -m batch.runner`). It
prints, for each worker, whether this module was already imported under its own name when
the worker ran its task: by the fork server (batch.workers.preloaded), so that its imports
were not imported again by each worker."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def imported_here() -> tuple[int, bool]:
    """In a worker: its process id, and whether this module is in sys.modules by its name."""
    return os.getpid(), __spec__.name in sys.modules if __spec__ else False


def main() -> None:
    from batch import workers

    pool = workers.ChunkWorkers(2, Path(sys.argv[1]), None, 4)
    try:
        assert pool.ready.wait(timeout=60)
        answers = dict(pool.pool.submit(imported_here).result() for _ in range(8))
    finally:
        pool.close()
    print(json.dumps({"workers": len(answers), "imported": sorted(set(answers.values()))}))


if __name__ == "__main__":
    main()
