"""The one retry loop: which upstream failures are retried, how long to wait, when to stop.

The SDK's own retries are off (`max_retries=0`) so that every decision lives here:
exponential backoff with full jitter, `retry-after-ms` / `retry-after` honoured, and
never a sleep that would end past the Lambda deadline.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import anthropic
import httpx2
from tenacity import RetryCallState, Retrying, retry_if_exception

from claudekit.deadline import Deadline
from claudekit.errors import (
    ClaudeError,
    InputTooLarge,
    InvalidRequest,
    SpendLimitReached,
    UpstreamAuth,
    UpstreamMalformed,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnreachable,
)

T = TypeVar("T")

# The shortest time worth starting an attempt with; less and it would surely time out.
MIN_ATTEMPT_SECONDS = 0.5
# An attempt that may be followed by another uses at most this share of the time left, so one
# hung connection cannot eat the whole budget: the retry (or the fallback) still has a third.
ATTEMPT_SHARE = 2 / 3


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms` wins over `retry-after`."""
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:  # the HTTP-date form
        return max(0.0, email.utils.parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _is_spend_limit(exc: anthropic.APIStatusError) -> bool:
    """402 / `billing_error`, or a 429 (or 400) whose stable `error_code` names a spend limit
    (`enforced_spend_limit_reached`, `contract_spend_limit_reached`, ...) or unavailable billing."""
    if isinstance(exc, anthropic.PaymentRequiredError) or exc.type == "billing_error":
        return True
    code = exc.error_code or ""
    return code.endswith("spend_limit_reached") or code.endswith("billing_unavailable")


def _should_retry(headers: Mapping[str, str]) -> bool | None:
    """The API's `x-should-retry` header, which overrides what the status suggests."""
    value = (headers.get("x-should-retry") or "").lower()
    return {"true": True, "false": False}.get(value)


def _status_error(exc: anthropic.APIStatusError) -> ClaudeError:
    """An HTTP error response (or an `event: error` inside a 200 stream), by the SDK's classes."""
    retry_after = parse_retry_after(exc.response.headers)
    if _is_spend_limit(exc):
        return SpendLimitReached()
    if exc.status_code < 400:
        # An `event: error` inside a stream arrives with the stream's 200 status: map its type.
        kind = exc.type
        if kind == "rate_limit_error":
            return UpstreamRateLimited(retry_after=retry_after)
        if kind == "overloaded_error":
            return UpstreamOverloaded(retry_after=retry_after)
        if kind == "timeout_error":
            return UpstreamTimeout(retry_after=retry_after)
        return UpstreamServerError()
    if isinstance(exc, anthropic.AuthenticationError | anthropic.PermissionDeniedError):
        return UpstreamAuth()
    if isinstance(exc, anthropic.ContentTooLargeError):
        return InputTooLarge("input is too large for the model")
    if isinstance(exc, anthropic.RateLimitError):
        return UpstreamRateLimited(retry_after=retry_after)
    if isinstance(exc, anthropic.RequestTimeoutError | anthropic.GatewayTimeoutError):
        return UpstreamTimeout(retry_after=retry_after)
    if isinstance(exc, anthropic.OverloadedError | anthropic.ServiceUnavailableError):
        return UpstreamOverloaded(retry_after=retry_after)
    if isinstance(exc, anthropic.ConflictError | anthropic.InternalServerError) or exc.status_code >= 500:
        return UpstreamServerError(retry_after=retry_after)
    return UpstreamRejected()


def to_claude_error(exc: BaseException) -> ClaudeError:
    """Map anything an upstream call raised to our hierarchy. Read top to bottom: first match wins.

    Only what the model service (or the network to it) did becomes an upstream error. A failure
    on our side before a byte was sent (text that cannot be encoded) is the caller's input; any
    other exception is a bug and is re-raised as it is.
    """
    if isinstance(exc, ClaudeError):
        return exc
    if isinstance(exc, UnicodeEncodeError):
        # Raised while the SDK encodes the request body (a lone surrogate): nothing was sent.
        return InvalidRequest("text contains characters that cannot be encoded (e.g. lone surrogates)")
    if isinstance(exc, anthropic.APITimeoutError):
        return UpstreamTimeout()
    if isinstance(exc, anthropic.APIConnectionError):
        return UpstreamUnreachable()
    if isinstance(exc, anthropic.APIStatusError):
        error = _status_error(exc)
        hint = _should_retry(exc.response.headers)
        if hint is not None and error.retryable != hint and not isinstance(error, SpendLimitReached):
            error.retryable = hint
        return error
    if isinstance(exc, httpx2.TimeoutException):
        return UpstreamTimeout()
    if isinstance(exc, httpx2.TransportError):
        # Raised by a stream cut mid-body: the SDK does not wrap errors while iterating.
        return UpstreamServerError("the connection to the model service broke")
    if isinstance(exc, anthropic.APIResponseValidationError | json.JSONDecodeError):
        return UpstreamMalformed()
    if isinstance(exc, anthropic.APIError):
        return UpstreamServerError()
    raise exc


def backoff(attempt: int, base: float, cap: float) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def call_with_retry(
    fn: Callable[[float], T],
    *,
    deadline: Deadline,
    max_attempts: int,
    base_delay: float,
    max_delay: float,
    on_retry: Callable[[ClaudeError, float], None] | None = None,
    max_attempt_seconds: float = 60.0,
    max_wait: float | None = None,
    hint: Callable[[], float | None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `fn(timeout)` until it succeeds, a failure is final, or time is up.

    `fn` gets the timeout its attempt may use: bounded by the deadline, and while another attempt
    could follow, by ATTEMPT_SHARE of the time left. It raises SDK exceptions or ClaudeErrors;
    what escapes is always a ClaudeError, and a final 429/503 without a hint carries the backoff
    the loop would have used as `retry_after` (unless `hint()`, e.g. the circuit's time to half-open,
    has one first). A wait longer than `max_wait` is not slept here:
    the error goes back to the caller, whose queue can wait for free. Every wait goes through
    `sleep`, so a test can record the exact waits instead of timing them.
    """
    made = 0

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hint = exc.retry_after if isinstance(exc, ClaudeError) else None
        return hint if hint is not None else backoff(state.attempt_number, base_delay, max_delay)

    def stop(state: RetryCallState) -> bool:
        if state.attempt_number >= max_attempts:
            return True
        if max_wait is not None and (state.upcoming_sleep or 0.0) > max_wait:
            return True
        # Give up now rather than sleep into the deadline: the caller gets the real reason.
        return (state.upcoming_sleep or 0.0) + MIN_ATTEMPT_SECONDS > deadline.remaining()

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if on_retry is not None and isinstance(exc, ClaudeError):
            on_retry(exc, state.upcoming_sleep or 0.0)

    def attempt() -> T:
        nonlocal made
        made += 1
        remaining = deadline.remaining()
        if remaining < MIN_ATTEMPT_SECONDS:
            raise UpstreamTimeout("not enough time left to call the model service")
        budget = remaining if made >= max_attempts else max(MIN_ATTEMPT_SECONDS, remaining * ATTEMPT_SHARE)
        try:
            return fn(min(max_attempt_seconds, budget))
        except Exception as exc:  # every SDK failure becomes one of ours, or re-raises a bug
            raise to_claude_error(exc) from exc

    retrying = Retrying(
        retry=retry_if_exception(lambda exc: isinstance(exc, ClaudeError) and exc.retryable),
        wait=wait,
        stop=stop,
        before_sleep=before_sleep,
        reraise=True,
        sleep=sleep,
    )
    try:
        return retrying(attempt)
    except ClaudeError as exc:
        if exc.retry_after is None and exc.status in (429, 503):
            # The caller's Retry-After: the hint, else what the loop would have waited next.
            later = hint() if hint is not None else None
            exc.retry_after = later if later is not None else max(1.0, min(max_delay, base_delay * 2**made))
        raise
