"""POST /generate (one completion), GET /usage (this caller's usage, plan and limits),
GET /admin/usage (everyone's usage on a day, for the admin group) and GET /openapi.json."""

from __future__ import annotations

# First: SnapStart's runtime hooks registered, and the garbage collector paused for the imports below.
from claudekit import snapstart  # isort: skip

from datetime import date
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query

from claudekit.http import openapi, rest
from claudekit.http.openapi import CLAUDE_ERRORS, READ_ERRORS
from claudekit.settings import get_settings
from claudekit.tasks import generate, usage
from claudekit.tasks.generate import GenerateBody, GenerateOut
from claudekit.tasks.usage import OperatorReportOut, UsageReportOut

app = rest.create_app()


@app.post("/generate", operation_id="generate", responses=rest.responses(*CLAUDE_ERRORS, limited=True))
def post_generate(body: GenerateBody) -> Response[GenerateOut]:
    return rest.respond(app, generate.generate(body, rest.caller(app), rest.deadline(app), rest.request_id(app)))


@app.get("/usage", operation_id="getUsage", responses=rest.responses(*READ_ERRORS, 422))
def get_usage(date: Annotated[date | None, Query()] = None) -> Response[UsageReportOut]:
    return rest.respond(app, usage.report(rest.caller(app), date))


@app.get("/admin/usage", operation_id="getAdminUsage", responses=rest.responses(*READ_ERRORS, 403, 422))
def get_admin_usage(date: Annotated[date | None, Query()] = None) -> Response[OperatorReportOut]:
    rest.require_group(app, get_settings().admin_group)
    return rest.respond(app, usage.operator_report(date))


@app.get(
    "/openapi.json",
    operation_id="getOpenApi",
    responses=rest.responses(400, 500, description="This API's OpenAPI 3.1 document"),
)
def openapi_document() -> Response[dict[str, Any]]:
    """Public (the template's route has no authorizer): the contract holds no data."""
    return rest.respond(app, openapi.document())


handler = rest.lambda_handler(app)

snapstart.initialised()  # every import done: the collector runs again, past init's objects
