"""Cold start: a fresh process to the first response, per function, against a bare baseline.

Each function's code and layers are first zipped as `sam deploy` zips them and unpacked as
Lambda unpacks them (bench.deployed), then laid out as Lambda mounts them (local_api.sandbox:
the layers merged into one /opt, the runtime's own boto3 & co. beside it), and
bench/cold_probe.py runs in a new `python -I -S -B` (-B: /opt is read-only on Lambda, so
Python can never write a fresher .pyc there) with the function's Lambda environment. The
baseline is the same interpreter on the same layers doing only `import onnxruntime, numpy`,
creating a session and running it once; the floor is that baseline inside the observability
every function keeps (Powertools' Logger, Tracer with the X-Ray SDK, Metrics and their three
decorators, bench/cold_probe.py `floor`): `floor_ratio` is the least `ratio` any handler wearing
them can reach. Runs alternate between the three and the medians are reported, so a busy
moment hurts all alike. Running from the built layers also proves the
trimmed runtime layer still serves every model.

Where the imports' milliseconds go (`import_groups`): a few more starts of each mode with
`python -X importtime`, every module's own time given to the innermost package of
`IMPORT_GROUPS` it was imported under (the `logging` that Powertools' Logger imports counts
as Powertools, the asyncio that wrapt imports as X-Ray), medians per group. Those starts run
apart from the timed ones, since -X importtime slows imports down a little.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from model_api.datatypes import numpy_dtype

from bench.common import EVENTS_DIR, scaled
from bench.deployed import sam_zip, unpack
from bench.functions import InferenceFunction, inference_functions, lambda_environment
from bench.payloads import api_event, request
from local_api import sandbox

PROBE = Path(__file__).with_name("cold_probe.py")
REPEATS = 5  # one in a quick pass
IMPORT_REPEATS = 3  # starts with -X importtime per mode (one in a quick pass)
# Top-level module -> the group its imports count toward; a module imported under none of
# these (the interpreter's own, or what the handler file imports itself) counts as "other".
IMPORT_GROUPS = {"numpy": "numpy", "numpy.libs": "numpy", "onnxruntime": "onnxruntime",
                 "aws_lambda_powertools": "powertools", "jmespath": "powertools",
                 "aws_xray_sdk": "xray", "wrapt": "xray", "model_api": "model_api",
                 "orjson": "orjson"}
PHASES = ("startup", "imports", "init", "first_response", "total")
MEASURES = (*PHASES, "max_rss_mb")


def probe_config(function: InferenceFunction, box: sandbox.Sandbox, mode: str,
                 result_file: Path) -> dict[str, Any]:
    """What cold_probe.py needs: paths, the handler and its imports, the event, the inputs."""
    handler_file = function.spec.code_dir / f"{function.spec.handler.rpartition('.')[0]}.py"
    config: dict[str, Any] = {"mode": mode, "python_path": list(box.python_path),
                              "handler": function.spec.handler,
                              "imports": top_level_imports(handler_file),
                              "result_file": str(result_file)}
    if function.model is None:  # GET /v2: the server's own work (its readiness asks the models)
        config["event"] = json.loads((EVENTS_DIR / "server" / "server-metadata.json").read_text())
        return config
    sent = request(function.model, 1, "json")
    config["event"] = api_event(function.model, sent)
    models = Path(box.environment["MODELS_DIR"]) / function.model
    version = function.spec.environment["MODEL_VERSION"]
    config["model_file"] = str(models / version / "model.onnx")
    config["inputs"] = {tensor["name"]: {"data": tensor["data"], "shape": tensor["shape"],
                                         "dtype": numpy_dtype(tensor["datatype"]).name}
                        for tensor in json.loads(sent.body)["inputs"]}
    return config


def top_level_imports(source: Path) -> list[str]:
    """Modules the handler file imports at module scope, in order (the probe times them apart
    from the module's own init, and need not import `ast` itself)."""
    modules: list[str] = []
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.append(node.module)
    return modules


def import_groups(importtime: str) -> dict[str, float]:
    """Milliseconds of import per group (IMPORT_GROUPS) from `python -X importtime`'s report:
    each module's own time counts toward the innermost grouped module it was imported under
    (itself included)."""
    lines: list[tuple[int, str, float]] = []
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own_us, _, name = line.removeprefix("import time:").split("|")
        lines.append((len(name) - len(name.lstrip()), name.strip(), int(own_us) / 1000))
    totals: dict[str, float] = {}
    # The report lists a module after everything it imported, one level deeper: read backwards,
    # each module comes right after its importer.
    enclosing: list[tuple[int, str | None]] = []
    for depth, name, own in reversed(lines):
        while enclosing and enclosing[-1][0] >= depth:
            enclosing.pop()
        group = IMPORT_GROUPS.get(name.split(".")[0]) or next(
            (found for _, found in reversed(enclosing) if found), None)
        enclosing.append((depth, group))
        totals[group or "other"] = totals.get(group or "other", 0.0) + own
    return totals


def import_breakdown(config_file: Path, env: dict[str, str]) -> dict[str, float]:
    """One start with -X importtime: its import milliseconds per group."""
    probe = subprocess.run([sys.executable, "-I", "-S", "-B", "-X", "importtime", str(PROBE),
                            str(config_file)], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    if probe.returncode != 0:
        raise RuntimeError(f"cold start of {config_file.stem} failed:\n{probe.stderr[-3000:]}")
    return import_groups(probe.stderr)


def one_start(config_file: Path, result_file: Path, env: dict[str, str]) -> dict[str, float]:
    """Milliseconds of each phase of one fresh process, counted from its spawn, and its peak
    resident memory (MB)."""
    result_file.unlink(missing_ok=True)
    spawned = time.perf_counter()
    probe = subprocess.run([sys.executable, "-I", "-S", "-B", str(PROBE), str(config_file)],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, timeout=120, check=False)
    if probe.returncode != 0:
        raise RuntimeError(f"cold start of {config_file.stem} failed:\n{probe.stderr[-3000:]}")
    stamps = json.loads(result_file.read_text())
    if stamps["status"] != 200:
        raise RuntimeError(f"{config_file}: first response was {stamps['status']}")
    marks = [spawned, stamps["started"], stamps["imported"], stamps["initialised"],
             stamps["answered"]]
    phases = [(later - earlier) * 1000 for earlier, later in itertools.pairwise(marks)]
    return {**dict(zip(PHASES, [*phases, (stamps["answered"] - spawned) * 1000], strict=True)),
            "max_rss_mb": stamps["max_rss_mb"]}


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median of each phase (and of the peak memory) over the runs."""
    return {key: round(statistics.median(run[key] for run in runs), 1) for key in MEASURES}


def as_deployed(function: InferenceFunction, work: Path) -> InferenceFunction:
    """The function with its code and layers replaced by their zip-and-unpack round trips."""
    copies = {}
    for folder in (function.spec.code_dir, *function.spec.layer_dirs):
        target = work / "deployed" / folder.name
        if not target.is_dir():
            unpack(sam_zip(folder), target)
        copies[folder] = target
    spec = dataclasses.replace(function.spec, code_dir=copies[function.spec.code_dir],
                               layer_dirs=tuple(copies[d] for d in function.spec.layer_dirs))
    return dataclasses.replace(function, spec=spec)


def measure(built: InferenceFunction, work: Path) -> dict[str, Any]:
    """REPEATS cold starts of the function, of the baseline and of the floor, in turns; their
    medians."""
    function = as_deployed(built, work)
    (box,) = sandbox.prepare([function.spec], work / function.name, "us-east-1").values()
    env = {**{key: box.environment[key] for key in ("PATH", "LD_LIBRARY_PATH", "LANG")},
           **lambda_environment(function, Path(box.environment["MODELS_DIR"]), box.opt_dir)}
    runs: dict[str, list[dict[str, float]]] = {"handler": [], "baseline": [], "floor": []}
    for mode in runs:
        config = probe_config(function, box, mode, work / f"{function.name}-{mode}.result")
        (work / f"{function.name}-{mode}.json").write_text(json.dumps(config))
    repeats = scaled(REPEATS, 1)
    for _ in range(repeats):
        for mode, found in runs.items():
            found.append(one_start(work / f"{function.name}-{mode}.json",
                                   work / f"{function.name}-{mode}.result", env))
    handler, base, floor = (medians(runs[mode]) for mode in ("handler", "baseline", "floor"))
    groups: dict[str, dict[str, float]] = {}
    for mode in ("handler", "baseline"):
        starts = [import_breakdown(work / f"{function.name}-{mode}.json", env)
                  for _ in range(scaled(IMPORT_REPEATS, 1))]
        names = sorted({name for start in starts for name in start})
        groups[mode] = {name: round(statistics.median(start.get(name, 0.0) for start in starts),
                                    1) for name in names}
    return {"function": function.name, "model": function.model, "repeats": repeats,
            "handler": handler, "baseline": base, "floor": floor,
            "floor_ratio": round(floor["total"] / base["total"], 2),
            "ratio": round(handler["total"] / base["total"], 2), "import_groups_ms": groups}


def run() -> list[dict[str, Any]]:
    """Every inference function, from one set of deployed copies; but a model served from the
    model store, whose start reads the model in the background and whose first request waits
    for it: its load is `make bench ONLY=large`'s (bench.large)."""
    from local_api.model_store import stored

    functions = inference_functions()
    for function in functions:
        if stored(function.spec):
            print(f"cold: {function.model}: not measured here: served from the model store, "
                  "its cold start and load are `make bench ONLY=large`'s", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as work:
        return [measure(function, Path(work)) for function in functions
                if not stored(function.spec)]
