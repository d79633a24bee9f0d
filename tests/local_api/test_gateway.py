"""API Gateway's own answers, rendered from this project's template.yaml as the deployed API
renders them, and its route matching."""

from __future__ import annotations

import json

import pytest

from local_api import gateway
from local_api.routes import RouteTable, split_path
from local_api.template import GatewayResponses, RouteSpec, load_template
from tests.conftest import ROOT

CONTEXT = {"httpMethod": "DELETE", "path": "/v1/v2/models/x", "stage": "v1"}


@pytest.fixture(scope="module")
def responses() -> GatewayResponses:
    return load_template(ROOT / "template.yaml").gateway_responses


@pytest.mark.parametrize(("response_type", "status"), [
    ("MISSING_AUTHENTICATION_TOKEN", 404), ("INVALID_API_KEY", 403), ("REQUEST_TOO_LARGE", 413),
    ("INTEGRATION_FAILURE", 503), ("INTEGRATION_TIMEOUT", 504), ("API_CONFIGURATION_ERROR", 500),
])
def test_every_answer_is_the_templates_error_document(
        responses: GatewayResponses, response_type: str, status: int) -> None:
    answer = gateway.render(responses, response_type, CONTEXT)
    assert answer.status == status
    assert ("Content-Type", "application/json") in answer.headers
    assert set(json.loads(answer.body)) == {"error"}


def test_a_throttle_is_503_with_retry_after_and_the_error_document(
        responses: GatewayResponses) -> None:
    """Lambda's throttle reaches the client as INTEGRATION_FAILURE (docs/architecture.md,
    "Overload"): the template makes it a 503 with Retry-After, which clients retry; without
    the template's response API Gateway would answer 500 "Internal server error"."""
    answer = gateway.render(responses, "INTEGRATION_FAILURE", CONTEXT, status=500)
    assert answer.status == 503 and ("Retry-After", "1") in answer.headers
    assert "throttled" in json.loads(answer.body)["error"]
    bare = gateway.render({}, "INTEGRATION_FAILURE", CONTEXT, status=500)
    assert bare.status == 500 and json.loads(bare.body) == {"message": "Internal server error"}


def test_context_variables_are_rendered(responses: GatewayResponses) -> None:
    answer = gateway.render(responses, "MISSING_AUTHENTICATION_TOKEN", CONTEXT)
    assert json.loads(answer.body)["error"].startswith("No such route: DELETE /v1/v2/models/x (")


def test_fallback_is_default_5xx_with_the_quoted_message_string(
        responses: GatewayResponses) -> None:
    # API_CONFIGURATION_ERROR is not in the template: DEFAULT_5XX renders API Gateway's message.
    answer = gateway.render(responses, "API_CONFIGURATION_ERROR", CONTEXT)
    assert answer.body == b'{"error": "Internal server error"}'


def test_without_gateway_responses_api_gateways_built_in_answer() -> None:
    answer = gateway.render({}, "MISSING_AUTHENTICATION_TOKEN", CONTEXT)
    assert answer.status == 403
    assert json.loads(answer.body) == {"message": "Missing Authentication Token"}


def test_status_and_static_headers_from_the_template() -> None:
    responses = {"DEFAULT_4XX": {"StatusCode": 418, "ResponseTemplates": {},
                                 "Headers": {"Access-Control-Allow-Origin": "'*'",
                                             "X-From-Request": "method.request.header.x"}}}
    answer = gateway.render(responses, "INVALID_API_KEY", CONTEXT)
    assert answer.status == 418
    assert answer.headers == [("Content-Type", "application/json"),
                              ("Access-Control-Allow-Origin", "*")]
    assert gateway.render_template("${context.stage}|$context.nope|$context.path.", CONTEXT) == \
        "v1||/v1/v2/models/x."


def test_routes_match_as_api_gateways_resource_tree() -> None:
    table = RouteTable([RouteSpec("GET", "/items/{id}", "A"),
                        RouteSpec("GET", "/items/fixed", "B"),
                        RouteSpec("GET", "/files/{proxy+}", "C"),
                        RouteSpec("POST", "/items/{id}", "D")])
    fixed = table.match("GET", "/items/fixed")
    assert fixed is not None and fixed.route.function_id == "B"
    item = table.match("GET", "/items/a%2Fb/")
    assert item is not None and item.path_parameters == {"id": "a/b"}
    files = table.match("GET", "/files/a/b")
    assert files is not None and files.path_parameters == {"proxy": "a/b"}
    assert table.match("DELETE", "/items/1") is None
    assert table.match("GET", "/files") is None and table.match("GET", "/items/1/x") is None
    assert split_path("/") == []
