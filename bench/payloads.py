"""Requests of 1 to 1,024 rows per model, made from the model's own example inputs.

The examples of each registered model's current version (`model_api.examples`: real held-back
rows for the seed models) are repeated to the wanted count, so every model is measured on real
inputs of its own: as JSON (the protocol's default encoding) or as binary tensors (the
`binary_data_size` extension, answers asked for as binary too), wrapped in the API Gateway
event of events/<model>/infer.json.
"""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import model_api.examples as examples
import numpy as np
from model_api.binary import HEADER_LENGTH
from model_api.explainers import NONE
from model_api.manifest import MANIFEST_FILE, Manifest, load_manifest

from bench.common import EVENTS_DIR, MODELS_DIR
from model_registry import registry


@dataclass(frozen=True)
class Request:
    """One request body with the headers it needs (binary bodies need their header length)."""

    body: bytes
    headers: dict[str, str]


def model_names() -> list[str]:
    """Every registered model that has its events (all of them, after `make build`)."""
    return sorted(entry.name for entry in registry.load()
                  if (EVENTS_DIR / entry.name / "infer.json").is_file())


def example_event(model: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS_DIR / model / "infer.json").read_text())
    return event


@cache
def _examples(model: str) -> tuple[Manifest, examples.Examples]:
    """The current version's manifest and example inputs (model_api.examples)."""
    current = next(entry.current for entry in registry.load() if entry.name == model)
    version_dir = MODELS_DIR / model / current
    manifest = load_manifest(version_dir / MANIFEST_FILE)
    return manifest, examples.load(version_dir, manifest)


def explained(model: str) -> bool:
    """Whether the model's current version answers /explain (its manifest names a method;
    an added model without background rows, say, has none: model_api.explainers)."""
    config = _examples(model)[0].extra.get("explanation")
    return isinstance(config, dict) and config.get("method") not in (None, NONE)


def example_inputs(model: str, rows: int) -> tuple[Manifest, examples.Examples]:
    """The model's example rows repeated (or cut) to `rows`, for every input."""
    manifest, found = _examples(model)
    return manifest, {name: array[np.arange(rows) % len(array)] for name, array in found.items()}


def request_body(model: str, rows: int) -> bytes:
    """A JSON request of `rows` rows."""
    return examples.json_request(*example_inputs(model, rows))


def binary_request(model: str, rows: int) -> Request:
    """The same rows as binary tensors, every output asked for as binary tensor data."""
    body, header_length = examples.binary_request(*example_inputs(model, rows))
    return Request(body, {"Content-Type": "application/octet-stream",
                          HEADER_LENGTH: str(header_length)})


def request(model: str, rows: int, encoding: str) -> Request:
    """A request of `rows` rows, `encoding` "json" or "binary"."""
    if encoding == "binary":
        return binary_request(model, rows)
    return Request(request_body(model, rows), {"Content-Type": "application/json"})


def api_event(model: str, sent: Request) -> dict[str, Any]:
    """The example API Gateway event carrying `sent` (base64, as for our */* media type)."""
    event = copy.deepcopy(example_event(model))
    event["body"] = base64.b64encode(sent.body).decode()
    event["isBase64Encoded"] = True
    for key, value in sent.headers.items():
        event["headers"][key] = value
        event["multiValueHeaders"][key] = [value]
    return event
