"""The retry policy's decisions, read from the outside: what is retried, how long it waits."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable

import anthropic
import httpx2
import pytest
from anthropic._error_classes import make_status_error

from claudekit import errors
from claudekit.claude import retry
from claudekit.claude.retry import backoff, call_with_retry, parse_retry_after, to_claude_error
from claudekit.deadline import Deadline


def status_error(
    status: int,
    kind: str,
    message: str = "x",
    headers: dict[str, str] | None = None,
    error_code: str | None = None,
) -> Exception:
    """The typed error the SDK itself raises for this response (RateLimitError for a 429, ...)."""
    request = httpx2.Request("POST", "http://sim/v1/messages")
    response = httpx2.Response(status, headers=headers or {}, request=request)
    error: dict[str, object] = {"type": kind, "message": message}
    if error_code:
        error["details"] = {"error_code": error_code}
    body = {"type": "error", "error": error}
    if status < 400:  # an `event: error` inside a stream: the SDK raises the base class
        return anthropic.APIStatusError(message, response=response, body=body)
    return make_status_error(message, body=body, response=response)


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
        (429, "rate_limit_error", errors.UpstreamRateLimited, True),
        (402, "billing_error", errors.SpendLimitReached, False),
        (500, "api_error", errors.UpstreamServerError, True),
        (503, "api_error", errors.UpstreamOverloaded, True),
        (504, "timeout_error", errors.UpstreamTimeout, True),
        (529, "overloaded_error", errors.UpstreamOverloaded, True),
        (200, "overloaded_error", errors.UpstreamOverloaded, True),  # event: error mid-stream
        (200, "rate_limit_error", errors.UpstreamRateLimited, True),
        (200, "api_error", errors.UpstreamServerError, True),
    ],
)
def test_status_errors_map_to_ours(status: int, kind: str, expected: type, retryable: bool) -> None:
    mapped = to_claude_error(status_error(status, kind))
    assert type(mapped) is expected
    assert mapped.retryable is retryable


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (429, "rate_limit_error", "enforced_spend_limit_reached"),
        (429, "rate_limit_error", "contract_spend_limit_reached"),
        (402, "billing_error", None),
        (400, "billing_error", None),
    ],
)
def test_spend_limits_are_final_whatever_their_status(status: int, kind: str, code: str | None) -> None:
    mapped = to_claude_error(status_error(status, kind, error_code=code, headers={"x-should-retry": "true"}))
    assert isinstance(mapped, errors.SpendLimitReached)
    assert not mapped.retryable and mapped.retry_after is not None
    assert not isinstance(mapped, errors.BREAKER_FAILURES)


def test_x_should_retry_header_wins_over_the_status() -> None:
    assert not to_claude_error(status_error(529, "overloaded_error", headers={"x-should-retry": "false"})).retryable
    assert to_claude_error(status_error(400, "invalid_request_error", headers={"x-should-retry": "true"})).retryable


def test_what_the_breaker_counts() -> None:
    counted = [(500, "api_error"), (529, "overloaded_error"), (503, "api_error"), (504, "timeout_error")]
    for status, kind in counted:
        assert isinstance(to_claude_error(status_error(status, kind)), errors.BREAKER_FAILURES), status
    for status, kind in [(429, "rate_limit_error"), (400, "invalid_request_error"), (404, "not_found_error")]:
        assert not isinstance(to_claude_error(status_error(status, kind)), errors.BREAKER_FAILURES), status
    request = httpx2.Request("POST", "http://sim/v1/messages")
    assert isinstance(to_claude_error(anthropic.APIConnectionError(request=request)), errors.BREAKER_FAILURES)


def test_unencodable_text_is_input_not_upstream() -> None:
    try:
        "\udfff".encode()
    except UnicodeEncodeError as exc:
        mapped = to_claude_error(exc)
    assert isinstance(mapped, errors.InvalidRequest) and not mapped.retryable
    assert not isinstance(mapped, errors.BREAKER_FAILURES)


def test_a_final_503_without_a_hint_says_when_to_come_back() -> None:
    def overloaded(timeout: float) -> None:
        raise status_error(529, "overloaded_error")

    with pytest.raises(errors.UpstreamUnavailable) as caught:
        call_with_retry(overloaded, deadline=Deadline.after(10), max_attempts=2, base_delay=0.01, max_delay=0.05)
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1

    with pytest.raises(errors.UpstreamUnavailable) as hinted:
        call_with_retry(
            overloaded, deadline=Deadline.after(10), max_attempts=2, base_delay=0, max_delay=0, hint=lambda: 7.0
        )
    assert hinted.value.retry_after == 7.0


def test_an_attempt_that_may_be_retried_leaves_room_for_the_retry() -> None:
    seen: list[float] = []

    def hangs(timeout: float) -> None:
        seen.append(timeout)
        raise anthropic.APITimeoutError(request=httpx2.Request("POST", "http://sim/v1/messages"))

    with pytest.raises(errors.UpstreamTimeout):
        call_with_retry(hangs, deadline=Deadline.after(9), max_attempts=2, base_delay=0, max_delay=0)
    assert len(seen) == 2
    assert seen[0] <= 9 * 2 / 3  # the first may not take it all: a retry could follow
    assert seen[1] > seen[0]  # the last one may use whatever is left


def test_transport_errors() -> None:
    request = httpx2.Request("POST", "http://sim/v1/messages")
    assert isinstance(to_claude_error(anthropic.APITimeoutError(request=request)), errors.UpstreamTimeout)
    assert isinstance(to_claude_error(anthropic.APIConnectionError(request=request)), errors.UpstreamUnavailable)
    assert isinstance(to_claude_error(httpx2.RemoteProtocolError("cut")), errors.UpstreamServerError)


def test_bugs_are_not_swallowed() -> None:
    with pytest.raises(KeyError):
        to_claude_error(KeyError("a bug"))


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

    waits: list[float] = []
    with pytest.raises(errors.UpstreamUnavailable) as caught:
        call_with_retry(
            overloaded, deadline=Deadline.after(5), max_attempts=5, base_delay=0, max_delay=0, sleep=waits.append
        )
    assert calls == 1
    assert caught.value.retry_after == 20
    assert waits == []  # sleeping the 20 s would have run past the 5 s deadline


def test_long_waits_are_handed_back_when_capped() -> None:
    calls = 0

    def limited(timeout: float) -> None:
        nonlocal calls
        calls += 1
        raise status_error(429, "rate_limit_error", headers={"retry-after": "5"})

    waits: list[float] = []
    with pytest.raises(errors.UpstreamUnavailable) as caught:
        call_with_retry(
            limited,
            deadline=Deadline.after(60),
            max_attempts=3,
            base_delay=0,
            max_delay=0,
            max_wait=2,
            sleep=waits.append,
        )
    assert calls == 1 and waits == []
    assert caught.value.retry_after == 5


def failing_then_ok(*failures: Exception) -> Callable[[float], str]:
    pending = list(failures)

    def fn(timeout: float) -> str:
        if pending:
            raise pending.pop(0)
        return "ok"

    return fn


def test_the_wait_is_what_the_server_asked_for() -> None:
    waits: list[float] = []
    fn = failing_then_ok(
        status_error(429, "rate_limit_error", headers={"retry-after-ms": "250", "retry-after": "9"}),
        status_error(529, "overloaded_error", headers={"retry-after": "2"}),
    )
    assert call_with_retry(
        fn, deadline=Deadline.after(30), max_attempts=3, base_delay=1, max_delay=8, sleep=waits.append
    )
    assert waits == [0.25, 2.0]  # retry-after-ms wins over retry-after; nothing else is slept


def test_without_a_hint_the_waits_double_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry.random, "uniform", lambda low, high: high)  # the top of each jitter range
    waits: list[float] = []
    fn = failing_then_ok(*[status_error(500, "api_error")] * 5)
    call_with_retry(fn, deadline=Deadline.after(60), max_attempts=6, base_delay=0.5, max_delay=3, sleep=waits.append)
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_each_retry_is_reported_with_its_wait() -> None:
    seen: list[tuple[str, float]] = []
    fn = failing_then_ok(status_error(429, "rate_limit_error", headers={"retry-after": "1.5"}))
    call_with_retry(
        fn,
        deadline=Deadline.after(30),
        max_attempts=2,
        base_delay=0,
        max_delay=0,
        on_retry=lambda exc, wait: seen.append((exc.code, wait)),
        sleep=lambda seconds: None,
    )
    assert seen == [("UPSTREAM_UNAVAILABLE", 1.5)]
