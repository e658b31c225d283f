"""GET /usage and GET /admin/usage: what a caller, or everyone, spent on a day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from pydantic import BaseModel

from claudekit.claude.client import get_client
from claudekit.errors import InvalidRequest
from claudekit.settings import get_settings
from claudekit.tasks.models import CostOut


class FeatureUsageOut(CostOut):
    without_caching_usd: float
    without_routing_usd: float


class PlanLimitsOut(BaseModel):
    requests_per_minute: int
    daily_budget_usd: float


class RemainingOut(BaseModel):
    requests_this_minute: int
    budget_usd: float


class UsageReportOut(FeatureUsageOut):
    """GET /usage: one caller's day, what caching and routing saved, the plan and what remains today."""

    date: str
    features: dict[str, FeatureUsageOut]
    plan: str
    plan_overridden: bool
    limits: PlanLimitsOut
    remaining: RemainingOut


class TopUserOut(BaseModel):
    user: str
    cost_usd: float


class OperatorReportOut(CostOut):
    """GET /admin/usage: everyone's day, per feature and per model, and the top users (hashed)."""

    date: str
    features: dict[str, CostOut]
    models: dict[str, CostOut]
    users: int
    top_users: list[TopUserOut]


def report(user_id: str, day: date | None = None) -> UsageReportOut:
    """One caller's usage on `day` (today by default), with its plan and what remains today."""
    return UsageReportOut.model_validate(get_client().ledger.report(user_id, day=kept_day(day)))


def operator_report(day: date | None = None) -> OperatorReportOut:
    """Everyone's usage on `day` (today by default). Who may see it is the adapter's check."""
    return OperatorReportOut.model_validate(
        get_client().ledger.operator_report(kept_day(day) or datetime.now(UTC).date())
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
