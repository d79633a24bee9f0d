"""Requests of 1 to 1,024 rows per model, made from the example rows in events/<model>/infer.json.

The example request's rows are repeated to the wanted count, so every model is measured on
real inputs of its own: as JSON (the protocol's default encoding) or as binary tensors (the
`binary_data_size` extension, answers asked for as binary too), wrapped in the API Gateway
event of events/<model>/infer.json.
"""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from model_api.binary import HEADER_LENGTH, encode_tensor
from model_api.datatypes import numpy_dtype

from bench.common import EVENTS_DIR, MODELS_DIR


@dataclass(frozen=True)
class Request:
    """One request body with the headers it needs (binary bodies need their header length)."""

    body: bytes
    headers: dict[str, str]


def model_names() -> list[str]:
    """Every exported model that has events (all of them, after `make build`)."""
    return sorted(path.parent.parent.name for path in MODELS_DIR.glob("*/*/manifest.json")
                  if (EVENTS_DIR / path.parent.parent.name / "infer.json").is_file())


def example_event(model: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS_DIR / model / "infer.json").read_text())
    return event


def example_inputs(model: str, rows: int) -> list[dict[str, Any]]:
    """The example request's input tensors with their rows repeated (or cut) to `rows`."""
    event = example_event(model)
    raw = event["body"]
    document = json.loads(base64.b64decode(raw) if event.get("isBase64Encoded") else raw)
    inputs: list[dict[str, Any]] = document["inputs"]
    for tensor in inputs:
        shape, data = tensor["shape"], tensor["data"]
        nested = bool(data) and isinstance(data[0], list)
        if nested:  # nested like the shape: one item per row
            examples = data
        else:  # flat, row-major
            per_row = len(data) // shape[0]
            examples = [data[i * per_row:(i + 1) * per_row] for i in range(shape[0])]
        repeated = [examples[i % len(examples)] for i in range(rows)]
        tensor["shape"] = [rows, *shape[1:]]
        tensor["data"] = repeated if nested else [item for row in repeated for item in row]
    return inputs


def request_body(model: str, rows: int) -> bytes:
    """A JSON request of `rows` rows."""
    return json.dumps({"inputs": example_inputs(model, rows)}).encode()


def binary_request(model: str, rows: int) -> Request:
    """The same rows as binary tensors, every output asked for as binary tensor data."""
    header: dict[str, Any] = {"inputs": [], "parameters": {"binary_data_output": True}}
    blobs = []
    for tensor in example_inputs(model, rows):
        array = np.array(tensor.pop("data"), dtype=numpy_dtype(tensor["datatype"]))
        blob = encode_tensor(array.reshape(tensor["shape"]), tensor["datatype"])
        header["inputs"].append({**tensor, "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    json_part = json.dumps(header).encode()
    return Request(b"".join([json_part, *blobs]),
                   {"Content-Type": "application/octet-stream",
                    HEADER_LENGTH: str(len(json_part))})


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
