"""Scale: what a deployment of many models costs the registry, the templates and the local API.

- add-model: seconds to add one model (check, export, render: `model_registry.add.add`) to a
  project already serving 1, 10, 100 and 200 synthetic models (model_registry.synthetic).
- render + translate: seconds to render every template of the deployment from models.yaml and
  to translate every stack as CloudFormation would (model_registry.quotas.translate), and the
  root stack's and the largest group's resources, at the same counts.
- local API memory: resident memory (MB, the server and its workers) of `python -m local_api
  serve` on a deployment of 200 models, at start and after requests to 5 of them, next to the
  same figures for the 4 seed models' built template; and its start (until /v2/health/live
  answers). Each synthetic function runs the real
  handler on the built runtime and serving layers, with its own model layer (the tiny graph).
"""

from __future__ import annotations

import http.client
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from samtranslator.yaml_helper import yaml_parse

from bench.common import BUILT_TEMPLATE, scaled
from local_api.background import HOST, server_pid, serving, tree_rss_mb
from model_registry import synthetic, template
from model_registry.add import add
from model_registry.quotas import translate, usage
from model_registry.registry import Project, load

COUNTS = (1, 10, 100, 200)
SERVED = 200
IN_USE = 5


def _add_seconds(project: Project, model: Path) -> float:
    started = time.perf_counter()
    add("added-model", model, project=project)
    return time.perf_counter() - started


def _render_translate(project: Project) -> dict[str, Any]:
    entries = load(project.registry)
    started = time.perf_counter()
    texts = template.render(entries, template.source_of(project).read_text(), project)
    rendered = time.perf_counter() - started
    started = time.perf_counter()
    usages = {path.name: usage(translate(yaml_parse(text), {"ApiAuth": "API_KEY"}))
              for path, text in texts.items()}
    translated = time.perf_counter() - started
    groups = [u for name, u in usages.items() if name != project.template.name]
    return {"render_s": round(rendered, 2), "translate_s": round(translated, 2),
            "stacks": len(usages), "root_resources": usages[project.template.name].resources,
            "largest_group_resources": max(u.resources for u in groups),
            "largest_api_resources": max(n for u in groups for n in u.api_resources.values())}


def _get(port: int, path: str) -> int:
    connection = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _memory(built: Path, models: list[str]) -> dict[str, Any]:
    """The local API's memory on `built`, idle, then with the first IN_USE models called."""
    started = time.perf_counter()
    with serving(built, subprocess.DEVNULL) as port:
        start_s = round(time.perf_counter() - started, 1)
        pid = server_pid(port)
        idle = tree_rss_mb(pid)
        called = models[:IN_USE]
        statuses = [_get(port, f"/v2/models/{name}/ready") for name in called]
        if any(status != 200 for status in statuses):  # a broken build measures nothing
            raise RuntimeError(f"the models' /ready answered {statuses} on {built}")
        return {"models": len(models), "start_s": start_s, "idle_mb": idle,
                "in_use": len(called),
                "with_workers_mb": tree_rss_mb(pid), "statuses": statuses}


def run() -> dict[str, Any]:
    counts = scaled(COUNTS, (1, 2))
    results: dict[str, Any] = {"counts": list(counts), "add_model_s": {}, "templates": {}}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as folder:
        work = Path(folder)
        model = work / "added.onnx"
        model.write_bytes(synthetic.tiny_model())
        for count in counts:
            project = synthetic.project(work / str(count), count)
            results["templates"][count] = _render_translate(project)
            results["add_model_s"][count] = round(_add_seconds(project, model), 2)
        served = synthetic.project(work / "served", scaled(SERVED, IN_USE))
        built = synthetic.built_like(served, BUILT_TEMPLATE.parent, work)
        results["memory"] = {
            "seed": _memory(BUILT_TEMPLATE, [e.name for e in load()]),
            "synthetic": _memory(built, [e.name for e in load(served.registry)])}
    return results
