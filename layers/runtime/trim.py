"""Remove from the built runtime layer what never runs on Lambda, to keep the layer small.

Test suites, type stubs, C headers and onnxruntime's offline tooling (quantization,
transformer optimizers, converters) go: `import numpy, onnxruntime` and an inference session
need none of them. So do:
- onnxruntime's `libonnxruntime.so.*` (35 MB): the C API library for programs that link
  against onnxruntime; the Python binding (onnxruntime_pybind11_state) carries its own copy of
  the runtime and does not load it (no DT_NEEDED entry, never dlopen'ed for the CPU provider);
- protobuf and flatbuffers, which only those offline tools import;
- numpy's `_simd` extension, which only numpy's own tests import;
- `bin/` (f2py, numpy-config, onnxruntime_test): console scripts no Lambda runtime starts;
- the packages Lambda's python3.12 runtime already provides (boto3 and its dependencies, pulled
  in here by aws-xray-sdk): the runtime's own copies are used.
The build log gets one line: what was freed, by top-level package (`TRIM_VERBOSE=1` prints every
removed path with its size); `make bench` runs every model from the trimmed layer (its
cold-start section), which proves they still load.
"""

import os
import shutil
import sys
from collections import Counter
from pathlib import Path

REMOVED_DIRS = (
    "numpy/_core/tests",
    "numpy/_core/include",
    "numpy/tests",
    "numpy/f2py",
    "numpy/typing/tests",
    "onnxruntime/quantization",
    "onnxruntime/transformers",
    "onnxruntime/tools",
    "onnxruntime/datasets",
    "onnxruntime/backend",
    "google",
    "flatbuffers",
    "bin",
)
REMOVED_GLOBS = ("**/tests", "**/*.pyi", "**/*.pxd", "onnxruntime/capi/libonnxruntime.so.*",
                 "numpy/_core/_simd.*.so", "protobuf-*.dist-info", "flatbuffers-*.dist-info")
PROVIDED_BY_LAMBDA = ("boto3", "botocore", "s3transfer", "jmespath", "urllib3", "dateutil",
                      "python_dateutil", "six")


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def trim(site: Path) -> int:
    """Delete the listed paths under `site`; returns the bytes freed."""
    targets = [site / rel for rel in REMOVED_DIRS if (site / rel).exists()]
    for name in PROVIDED_BY_LAMBDA:
        targets.extend(site.glob(name))
        targets.extend(site.glob(f"{name}.py"))
        targets.extend(site.glob(f"{name}-*.dist-info"))
    for pattern in REMOVED_GLOBS:
        targets.extend(p for p in site.glob(pattern) if p.exists())
    verbose = bool(os.environ.get("TRIM_VERBOSE"))
    by_package: Counter[str] = Counter()
    removed = 0
    for path in sorted(set(targets)):
        if not path.exists():  # already gone with a parent
            continue
        size = size_of(path)
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        relative = path.relative_to(site)
        if verbose:
            print(f"  trimmed {relative} ({size / 1e6:.2f} MB)")
        by_package[relative.parts[0].split("-")[0].removesuffix(".py")] += size
        removed += 1
    freed = sum(by_package.values())
    largest = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in by_package.most_common(5))
    more = ", ..." if len(by_package) > 5 else ""
    print(f"trimmed {freed / 1e6:.1f} MB in {removed} paths from the runtime layer "
          f"({largest or 'nothing to remove'}{more}; TRIM_VERBOSE=1 lists them)")
    return freed


if __name__ == "__main__":
    trim(Path(sys.argv[1]))
