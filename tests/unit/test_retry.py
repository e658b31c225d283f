"""The retry policy's decisions, read from the outside: what is retried, how long it waits."""

from __future__ import annotations

import email.utils
import time

import anthropic
import httpx2
import pytest

from claudekit import errors
from claudekit.deadline import Deadline
from claudekit.retry import backoff, call_with_retry, classify, parse_retry_after


def status_error(status: int, kind: str, message: str = "x", headers: dict[str, str] | None = None) -> Exception:
    request = httpx2.Request("POST", "http://sim/v1/messages")
    response = httpx2.Response(status, headers=headers or {}, request=request)
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return anthropic.APIStatusError(message, response=response, body=body)


@pytest.mark.parametrize(
    ("status", "kind", "expected", "retryable"),
    [
        (400, "invalid_request_error", errors.UpstreamRejected, False),
        (401, "authentication_error", errors.UpstreamAuth, False),
        (403, "permission_error", errors.UpstreamAuth, False),
        (404, "not_found_error", errors.UpstreamRejected, False),
        (408, "timeout_error", errors.UpstreamTimeout, True),
        (409, "conflict", errors.UpstreamServerError, True),
        (413, "request_too_large", errors.InputTooLarge, False),
        (429, "rate_limit_error", errors.UpstreamUnavailable, True),
        (500, "api_error", errors.UpstreamServerError, True),
        (503, "api_error", errors.UpstreamUnavailable, True),
        (504, "timeout_error", errors.UpstreamTimeout, True),
        (529, "overloaded_error", errors.UpstreamUnavailable, True),
        (200, "overloaded_error", errors.UpstreamUnavailable, True),  # event: error mid-stream
        (200, "api_error", errors.UpstreamServerError, True),
    ],
)
def test_classify_status_errors(status: int, kind: str, expected: type, retryable: bool) -> None:
    mapped = classify(status_error(status, kind))
    assert type(mapped) is expected
    assert mapped.retryable is retryable


def test_spend_limit_429_is_final() -> None:
    mapped = classify(status_error(429, "rate_limit_error", "Your workspace has reached its spend limit"))
    assert isinstance(mapped, errors.SpendLimitReached)
    assert not mapped.retryable


def test_transport_errors() -> None:
    request = httpx2.Request("POST", "http://sim/v1/messages")
    assert isinstance(classify(anthropic.APITimeoutError(request=request)), errors.UpstreamTimeout)
    assert isinstance(classify(anthropic.APIConnectionError(request=request)), errors.UpstreamUnavailable)
    assert isinstance(classify(httpx2.RemoteProtocolError("cut")), errors.UpstreamServerError)


def test_bugs_are_not_swallowed() -> None:
    with pytest.raises(KeyError):
        classify(KeyError("a bug"))


def test_retry_after_headers() -> None:
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < (parse_retry_after({"retry-after": future}) or 0) <= 30


def test_backoff_is_full_jitter_within_the_cap() -> None:
    samples = [backoff(attempt, 0.5, 4.0) for attempt in range(1, 8) for _ in range(50)]
    assert min(samples) >= 0
    assert max(samples) <= 4.0
    assert max(backoff(1, 0.5, 4.0) for _ in range(50)) <= 0.5


def test_stops_after_max_attempts_and_reraises_ours() -> None:
    calls: list[float] = []

    def failing(timeout: float) -> None:
        calls.append(timeout)
        raise status_error(500, "api_error")

    with pytest.raises(errors.UpstreamServerError):
        call_with_retry(failing, deadline=Deadline.after(10), max_attempts=3, base_delay=0, max_delay=0)
    assert len(calls) == 3


def test_attempt_timeout_is_bounded_by_the_deadline() -> None:
    seen: list[float] = []
    call_with_retry(seen.append, deadline=Deadline.after(2), max_attempts=1, base_delay=0, max_delay=0)
    assert 1.5 < seen[0] <= 2


def test_never_sleeps_past_the_deadline() -> None:
    calls = 0

    def overloaded(timeout: float) -> None:
        nonlocal calls
        calls += 1
        raise status_error(529, "overloaded_error", headers={"retry-after": "20"})

    started = time.monotonic()
    with pytest.raises(errors.UpstreamUnavailable) as caught:
        call_with_retry(overloaded, deadline=Deadline.after(5), max_attempts=5, base_delay=0, max_delay=0)
    assert calls == 1
    assert caught.value.retry_after == 20
    assert time.monotonic() - started < 4  # sleeping the 20 s would have run past the 5 s deadline


def test_long_waits_are_handed_back_when_capped() -> None:
    calls = 0

    def limited(timeout: float) -> None:
        nonlocal calls
        calls += 1
        raise status_error(429, "rate_limit_error", headers={"retry-after": "5"})

    with pytest.raises(errors.UpstreamUnavailable) as caught:
        call_with_retry(limited, deadline=Deadline.after(60), max_attempts=3, base_delay=0, max_delay=0, max_wait=2)
    assert calls == 1
    assert caught.value.retry_after == 5
