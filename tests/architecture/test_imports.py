"""No import cycles, inside a package or between packages (tests/architecture/import_graph.py
reads the graph from the source: module- and function-level imports, not `if TYPE_CHECKING:`).

A cycle means two modules cannot be understood, tested or shipped one without the other; a new
one fails here with its path, e.g. `batch.state -> batch.submit -> batch.local_submit ->
batch.state`.
"""

from __future__ import annotations

from tests.architecture.import_graph import build, module_cycles, package_cycles


def test_the_graph_covers_every_package() -> None:
    packages = {module.package for module in build().values()}
    assert {"model_api", "batch", "local_api", "model_registry", "model_export", "bench",
            "functions.inference", "functions.batch_jobs"} <= packages


def test_no_cycle_between_modules() -> None:
    cycles = module_cycles(build())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_cycle_between_packages() -> None:
    cycles = package_cycles(build())
    assert not cycles, "import cycles between packages:\n" + "\n".join(cycles)
