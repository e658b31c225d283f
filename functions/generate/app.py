"""POST /generate (one completion), GET /usage (this caller's usage, plan and limits),
GET /admin/usage (everyone's usage on a day, for the admin group) and GET /openapi.json."""

from __future__ import annotations

# First: SnapStart's runtime hooks registered, and the garbage collector paused for the imports below.
from claudekit import snapstart  # isort: skip

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query

from claudekit.claude.client import get_client
from claudekit.errors import InvalidRequest
from claudekit.http import openapi, rest
from claudekit.http.openapi import CLAUDE_ERRORS, READ_ERRORS
from claudekit.settings import get_settings
from claudekit.tasks import generate
from claudekit.tasks.generate import GenerateBody, GenerateOut
from claudekit.tasks.usage import OperatorReportOut, UsageReportOut

app = rest.create_app()


@app.post("/generate", operation_id="generate", responses=rest.responses(*CLAUDE_ERRORS, limited=True))
def post_generate(body: GenerateBody) -> Response[GenerateOut]:
    result = generate.generate(get_client(), body, rest.caller(app), rest.deadline(app))
    return rest.respond(
        app,
        GenerateOut(
            text=result.text,
            stop_reason=result.stop_reason,
            truncated=result.truncated,
            request_id=rest.request_id(app),
            **rest.result_fields(result),
        ),
    )


def kept_day(day: date | None) -> date | None:
    """A day whose usage is still kept (USAGE_RETENTION_DAYS), or None for today."""
    if day is None:
        return None
    today = datetime.now(UTC).date()
    kept = get_settings().usage_retention_days
    if not today - timedelta(days=kept) <= day <= today:
        raise InvalidRequest(f"date: must be today or one of the {kept} days before it (UTC)")
    return day


@app.get("/usage", operation_id="getUsage", responses=rest.responses(*READ_ERRORS, 422))
def usage(date: Annotated[date | None, Query()] = None) -> Response[UsageReportOut]:
    report = get_client().ledger.report(rest.caller(app), day=kept_day(date))
    return rest.respond(app, UsageReportOut.model_validate(report))


@app.get("/admin/usage", operation_id="getAdminUsage", responses=rest.responses(*READ_ERRORS, 403, 422))
def admin_usage(date: Annotated[date | None, Query()] = None) -> Response[OperatorReportOut]:
    rest.require_group(app, get_settings().admin_group)
    day = kept_day(date) or datetime.now(UTC).date()
    return rest.respond(app, OperatorReportOut.model_validate(get_client().ledger.operator_report(day)))


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
