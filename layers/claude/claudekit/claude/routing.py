"""Which model serves which task: task -> tier -> model id, all from settings."""

from __future__ import annotations

from claudekit.errors import InvalidRequest
from claudekit.settings import Settings

# Output budget per task when the caller sets none; always capped by MAX_TOKENS_CEILING.
DEFAULT_MAX_TOKENS = {
    "classify": 64,
    "extract": 1024,
    "summarize": 512,
    "ideas": 1500,
    "generate": 1024,
    "analyze": 2048,
    "reason": 4096,
}


def model_for(task: str, settings: Settings) -> str:
    tier = settings.task_tiers.get(task)
    if tier is None:
        raise InvalidRequest(f"unknown task {task!r}")
    return settings.model_for_tier(tier)


def max_tokens_for(task: str, requested: int | None, settings: Settings) -> int:
    if requested is not None and requested > settings.max_tokens_ceiling:
        raise InvalidRequest(f"max_tokens must be at most {settings.max_tokens_ceiling}")
    return min(requested or DEFAULT_MAX_TOKENS.get(task, 1024), settings.max_tokens_ceiling)
