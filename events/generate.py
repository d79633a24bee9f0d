"""Write events/<function>/<route>.json: one API Gateway proxy event per route of each function.

Each event starts as `sam local generate-event apigateway aws-proxy` makes it, then gets the
route's real resource, path parameters and a real request body (rows of the model's own
dataset, as JSON and as binary tensors), so the same files serve `sam local invoke -e`, the
Docker-free `python -m local_api invoke`, the tests, and readers who want to see what a
function receives. Run it with `make events` after adding a model.
"""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from model_registry import registry  # noqa: E402  (run as a script from any folder)

STAGE = "v1"
EXAMPLE_ROWS = 2


def sam_event(method: str, resource: str) -> dict[str, Any]:
    """The event exactly as the SAM CLI generates it for this route."""
    out = subprocess.run(
        [
            "sam",
            "local",
            "generate-event",
            "apigateway",
            "aws-proxy",
            "--method",
            method,
            "--resource",
            resource,
            "--path",
            resource.lstrip("/"),
            "--stage",
            STAGE,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def route_event(
    method: str,
    resource: str,
    path_parameters: dict[str, str] | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A SAM-generated event for one route, with the route's own parameters and body."""
    event = sam_event(method, resource)
    path = resource
    for key, value in (path_parameters or {}).items():
        path = path.replace("{" + key + "}", value)
    event.update(
        path=path,
        pathParameters=path_parameters,
        queryStringParameters=None,
        multiValueQueryStringParameters=None,
        stageVariables=None,
    )
    event["requestContext"]["path"] = f"/{STAGE}{path}"
    for key, value in (headers or {}).items():
        event["headers"][key] = value
        event["multiValueHeaders"][key] = [value]
    # The API's binary media type is */*: API Gateway base64-encodes every body it passes on.
    event["body"] = base64.b64encode(body).decode() if body is not None else None
    event["isBase64Encoded"] = body is not None
    return event


def example_inputs(manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    """Real rows of the seed models' datasets; zeros (or a short text) for any other model."""
    from sklearn import datasets

    name = manifest["name"]
    if name == "breast-cancer-mlp":
        rows = datasets.load_breast_cancer().data[[0, 19]]
    elif name == "diabetes-linear":
        rows = datasets.load_diabetes().data[:EXAMPLE_ROWS]
    elif name == "digits-cnn":
        rows = datasets.load_digits().images[:EXAMPLE_ROWS]
    elif name == "text-topics":
        rows = np.array(
            [
                "The striker scored twice in the final minutes",
                "Whisk the eggs with sugar until pale, then fold in the flour",
            ]
        )
    else:
        spec = manifest["inputs"][0]
        shape = [EXAMPLE_ROWS] + [d if d > 0 else 1 for d in spec["shape"][1:]]
        rows = np.full(shape, "example") if spec["datatype"] == "BYTES" else np.zeros(shape)
    return {manifest["inputs"][0]["name"]: rows}


def json_request(manifest: dict[str, Any], inputs: dict[str, np.ndarray]) -> bytes:
    tensors = []
    for spec in manifest["inputs"]:
        array = inputs[spec["name"]]
        tensors.append(
            {
                "name": spec["name"],
                "shape": list(array.shape),
                "datatype": spec["datatype"],
                "data": array.tolist(),
            }
        )
    return json.dumps({"id": "example-1", "inputs": tensors}).encode()


def binary_request(manifest: dict[str, Any], inputs: dict[str, np.ndarray]) -> tuple[bytes, int]:
    """A binary tensor data request (JSON header + raw bytes), as Triton's client sends it."""
    tensors, blobs = [], []
    for spec in manifest["inputs"]:
        array = inputs[spec["name"]]
        if spec["datatype"] == "BYTES":
            blob = b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in array.flat)
        else:
            blob = array.astype(
                {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8"}[spec["datatype"]]
            ).tobytes()
        blobs.append(blob)
        tensors.append(
            {
                "name": spec["name"],
                "shape": list(array.shape),
                "datatype": spec["datatype"],
                "parameters": {"binary_data_size": len(blob)},
            }
        )
    header = json.dumps(
        {"id": "example-binary", "inputs": tensors, "parameters": {"binary_data_output": True}}
    ).encode()
    return header + b"".join(blobs), len(header)


def model_events(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    name, version = manifest["name"], manifest["version"]
    base, versioned = f"/v2/models/{name}", f"/v2/models/{name}/versions/{{version}}"
    params = {"version": version}
    inputs = example_inputs(manifest)
    body = json_request(manifest, inputs)
    binary, header_length = binary_request(manifest, inputs)
    json_headers = {"Content-Type": "application/json"}
    binary_headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(header_length),
    }
    return {
        "metadata": route_event("GET", base),
        "ready": route_event("GET", f"{base}/ready"),
        "infer": route_event("POST", f"{base}/infer", body=body, headers=json_headers),
        "infer-binary": route_event("POST", f"{base}/infer", body=binary, headers=binary_headers),
        "version-metadata": route_event("GET", versioned, params),
        "version-ready": route_event("GET", f"{versioned}/ready", params),
        "version-infer": route_event("POST", f"{versioned}/infer", params, body, json_headers),
        "explain": route_event("POST", f"{base}/explain", body=body, headers=json_headers),
        "version-explain": route_event("POST", f"{versioned}/explain", params, body,
                                       json_headers),
    }


def server_events() -> dict[str, dict[str, Any]]:
    return {
        "server-metadata": route_event("GET", "/v2"),
        "health-live": route_event("GET", "/v2/health/live"),
        "health-ready": route_event("GET", "/v2/health/ready"),
    }


def write(folder: Path, events: dict[str, dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for route, event in events.items():
        (folder / f"{route}.json").write_text(json.dumps(event, indent=2) + "\n")
        print(f"wrote {folder.relative_to(ROOT)}/{route}.json")


def main(models_dir: Path) -> None:
    """Events for the server routes and for the current version of every registered model."""
    write(ROOT / "events" / "server", server_events())
    for entry in registry.load():
        manifest = json.loads(
            (models_dir / entry.name / entry.current / "manifest.json").read_text()
        )
        write(ROOT / "events" / entry.name, model_events(manifest))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build" / "models")
