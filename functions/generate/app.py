"""POST /generate (one completion), GET /usage (this caller's usage, plan and limits),
GET /admin/usage (everyone's usage on a day, for the admin group) and GET /openapi.json."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query

from claudekit import api, openapi, tasks
from claudekit.client import get_client
from claudekit.contract import GenerateBody, GenerateOut, OperatorReportOut, UsageReportOut
from claudekit.errors import InvalidRequest
from claudekit.openapi import CLAUDE_ERRORS, READ_ERRORS
from claudekit.settings import get_settings

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


def kept_day(day: date | None) -> date | None:
    """A day whose usage is still kept (USAGE_RETENTION_DAYS), or None for today."""
    if day is None:
        return None
    today = datetime.now(UTC).date()
    kept = get_settings().usage_retention_days
    if not today - timedelta(days=kept) <= day <= today:
        raise InvalidRequest(f"date: must be today or one of the {kept} days before it (UTC)")
    return day


@app.get("/usage", operation_id="getUsage", responses=api.responses(*READ_ERRORS, 422))
def usage(date: Annotated[date | None, Query()] = None) -> Response[UsageReportOut]:
    report = get_client().ledger.report(api.caller(app), day=kept_day(date))
    return api.respond(app, UsageReportOut.model_validate(report))


@app.get("/admin/usage", operation_id="getAdminUsage", responses=api.responses(*READ_ERRORS, 403, 422))
def admin_usage(date: Annotated[date | None, Query()] = None) -> Response[OperatorReportOut]:
    api.require_group(app, get_settings().admin_group)
    day = kept_day(date) or datetime.now(UTC).date()
    return api.respond(app, OperatorReportOut.model_validate(get_client().ledger.operator_report(day)))


@app.get(
    "/openapi.json",
    operation_id="getOpenApi",
    responses=api.responses(400, 500, description="This API's OpenAPI 3.1 document"),
)
def openapi_document() -> Response[dict[str, Any]]:
    """Public (the template's route has no authorizer): the contract holds no data."""
    return api.respond(app, openapi.document())


handler = api.lambda_handler(app)
