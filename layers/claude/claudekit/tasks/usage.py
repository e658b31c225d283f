"""GET /usage and GET /admin/usage: what a caller, or everyone, spent on a day."""

from __future__ import annotations

from pydantic import BaseModel

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
