"""POST /generate (one completion), GET /usage (this caller's usage, plan and limits) and
GET /admin/usage (everyone's usage on a day, for the admin group)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Query

from claudekit import api, tasks
from claudekit.client import get_client
from claudekit.contract import GenerateBody, GenerateOut
from claudekit.errors import InvalidRequest
from claudekit.settings import get_settings

app = api.create_app()


@app.post("/generate")
def generate(body: GenerateBody) -> Any:
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
        raise InvalidRequest(f"date: usage is kept for the last {kept} days (UTC), today included")
    return day


@app.get("/usage")
def usage(date: Annotated[date | None, Query()] = None) -> Any:
    return api.respond(app, get_client().ledger.report(api.caller(app), day=kept_day(date)))


@app.get("/admin/usage")
def admin_usage(date: Annotated[date | None, Query()] = None) -> Any:
    api.require_group(app, get_settings().admin_group)
    day = kept_day(date) or datetime.now(UTC).date()
    return api.respond(app, get_client().ledger.operator_report(day))


handler = api.lambda_handler(app)
