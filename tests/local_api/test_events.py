"""The events the local API builds are API Gateway's REST proxy events (payload 1.0): the same
keys as SAM CLI's own (`sam local start-api`'s construction and `sam local generate-event`),
and the handler's answer turns into HTTP as API Gateway turns it."""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

import flask
import pytest
from samcli.local.apigw.event_constructor import construct_v1_event

from local_api import events
from local_api.routes import Match
from local_api.template import RouteSpec
from tests.conftest import SAM

RESOURCE = "/v2/models/m/versions/{version}/infer"
ROUTE = Match(RouteSpec("POST", RESOURCE, "Fn"), {"version": "1"})


def request(body: bytes = b"{}", method: str = "POST", **headers: str) -> events.HttpRequest:
    return events.HttpRequest(
        method=method, path="/v2/models/m/versions/1/infer",
        headers=[("host", "127.0.0.1:3000"), ("content-type", "application/json"),
                 *headers.items()],
        query=[("a", "1"), ("a", "2")], body=body, source_ip="127.0.0.1", port=3000)


def ours(**kwargs: Any) -> dict[str, Any]:
    return events.build_event(request(**kwargs), ROUTE, stage="v1", stage_variables=None,
                              binary_media_types=["*/*"], request_id="r-1")


def sam_start_api_event() -> dict[str, Any]:
    """What `sam local start-api` builds for the same request (its flask request)."""
    app = flask.Flask(__name__)
    rule = RESOURCE.replace("{version}", "<version>")
    app.add_url_rule(rule, endpoint=rule, view_func=lambda **_: "", methods=["POST"])
    with app.test_request_context("/v2/models/m/versions/1/infer?a=1&a=2", method="POST",
                                  data=b"{}", content_type="application/json"):
        return construct_v1_event(flask.request, 3000, ["*/*"], stage_name="v1")


@pytest.fixture(scope="module")
def generated() -> dict[str, Any]:
    """`sam local generate-event apigateway aws-proxy` for the same route."""
    out = subprocess.run([SAM, "local", "generate-event", "apigateway", "aws-proxy", "--method",
                          "POST", "--resource", RESOURCE, "--path", "v2/models/m/versions/1/infer",
                          "--stage", "v1"], check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out))


def test_top_level_keys_are_sams(generated: dict[str, Any]) -> None:
    assert set(ours()) == set(sam_start_api_event()) == set(generated)


def test_request_context_and_identity_keys_are_those_of_sams_two_events(
        generated: dict[str, Any]) -> None:
    sam = sam_start_api_event()
    context = ours()["requestContext"]
    assert set(context) == set(sam["requestContext"]) | set(generated["requestContext"])
    assert set(context["identity"]) == (set(sam["requestContext"]["identity"])
                                        | set(generated["requestContext"]["identity"]))


def test_values_are_what_api_gateway_sends() -> None:
    event = ours(body=b"\x00\xffbinary")
    assert event["resource"] == RESOURCE and event["path"] == "/v2/models/m/versions/1/infer"
    assert event["httpMethod"] == "POST" and event["pathParameters"] == {"version": "1"}
    assert event["queryStringParameters"] == {"a": "2"}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"]}
    assert event["stageVariables"] is None
    # Binary media type */*: every body is base64.
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\x00\xffbinary"
    assert event["headers"]["Content-Type"] == "application/json"
    assert event["multiValueHeaders"]["X-Forwarded-Port"] == ["3000"]
    context = event["requestContext"]
    assert context["path"] == "/v1/v2/models/m/versions/1/infer"
    assert context["resourcePath"] == RESOURCE and context["stage"] == "v1"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["requestId"] == "r-1" and isinstance(context["requestTimeEpoch"], int)


def test_no_body_is_null_and_not_base64() -> None:
    event = ours(body=b"", method="GET")
    assert event["body"] is None and event["isBase64Encoded"] is False


def test_text_body_when_its_type_is_not_binary() -> None:
    event = events.build_event(request(b'{"a": 1}'), ROUTE, stage="v1", stage_variables=None,
                               binary_media_types=["application/octet-stream"], request_id="r")
    assert event["body"] == '{"a": 1}' and event["isBase64Encoded"] is False
    assert events.is_binary(["image/*"], "image/png; q=1")
    assert not events.is_binary(["image/*"], None)


def test_repeated_headers_keep_every_value() -> None:
    event = events.build_event(
        events.HttpRequest("GET", "/x", [("x-multi", "1"), ("X-Multi", "2")], [], b"", "::1", 1),
        ROUTE, stage="v1", stage_variables={"k": "v"}, binary_media_types=["*/*"],
        request_id="r")
    assert event["headers"]["X-Multi"] == "2"
    assert event["multiValueHeaders"]["X-Multi"] == ["1", "2"]
    assert event["stageVariables"] == {"k": "v"} and event["queryStringParameters"] is None


def test_answer_to_http() -> None:
    answer = events.to_http(json.dumps({
        "statusCode": 201, "headers": {"A": "1", "B": "x"}, "multiValueHeaders": {"B": ["x", "y"]},
        "body": base64.b64encode(b"\x01\x02").decode(), "isBase64Encoded": True}), ["*/*"])
    assert answer.status == 201 and answer.body == b"\x01\x02"
    assert answer.headers == [("B", "x"), ("B", "y"), ("A", "1"),
                              ("Content-Type", "application/json")]
    plain = events.to_http('{"statusCode": 200, "body": "hi", "headers": {"Content-Length": "9"}}',
                           ["*/*"])
    assert plain.body == b"hi" and ("x-amzn-Remapped-Content-Length", "9") in plain.headers


@pytest.mark.parametrize("answer", [
    "[]", '{"body": "no status"}', '{"statusCode": "abc"}', '{"statusCode": 200, "body": {}}',
    '{"statusCode": 200, "extra": 1}', '{"statusCode": 200, "isBase64Encoded": "maybe"}',
    '{"statusCode": 200, "headers": []}',
])
def test_malformed_answers_are_refused(answer: str) -> None:
    with pytest.raises(events.MalformedAnswer):
        events.to_http(answer, ["*/*"])


def test_base64_that_does_not_decode() -> None:
    with pytest.raises(events.UndecodableBody):
        events.to_http('{"statusCode": 200, "body": "%%%", "isBase64Encoded": true}', ["*/*"])
