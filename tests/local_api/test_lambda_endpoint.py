"""local_api.lambda_endpoint: which function a FunctionName names, who may call, what each
function is given (the e2e tests call the endpoint over HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from local_api.lambda_endpoint import LambdaError, LocalLambda, find_function, parse_payload
from local_api.template import FunctionSpec


def spec(logical_id: str, name: str) -> FunctionSpec:
    return FunctionSpec(logical_id, name, "app.lambda_handler", "python3.12", Path("."), (), {},
                        3, 128)


FUNCTIONS = {"ModelFunction": spec("ModelFunction", "stack-ModelFunction-AbC123")}


@pytest.mark.parametrize("name", [
    "ModelFunction", "ModelFunction:live", "stack-ModelFunction-AbC123",
    "arn:aws:lambda:us-east-1:123456789012:function:ModelFunction:live",
    "arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3AModelFunction"])
def test_a_function_is_found_by_any_of_its_names(name: str) -> None:
    assert find_function(name, FUNCTIONS).logical_id == "ModelFunction"


def test_an_unknown_function_or_a_bad_payload_is_lambdas_error() -> None:
    with pytest.raises(LambdaError) as caught:
        find_function("Other", FUNCTIONS)
    assert (caught.value.status, caught.value.error_type) == (404, "ResourceNotFoundException")
    with pytest.raises(LambdaError) as caught:
        parse_payload(b"{nope")
    assert caught.value.status == 400
    assert parse_payload(b"") == {}


def test_only_a_caller_signing_with_the_processs_key_id_is_let_in() -> None:
    local = LocalLambda.create("0.0.0.0", 3000)
    assert local.url == "http://127.0.0.1:3000"
    environment = local.environment()
    assert environment["AWS_ENDPOINT_URL_LAMBDA"] == local.url
    key = environment["AWS_ACCESS_KEY_ID"]
    assert key != LocalLambda.create("0.0.0.0", 3000).access_key_id  # one per process
    local.check_caller(f"AWS4-HMAC-SHA256 Credential={key}/20260101/us-east-1/lambda/aws4_request")
    for forged in (None, "", "AWS4-HMAC-SHA256 Credential=AKIAOTHER/2026", f"Credential={key}"):
        with pytest.raises(LambdaError) as caught:
            local.check_caller(forged)
        assert caught.value.status == 403
