"""The Message Batches API (half price, answered within hours), seen from the client's side.

The caller (tasks/jobs) reserves, submits, polls and settles; these helpers build each request
exactly as a realtime call is built, run SDK batch operations under the retry policy, and price
and settle results at the batch rate.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any, TypeVar

from anthropic.resources.messages.batches import Batches

from claudekit.claude.client import ClaudeClient
from claudekit.claude.pricing import utc_date
from claudekit.claude.request import ClaudeRequest, ClaudeResult, malformed_is_upstream_error, result_of
from claudekit.claude.retry import call_with_retry
from claudekit.deadline import Deadline
from claudekit.errors import ClaudeError
from claudekit.store.ledger import Reservation

T = TypeVar("T")


def request_params(client: ClaudeClient, request: ClaudeRequest) -> tuple[dict[str, Any], Decimal]:
    """`params` for one Message Batches request, built exactly as `complete` builds a call
    (caps, routing, caching; the model included), and its worst-case cost at the batch rate."""
    call = client.prepare(request)
    return {"model": call.model, **call.params}, client.accounting.worst_case(call, batch=True)


def call(
    client: ClaudeClient, operation: Callable[[Batches, float], T], deadline: Deadline, *, retry: bool = True
) -> T:
    """Run `operation(sdk.messages.batches, timeout)`; what escapes is a ClaudeError.

    Reads are retried like a call (`retry`); creating a batch is not idempotent, so its caller
    passes retry=False rather than risk two batches. A rejected key is refreshed once.
    """
    s = client.settings

    def run() -> T:
        return call_with_retry(
            lambda timeout: operation(client.sdk.get().messages.batches, timeout),
            deadline=deadline,
            max_attempts=s.retry_max_attempts if retry else 1,
            base_delay=s.retry_base_delay_seconds,
            max_delay=s.retry_max_delay_seconds,
            max_attempt_seconds=s.request_timeout_seconds,
            sleep=client.fallback.sleep,
        )

    return client.sdk.refreshing_key(run)


def result(client: ClaudeClient, message: Any, on: str | None = None) -> ClaudeResult:
    """A succeeded batch request's Message as a ClaudeResult, its cost at the batch rate in
    force on `on` (the ISO date the batch was reserved; today if unknown). A result whose
    usage is malformed raises UpstreamMalformed."""
    with malformed_is_upstream_error():
        answer = result_of(message, str(message.model))
    answer.cost_usd = client.accounting.costs(answer, _day(on), batch=True).actual
    return answer


def settle(client: ClaudeClient, request: ClaudeRequest, reservation: Reservation, answer: ClaudeResult) -> None:
    """Charge one batch result: its cost at the batch rate replaces `reservation`, with the
    metrics and log line of a call (no Latency: a batch's hours would swamp the percentiles)."""
    client.accounting.settle(request, reservation, answer, latency=0.0, batch=True, day=_day(reservation.day))


def release(
    client: ClaudeClient, request: ClaudeRequest, reservation: Reservation, model: str, exc: ClaudeError
) -> None:
    """A batch request that cost nothing (errored, expired, canceled): give back its reservation."""
    client.accounting.release(request, reservation, model, exc, attempts=1)


def _day(iso: str | None) -> date:
    """An ISO date (a reservation's day), or today if it is missing or unreadable."""
    try:
        return date.fromisoformat(iso) if iso else utc_date()
    except ValueError:
        return utc_date()
