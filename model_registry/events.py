"""Write events/<function>/<route>.json: one API Gateway proxy event per route of each function.

Each event starts as `sam local generate-event apigateway aws-proxy` makes it, then gets the
route's real resource, path parameters and a real request body (the model's own example inputs,
`model_api.examples`, as JSON and as binary tensors), so the same files serve
`sam local invoke -e`, the Docker-free `python -m local_api invoke`, the tests, and readers who
want to see what a function receives. The routes come from the route table
(`model_api.routes`); `make events` (and add-model / remove-model) rewrite them.

Folders: events/server/ (the server function), events/<model>/ (each model's function, its
current version's examples), events/batch/ (the batch jobs function). Every file there is
generated but HAND_WRITTEN ones: `make events` removes any other, and `make check-generated`
compares each one's content with what this module renders.
"""

from __future__ import annotations

import base64
import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

import model_api.examples as model_examples
from model_api.binary import HEADER_LENGTH
from model_api.explainers import output_specs
from model_api.manifest import MANIFEST_FILE, Manifest, load_manifest
from model_api.routes import BATCH_JOBS, MODEL, SERVER, Route, routes_of
from samcli.lib.generated_sample_events.events import Events as SamEvents

from model_registry import registry
from model_registry.registry import EXPORTED, PROJECT, ROOT, Locate, ModelEntry, exported

EVENTS_DIR = ROOT / "events"
STAGE = "v1"
SERVER_FOLDER, BATCH_JOBS_FOLDER = "server", "batch"
EXAMPLE_JOB_ID = "example-0123456789ab"
# Files of events/ written by hand (relative to it): the folder's README and the EventBridge events
# of the batch trigger (S3 object created) and of the batch state function (Batch job state
# change), which no route describes.
HAND_WRITTEN = ("README.md", "batch/object-created.json", "batch/job-state-change.json")
JSON_HEADERS = {"Content-Type": "application/json"}
JOB_REQUEST = b'{"size": 1024, "format": "jsonl"}'  # a job of a 1,024-byte JSON Lines input
Events = dict[str, dict[str, Any]]


@cache
def sam_event(method: str) -> str:
    """The event exactly as `sam local generate-event apigateway aws-proxy --method METHOD
    --resource /resource --path resource --stage v1` prints it, from the SAM CLI's own event
    library in-process (the command's other options at their defaults, as the command passes
    them): the same bytes, without the command's two seconds of start-up per method. The
    route's own resource and path are filled in by `route_event`."""
    library = SamEvents()
    tags = library.event_mapping["apigateway"]["aws-proxy"]["tags"]
    values = {tag.replace("-", "_"): spec.get("default") for tag, spec in tags.items()}
    values.update(method=method, resource="/resource", path="resource", stage=STAGE)
    return library.generate_event("apigateway", "aws-proxy", values)


def route_event(route: Route, parameters: dict[str, str], body: bytes | None = None,
                headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A SAM-generated event for `route`: its resource as the template declares it (`{model}`
    filled in), its path parameters, and `body` base64-encoded (the API's binary media type is
    */*, so API Gateway base64-encodes every body it passes on)."""
    event = json.loads(sam_event(route.method))
    # A model's own function has its name in its resources; the server's routes take {model}.
    model = parameters.get("model") if route.function == MODEL else None
    resource = route.for_model(model) if model else route.path
    path = route.url(**parameters)
    event.update(resource=resource, path=path,
                 pathParameters={k: v for k, v in parameters.items()
                                 if k != "model" or not model} or None,
                 queryStringParameters=None, multiValueQueryStringParameters=None,
                 stageVariables=None)
    event["requestContext"].update(resourcePath=resource, path=f"/{STAGE}{path}",
                                   httpMethod=route.method)
    for key, value in (headers or {}).items():
        event["headers"][key] = value
        event["multiValueHeaders"][key] = [value]
    event["body"] = base64.b64encode(body).decode() if body is not None else None
    event["isBase64Encoded"] = body is not None
    return event


def model_events(manifest: Manifest, examples: model_examples.Examples) -> Events:
    """The events of every model route for one model's current version: a route taking an
    inference request gets its examples as JSON, and the unversioned one a binary twin too. A
    model without explanations (no `explanation` in its manifest: its /explain is a 404) gets no
    explain events."""
    explains = bool(output_specs(manifest))
    body = model_examples.json_request(manifest, examples)
    binary, header_length = model_examples.binary_request(manifest, examples)
    binary_headers = {"Content-Type": "application/octet-stream",
                      HEADER_LENGTH: str(header_length)}
    found: Events = {}
    for route in routes_of(MODEL):
        if route.request == "explain" and not explains:
            continue
        parameters = {"model": manifest.name}
        if "version" in route.parameters:
            parameters["version"] = manifest.version
        if route.request is None:
            found[route.example] = route_event(route, parameters)
            continue
        found[route.example] = route_event(route, parameters, body, JSON_HEADERS)
        if "version" not in route.parameters:
            found[f"{route.example}-binary"] = route_event(route, parameters, binary,
                                                           binary_headers)
    return found


EXAMPLE_ASSET = "console.js"  # a console file, for the server's static route


def server_events(model: str) -> Events:
    """The server function's events; a route naming a model (repository load, unload) names
    `model`, the registry's first."""
    values = {"model": model, "asset": EXAMPLE_ASSET}
    return {route.example: route_event(route, {name: values[name] for name in route.parameters})
            for route in routes_of(SERVER)}


def batch_jobs_events(model: str, version: str) -> Events:
    """The batch jobs function's events; a route naming a model names `model` (and its
    `version`); a job request asks for a 1,024-byte JSON Lines input."""
    found: Events = {}
    for route in routes_of(BATCH_JOBS):
        parameters = {name: value for name, value in
                      (("model", model), ("version", version), ("job_id", EXAMPLE_JOB_ID))
                      if name in route.parameters}
        body = JOB_REQUEST if route.request == "job" else None
        found[route.example] = route_event(route, parameters, body,
                                           JSON_HEADERS if body else None)
    return found


def render(entries: list[ModelEntry], locate: Locate = EXPORTED,
           events_dir: Path = EVENTS_DIR, only: set[str] | None = None) -> dict[Path, str]:
    """Every generated event file (path -> JSON text) for the registry `entries`, read from
    each model's current exported version; ExamplesError or ManifestError if one is unusable.
    The server and batch jobs functions' events name the registry's first model, at its current
    version (no file read: always rendered); `only`: the models whose own events are rendered
    (default every one), so a change to one model reads one model's files."""
    folders: dict[str, Events] = {}
    if entries:
        folders[SERVER_FOLDER] = server_events(entries[0].name)
        folders[BATCH_JOBS_FOLDER] = batch_jobs_events(entries[0].name, entries[0].current)
    for entry in entries:
        if only is not None and entry.name not in only:
            continue
        version_dir = locate(entry.name, entry.current)
        manifest = load_manifest(version_dir / MANIFEST_FILE)
        folders[entry.name] = model_events(manifest, model_examples.load(version_dir, manifest))
    return {events_dir / folder / f"{name}.json": json.dumps(event, indent=2) + "\n"
            for folder, events in folders.items() for name, event in events.items()}


def write(files: dict[Path, str]) -> None:
    for path, text in files.items():
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")


def stale(files: dict[Path, str], events_dir: Path = EVENTS_DIR) -> list[Path]:
    """Files under `events_dir` that are neither among the generated `files` nor hand-written."""
    hand = {events_dir / name for name in HAND_WRITTEN}
    return sorted(path for path in events_dir.rglob("*")
                  if path.is_file() and path not in files and path not in hand) \
        if events_dir.is_dir() else []


def main(argv: list[str] | None = None) -> int:
    """Write the events of every registered model (from build/models, or the folder given) and
    remove the files of events/ that nothing generates any more (but the hand-written ones)."""
    args = sys.argv[1:] if argv is None else argv
    files = render(registry.load(), exported(Path(args[0]) if args else PROJECT.models_dir))
    write(files)
    for path in stale(files):
        path.unlink()
        print(f"removed {path.relative_to(ROOT)}: no route or model has it any more")
        if not any(path.parent.iterdir()):
            path.parent.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(registry.run(main))
