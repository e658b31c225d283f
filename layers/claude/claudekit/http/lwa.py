"""Invocations through the Lambda Web Adapter (LWA): who is calling and until when, from its headers.

LWA turns each Lambda invocation into an HTTP request to the streaming function's ASGI app and
adds two headers: `x-amzn-request-context` (API Gateway's request context; LWA replaces any header
of that name the caller sent) and `x-amzn-lambda-context` (the Lambda context, with its deadline).
It also polls a readiness path during the init phase, which `ready` answers.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from claudekit.claude.client import get_client
from claudekit.claude.secret import get_api_key
from claudekit.deadline import Deadline
from claudekit.errors import ConfigurationError
from claudekit.store import ledger
from claudekit.telemetry import logger

REQUEST_CONTEXT_HEADER = "x-amzn-request-context"
LAMBDA_CONTEXT_HEADER = "x-amzn-lambda-context"
# Without a forwarded Lambda context (the local stack), assume the template's Timeout for StreamFunction.
DEFAULT_DEADLINE_SECONDS = 120.0


@dataclass(frozen=True)
class Invocation:
    request_id: str
    user_id: str | None
    deadline: Deadline
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Remaining:
    """Time left, as Deadline.for_request and Idempotency read it from a Lambda context."""

    seconds: float

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


def invocation(headers: Mapping[str, str], margin: float, budget: float | None = None) -> Invocation:
    """Read who is calling and how long we may take from the headers LWA adds.

    Identity comes ONLY from the API Gateway request context (`authorizer.claims.sub`), never
    from the body or an `X-User-Id` header.
    """
    context = _json_header(headers, REQUEST_CONTEXT_HEADER)
    authorizer = context.get("authorizer")
    claims = authorizer.get("claims") if isinstance(authorizer, dict) else None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    request_id = context.get("requestId")
    lambda_context = _json_header(headers, LAMBDA_CONTEXT_HEADER)
    deadline_ms = lambda_context.get("deadline", lambda_context.get("deadline_ms"))
    if isinstance(deadline_ms, int | float) and not isinstance(deadline_ms, bool) and deadline_ms > 0:
        remaining = deadline_ms / 1000 - time.time()
    else:
        remaining = DEFAULT_DEADLINE_SECONDS
    # API Gateway counts the stream's integration timeout from the request, before a cold start.
    epoch = context.get("requestTimeEpoch")
    request_time_ms = float(epoch) if isinstance(epoch, int | float) and not isinstance(epoch, bool) else None
    return Invocation(
        request_id=str(request_id) if isinstance(request_id, str) and request_id else str(uuid.uuid4()),
        user_id=str(sub) if isinstance(sub, str) and sub else None,
        groups=tuple(ledger.parse_groups(claims.get("cognito:groups"))) if isinstance(claims, dict) else (),
        deadline=Deadline.for_request(
            Remaining(remaining), request_time_ms=request_time_ms, budget=budget or remaining, margin=margin
        ),
    )


def request_id(headers: Mapping[str, str]) -> str:
    """The request id alone (API Gateway's, or a fresh one), for answers that need nothing else."""
    return invocation(headers, 0).request_id


def _json_header(headers: Mapping[str, str], name: str) -> dict[str, Any]:
    raw = headers.get(name)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


_warm = False


def warm_up() -> None:
    """Build the client and fetch the API key once, during LWA's readiness check (the init phase).

    A misconfiguration (settings) raises ConfigurationError, failing readiness loudly; a secret
    that cannot be fetched yet is only logged, so the first request retries rather than the
    environment never becoming ready.
    """
    global _warm
    if _warm:
        return
    client = get_client()
    try:
        get_api_key(client.settings.claude_secret_id, max_age=client.settings.secret_max_age_seconds)
    except ConfigurationError as exc:
        logger.warning("could not prefetch the API key", extra={"reason": exc.message})
    _warm = True
