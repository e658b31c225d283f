"""The headers every response carries, whichever function (REST or streaming) built it."""

from __future__ import annotations

from claudekit.errors import ClaudeError
from claudekit.settings import get_settings

# On every JSON response, errors included: bodies are per user and must never be sniffed or cached.
JSON_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}

# What a browser page may read of a response (CORS hides every other header from its script).
EXPOSED_HEADERS = (
    "X-Request-Id, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Idempotent-Replayed"
)


def cors_headers() -> dict[str, str]:
    """Access-Control-* for the configured origin (CORS_ALLOW_ORIGIN), none when it is empty.
    API Gateway answers the preflight; every actual response needs these too."""
    try:
        origin = get_settings().cors_allow_origin
    except ClaudeError:  # misconfigured: the response says so; headers cannot help
        return {}
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": EXPOSED_HEADERS} if origin else {}
