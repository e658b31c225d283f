"""One typed settings model, parsed once per container from the environment.

Bad configuration fails at init with a message that names the variable, so a
misconfigured deploy breaks on its first cold start rather than on some request.

A plain pydantic model reads the environment itself (what pydantic-settings did for us, minus its
10 ms of imports at every cold start): each field from the variable of its name in any case, dict
fields as JSON, and arguments passed to `Settings(...)` over the environment.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any, Literal, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from claudekit.errors import ConfigurationError

Tier = Literal["fast", "balanced", "deep"]

DEFAULT_TASK_TIERS: dict[str, Tier] = {
    "classify": "fast",
    "extract": "fast",
    "summarize": "fast",
    "ideas": "balanced",
    "generate": "balanced",
    "analyze": "deep",
    "reason": "deep",
}


class PlanLimits(BaseModel):
    """One plan's limits (PLANS maps a Cognito group name to these)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: int = Field(ge=0)
    daily_budget_usd: float = Field(ge=0)


class Settings(BaseModel):
    """Everything configurable, with the environment variable names the template sets."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    # Powertools reads its own variables; we keep the service name for logs and metrics.
    powertools_service_name: str = "claude-kit"
    powertools_metrics_namespace: str = "ClaudeKit"

    # Upstream
    claude_secret_id: str = Field(min_length=1, description="Secrets Manager id or ARN of the API key")
    secret_max_age_seconds: int = Field(300, ge=0, le=86_400)
    anthropic_base_url: str | None = None

    # Models: task -> tier -> model id. Ids are configuration, never literals in code.
    model_fast: str = "claude-haiku-5-5"
    model_balanced: str = "claude-sonnet-5-5"
    model_deep: str = "claude-opus-5-5"
    # Used when the routed model stays overloaded after retries; empty disables fallback.
    model_fallback: str = "claude-haiku-5-5"
    task_tiers: dict[str, Tier] = Field(default_factory=lambda: dict(DEFAULT_TASK_TIERS))

    # Request caps, enforced before any network call.
    max_tokens_ceiling: int = Field(4096, ge=1, le=128_000)
    max_input_chars: int = Field(100_000, ge=1)
    cache_ttl: Literal["5m", "1h"] = "5m"

    # Retry and deadline
    retry_max_attempts: int = Field(3, ge=1, le=10)
    retry_base_delay_seconds: float = Field(0.5, ge=0)
    retry_max_delay_seconds: float = Field(8.0, ge=0)
    deadline_margin_seconds: float = Field(1.0, ge=0)
    # The caller's budget for one request, counted from when API Gateway received it: the
    # template sets it from the same parameter as the function's Timeout (RequestBudgetSeconds, at most
    # API Gateway's 29 s for buffered routes; the stream function's own timeout for /stream).
    request_budget_seconds: float = Field(29.0, gt=0, le=900)
    # The same for POST /stream: its integration timeout (TimeoutInMillis) and function Timeout.
    stream_budget_seconds: float = Field(120.0, gt=0, le=900)
    # Upper bound on one upstream attempt when the Lambda deadline is further away.
    request_timeout_seconds: float = Field(60.0, gt=0)

    # Circuit breaker (Powertools, state in DynamoDB)
    breaker_failure_threshold: int = Field(5, ge=1)
    breaker_recovery_seconds: int = Field(30, ge=1)
    # Window in which health failures across all instances add up toward the threshold.
    breaker_window_seconds: int = Field(60, ge=1)
    # Longest pause an upstream 429's retry-after may impose on a model, for every instance.
    cooldown_max_seconds: float = Field(600.0, gt=0)

    # Per-user limits: these two are the plan of users in no plan group ("default");
    # PLANS='{"free": {"requests_per_minute": 5, "daily_budget_usd": 0.1}, ...}' adds plans by group.
    rate_limit_per_minute: int = Field(20, ge=0)
    daily_budget_usd: float = Field(1.0, ge=0)
    plans: dict[str, PlanLimits] = Field(default_factory=dict)
    # Members of this Cognito group may read GET /admin/usage.
    admin_group: str = Field("admins", min_length=1)
    # Days a day's usage stays readable (GET /usage?date=, GET /admin/usage) after it ends.
    usage_retention_days: int = Field(7, ge=1, le=400)
    # Jobs one user may have queued or running at once (the queue is shared: nobody fills it alone).
    max_jobs_in_flight: int = Field(1000, ge=1)
    # The browser origin allowed to call the API (CorsAllowOrigin; by default the local playground);
    # empty: no CORS headers.
    cors_allow_origin: str = "http://127.0.0.1:3000"

    # Resources
    table_name: str = Field(min_length=1, description="DynamoDB table for usage, jobs, breaker, idempotency")
    jobs_queue_url: str | None = None

    # The worker (the SQS consumer of JobsQueue).
    # Records of one SQS batch processed concurrently inside one invocation: all of a full batch (10).
    worker_record_concurrency: int = Field(10, ge=1, le=32)
    # A queued job waits out upstream outages this long before it is failed with the reason.
    job_max_age_seconds: int = Field(86_400, ge=60, le=14 * 86_400)
    # Delay after a transient failure: the larger of its retry-after and base * 2**(n-1) for the
    # n-th re-schedule, at most the max (SQS DelaySeconds allows 900).
    job_retry_base_seconds: float = Field(10.0, ge=0, le=900)
    job_retry_max_seconds: float = Field(900.0, ge=0, le=900)
    # In-progress duplicates are looked at again after this long.
    job_in_progress_retry_seconds: float = Field(30.0, ge=0, le=900)
    # A record does not start with less invocation time left than this; it goes back untouched.
    job_min_start_seconds: float = Field(20.0, ge=0)
    # Re-sends of a message that could not start (rate-limit window full, last receive unstarted).
    job_max_deferrals: int = Field(60, ge=0)
    # Job records (and their results) and idempotency records live this long.
    job_ttl_seconds: int = Field(7 * 86_400, ge=60)
    # Delay between polls of a Message Batches job list (SQS DelaySeconds: 0-900), and when to stop
    # reading a batch that keeps failing (a batch ends within 24 h; its results are kept 29 days).
    batch_poll_seconds: int = Field(60, ge=0, le=900)
    batch_max_age_seconds: int = Field(3 * 86_400, ge=3600)

    # Conversations: history kept this long after the last turn (DynamoDB TTL), and at most this many
    # characters sent per turn (system, summary, history and prompt); past it the oldest turns are
    # summarised by the fast model or dropped. The cap keeps a stored conversation under DynamoDB's
    # 400 KB item limit.
    conversation_ttl_seconds: int = Field(7 * 86_400, ge=60, le=365 * 86_400)
    conversation_max_chars: int = Field(40_000, ge=1_000, le=60_000)
    conversation_overflow: Literal["summarize", "drop"] = "summarize"

    # Price overrides: JSON object of whole rows {model_id: {min_cache_tokens, batch_factor, periods}},
    # the shape of claudekit/claude/prices.json (docs/operations.md); validated when the client is built.
    pricing_json: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_environment(cls, given: Any) -> Any:
        """Every field not passed in comes from its variable (TABLE_NAME -> table_name), if set."""
        if not isinstance(given, dict):
            return given
        variables = {name.lower(): value for name, value in os.environ.items()}
        found = {name: _decoded(name, variables[name]) for name in cls.model_fields if name in variables}
        return {**found, **given}

    @field_validator("task_tiers", mode="before")
    @classmethod
    def _tiers_over_defaults(cls, value: object) -> object:
        """TASK_TIERS='{"summarize": "deep"}' changes one task and keeps the others."""
        if isinstance(value, str):
            value = json.loads(value)
        if isinstance(value, dict):
            return {**DEFAULT_TASK_TIERS, **value}
        return value

    def model_for_tier(self, tier: Tier) -> str:
        return {"fast": self.model_fast, "balanced": self.model_balanced, "deep": self.model_deep}[tier]


def _decoded(name: str, value: str) -> object:
    """A JSON variable decoded; one that is not JSON stays a string, which its field then refuses by name."""
    if name not in _JSON_FIELDS:
        return value
    try:
        decoded: object = json.loads(value)
    except json.JSONDecodeError:
        return value
    return decoded


# Fields whose variable holds JSON (the dicts); the others are strings pydantic converts itself.
_JSON_FIELDS = frozenset(name for name, field in Settings.model_fields.items() if get_origin(field.annotation) is dict)


def load_settings() -> Settings:
    """Parse the environment; raise ConfigurationError naming each bad variable."""
    try:
        return Settings()  # type: ignore[call-arg]
    except ValidationError as exc:
        names = ", ".join(f"{str(err['loc'][0]).upper()} ({err['msg']})" for err in exc.errors() if err.get("loc"))
        raise ConfigurationError(f"invalid configuration: {names}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The container's settings, parsed on first use and then reused."""
    return load_settings()
