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
    SpendLimitReached,
    UpstreamAuth,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

T = TypeVar("T")

# The shortest time worth starting an attempt with; less and it would surely time out.
MIN_ATTEMPT_SECONDS = 0.5


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


def _is_spend_limit(message: str | None) -> bool:
    text = (message or "").lower()
    return "spend limit" in text or "credit balance" in text or "billing" in text


def classify(exc: BaseException) -> ClaudeError:
    """Map anything the SDK raises to our hierarchy. Read top to bottom: first match wins."""
    if isinstance(exc, ClaudeError):
        return exc
    if isinstance(exc, anthropic.APITimeoutError):
        return UpstreamTimeout()
    if isinstance(exc, anthropic.APIConnectionError):
        return UpstreamUnavailable("could not reach the model service")
    if isinstance(exc, anthropic.APIStatusError):
        status, kind = exc.status_code, exc.type
        retry_after = parse_retry_after(exc.response.headers)
        if status < 400:
            # An `event: error` inside a stream arrives with the stream's 200 status.
            if kind in ("overloaded_error", "rate_limit_error"):
                return UpstreamUnavailable(retry_after=retry_after)
            return UpstreamServerError()
        if status in (401, 403):
            return UpstreamAuth()
        if status == 413:
            return InputTooLarge("input is too large for the model")
        if status == 429:
            if _is_spend_limit(exc.api_message):
                return SpendLimitReached()
            return UpstreamUnavailable(retry_after=retry_after)
        if status in (408, 504):
            return UpstreamTimeout(retry_after=retry_after)
        if status in (503, 529):
            return UpstreamUnavailable(retry_after=retry_after)
        if status == 409 or status >= 500:
            return UpstreamServerError(retry_after=retry_after)
        return UpstreamRejected()
    if isinstance(exc, httpx2.TimeoutException):
        return UpstreamTimeout()
    if isinstance(exc, httpx2.TransportError):
        # Raised by a stream cut mid-body: the SDK does not wrap errors while iterating.
        return UpstreamServerError("the connection to the model service broke")
    if isinstance(exc, anthropic.APIResponseValidationError | json.JSONDecodeError):
        return UpstreamServerError("the model service returned a malformed response")
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
) -> T:
    """Run `fn(timeout)` until it succeeds, a failure is final, or time is up.

    `fn` gets the timeout its attempt may use (bounded by the deadline) and raises SDK
    exceptions or ClaudeErrors; what escapes is always a ClaudeError. A wait longer than
    `max_wait` is not slept here: the error goes back to the caller, whose queue can wait for free.
    """

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
        remaining = deadline.remaining()
        if remaining < MIN_ATTEMPT_SECONDS:
            raise UpstreamTimeout("not enough time left to call the model service")
        try:
            return fn(min(max_attempt_seconds, remaining))
        except Exception as exc:  # every SDK failure becomes one of ours, or re-raises a bug
            raise classify(exc) from exc

    retrying = Retrying(
        retry=retry_if_exception(lambda exc: isinstance(exc, ClaudeError) and exc.retryable),
        wait=wait,
        stop=stop,
        before_sleep=before_sleep,
        reraise=True,
        sleep=time.sleep,
    )
    return retrying(attempt)
