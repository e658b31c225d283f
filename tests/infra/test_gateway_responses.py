"""API Gateway's own answers (auth failures, throttling, unknown routes, its timeouts) keep the contract:
the error envelope, X-Request-Id, and the headers every JSON response carries."""

from __future__ import annotations

import json
from typing import Any

import pytest

JSON_HEADERS = {"X-Content-Type-Options": "'nosniff'", "Cache-Control": "'no-store'"}


@pytest.fixture(scope="module")
def gateway_responses(resources: dict[str, Any]) -> dict[str, Any]:
    apis = [r for r in resources.values() if r["Type"] == "AWS::Serverless::Api"]
    assert len(apis) == 1
    responses: dict[str, Any] = apis[0]["Properties"]["GatewayResponses"]
    return responses


def test_the_defaults_and_the_common_failures_are_customised(gateway_responses: dict[str, Any]) -> None:
    assert {"DEFAULT_4XX", "DEFAULT_5XX", "UNAUTHORIZED", "THROTTLED", "REQUEST_TOO_LARGE"} <= set(gateway_responses)


def test_every_gateway_response_carries_the_request_id_and_json_headers(gateway_responses: dict[str, Any]) -> None:
    for name, response in gateway_responses.items():
        headers = response.get("ResponseParameters", {}).get("Headers", {})
        # A context variable, not a quoted literal: API Gateway fills in this request's id.
        assert headers.get("X-Request-Id") == "context.requestId", name
        for header, value in JSON_HEADERS.items():
            assert headers.get(header) == value, f"{name}: {header}"
        # A page on the allowed origin can read API Gateway's own errors too (a 401, a 429).
        assert headers.get("Access-Control-Allow-Origin") == {"Fn::Sub": "'${CorsAllowOrigin}'"}, name


def test_cors_preflight_and_responses_use_the_one_allowed_origin(
    template: dict[str, Any], resources: dict[str, Any], global_function: dict[str, Any]
) -> None:
    (api,) = [r for r in resources.values() if r["Type"] == "AWS::Serverless::Api"]
    cors = api["Properties"]["Cors"]
    assert cors["AllowOrigin"] == {"Fn::Sub": "'${CorsAllowOrigin}'"}
    assert "Idempotency-Key" in cors["AllowHeaders"] and "Authorization" in cors["AllowHeaders"]
    assert api["Properties"]["Auth"]["AddDefaultAuthorizerToCorsPreflight"] is False
    assert global_function["Environment"]["Variables"]["CORS_ALLOW_ORIGIN"] == {"Ref": "CorsAllowOrigin"}
    assert "*" not in template["Parameters"]["CorsAllowOrigin"]["Default"]


def test_every_gateway_response_body_is_the_error_envelope(gateway_responses: dict[str, Any]) -> None:
    for name, response in gateway_responses.items():
        template = response["ResponseTemplates"]["application/json"]
        # The message of DEFAULT_4XX is a quoted VTL value; substitute one to parse the shape.
        body = json.loads(template.replace("$context.error.messageString", '"m"'))
        assert set(body) == {"error"}, name
        assert set(body["error"]) == {"code", "message", "request_id"}, name
        assert body["error"]["request_id"] == "$context.requestId", name


def test_throttling_says_when_to_retry(gateway_responses: dict[str, Any]) -> None:
    throttled = gateway_responses["THROTTLED"]
    assert throttled["StatusCode"] == "429"
    assert throttled["ResponseParameters"]["Headers"]["Retry-After"] == "'1'"


def test_an_oversized_body_is_a_validation_error_as_on_every_route(gateway_responses: dict[str, Any]) -> None:
    too_large = gateway_responses["REQUEST_TOO_LARGE"]
    assert too_large["StatusCode"] == "400"
    assert '"code": "VALIDATION_ERROR"' in too_large["ResponseTemplates"]["application/json"]


def test_jobs_in_flight_cap_is_a_parameter_passed_to_every_function(
    template: dict[str, Any], global_function: dict[str, Any]
) -> None:
    parameter = template["Parameters"]["MaxJobsInFlight"]
    assert parameter["Type"] == "Number" and parameter["Default"] == 1000 and parameter["MinValue"] == 1
    assert global_function["Environment"]["Variables"]["MAX_JOBS_IN_FLIGHT"] == {"Ref": "MaxJobsInFlight"}
