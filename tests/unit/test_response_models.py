"""Routes declare their success model (`Response[Model]`); the resolver holds them to it."""

from __future__ import annotations

import json
from pathlib import Path

from aws_lambda_powertools.event_handler import Response

from claudekit.http import rest
from claudekit.tasks.classify import ClassifyOut
from claudekit.tasks.models import UsageOut
from local.lambda_context import LambdaContext

EVENT = json.loads((Path(__file__).resolve().parents[2] / "events" / "usage.json").read_text())
USAGE = UsageOut(input_tokens=1, output_tokens=2, cache_creation_input_tokens=0, cache_read_input_tokens=0)


def test_a_route_answers_its_declared_model_as_json() -> None:
    def declared() -> Response[ClassifyOut]:
        return rest.respond(api_app, ClassifyOut(label="a", model="m", usage=USAGE, cost_usd=0.5))

    api_app = rest.create_app()
    api_app.get("/usage")(declared)
    result = api_app.resolve(dict(EVENT), LambdaContext("test", 5))
    assert result["statusCode"] == 200
    assert json.loads(result["body"]) == {"label": "a", "model": "m", "usage": USAGE.model_dump(), "cost_usd": 0.5}


def test_a_response_that_breaks_its_declared_model_is_our_500_not_the_callers_422() -> None:
    def broken() -> Response[ClassifyOut]:
        return rest.respond(api_app, {"label": "a"})  # model, usage and cost_usd missing

    api_app = rest.create_app()
    api_app.get("/usage")(broken)
    result = api_app.resolve(dict(EVENT), LambdaContext("test", 5))
    assert result["statusCode"] == 500
    assert json.loads(result["body"])["error"]["code"] == "INTERNAL_ERROR"
