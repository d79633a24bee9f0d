"""docs/openapi.json: valid OpenAPI 3.0, and what model_registry/openapi.py renders from the
route table, the registry and the exported models today (so a new model or route cannot leave
it stale)."""

from __future__ import annotations

import json

from openapi_spec_validator import validate

from model_registry import registry
from model_registry.openapi import OUTPUT, render


def test_the_committed_openapi_document_is_up_to_date() -> None:
    assert OUTPUT.read_text() == render(), "docs/openapi.json is stale: run make openapi"


def test_the_openapi_document_is_valid_and_documents_each_models_inputs() -> None:
    document = json.loads(OUTPUT.read_text())
    validate(document)
    request = document["components"]["schemas"]["infer_request.breast-cancer-mlp"]
    item = request["properties"]["inputs"]["items"]["properties"]
    assert item["name"]["enum"] == ["features"] and item["datatype"]["enum"] == ["FP32"]
    path = document["paths"]["/v2/models/{model}/infer"]
    infer = path["post"]
    assert {"200", "400", "404", "413", "503"} <= set(infer["responses"])
    # A model's routes are listed once, the model a parameter naming every registered one, and
    # the body any model's request: the document grows by two schemas per model, not 8 paths.
    (model,) = [p for p in path["parameters"] if p["name"] == "model"]
    assert model["schema"]["enum"] == sorted(e.name for e in registry.load())
    assert {"$ref": "#/components/schemas/infer_request.breast-cancer-mlp"} in \
        infer["requestBody"]["content"]["application/json"]["schema"]["anyOf"]
    assert not [p for p in document["paths"] if "breast-cancer-mlp" in p]
