"""docs/openapi.json: valid OpenAPI 3.0, and what model_registry/openapi.py renders from the
route table, the registry and the exported models today (so a new model or route cannot leave
it stale)."""

from __future__ import annotations

import json

from openapi_spec_validator import validate

from model_registry.openapi import OUTPUT, render


def test_the_committed_openapi_document_is_up_to_date() -> None:
    assert OUTPUT.read_text() == render(), "docs/openapi.json is stale: run make openapi"


def test_the_openapi_document_is_valid_and_documents_each_models_inputs() -> None:
    document = json.loads(OUTPUT.read_text())
    validate(document)
    request = document["components"]["schemas"]["infer_request.breast-cancer-mlp"]
    item = request["properties"]["inputs"]["items"]["properties"]
    assert item["name"]["enum"] == ["features"] and item["datatype"]["enum"] == ["FP32"]
    infer = document["paths"]["/v2/models/breast-cancer-mlp/infer"]["post"]
    assert {"200", "400", "404", "413", "503"} <= set(infer["responses"])
