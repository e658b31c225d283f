"""POST /generate (one completion), GET /usage (this caller's usage and limits) and GET /openapi.json."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response

from claudekit import api, openapi, tasks
from claudekit.client import get_client
from claudekit.contract import GenerateBody, GenerateOut
from claudekit.openapi import CLAUDE_ERRORS, READ_ERRORS

app = api.create_app()


@app.post("/generate", operation_id="generate", responses=api.responses(*CLAUDE_ERRORS, limited=True))
def generate(body: GenerateBody) -> Response[GenerateOut]:
    result = tasks.generate(get_client(), body, api.caller(app), api.deadline(app))
    return api.respond(
        app,
        GenerateOut(
            text=result.text,
            stop_reason=result.stop_reason,
            truncated=result.truncated,
            request_id=api.request_id(app),
            **api.result_fields(result),
        ),
    )


@app.get("/usage", operation_id="getUsage", responses=api.responses(*READ_ERRORS))
def usage() -> Any:
    return api.respond(app, get_client().ledger.report(api.caller(app)))


@app.get(
    "/openapi.json",
    operation_id="getOpenApi",
    responses=api.responses(400, 500, description="This API's OpenAPI 3.1 document"),
)
def openapi_document() -> Response[dict[str, Any]]:
    """Public (the template's route has no authorizer): the contract holds no data."""
    return api.respond(app, openapi.document())


handler = api.lambda_handler(app)
