"""AWS calls per request by route, counted with botocore's events (benchmarks.awscalls) against moto.

Counts, never timings. Each route's handler is invoked in-process (the stream app under uvicorn on
loopback), warm: one request first builds the clients and fetches the key. Issue 15's target is two
DynamoDB round trips per request (admission, settlement) and no breaker state read while the
circuit is closed. `TODAY` is what the code makes now: an upper bound that catches a regression.
A conversation's turn also reads the conversation: its history is the feature's own data, needed
before Claude is called, and no DynamoDB call both reads one item and updates another, so its
target is three (its write rides in the settlement).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from benchmarks.awscalls import AwsCalls, Call, busy_seconds, item_kind
from benchmarks.routes import DYNAMODB_TARGET, DYNAMODB_TARGETS, ROUTES, prepare, stream_app
from claudekit.claude import circuit
from claudekit.store import cooldown
from local.simulator import Simulator

TARGET_DYNAMODB = DYNAMODB_TARGET  # issue 15: admission + settlement, and nothing else
# DynamoDB calls per warm request today, apart from the clock-driven cache refreshes (breaker
# state and cooldown, one read per instance every few seconds): the admission (rate-limit window
# and budget reservation in one update) and the settlement transaction; conversations also read
# the conversation (the turn rides in the settlement); a job submission admits the request, then
# counts its jobs in flight and writes their records in one transaction.
TODAY = {
    "generate": 2,
    "classify": 2,
    "ideas": 2,
    "stream": 2,
    "conversations": 3,
    "jobs submit": 2,
    "usage": 2,
}
WARM_REQUESTS = 3


@pytest.fixture
def stream_url(settings_env: dict[str, str]) -> Iterator[str]:
    with stream_app() as url:
        yield url


def calls_per_request(route: str, url: str) -> tuple[list[Call], list[list[Call]]]:
    """The first request's calls, then each warm request's, for a new user."""
    user = f"calls-{uuid.uuid4().hex[:8]}"
    seen: list[list[Call]] = []
    with AwsCalls() as counter:
        for _ in range(1 + WARM_REQUESTS):
            send = prepare(route, user, url)
            counter.take()
            outcome = send()
            assert outcome.status < 300, outcome
            seen.append(counter.take())
    return seen[0], seen[1:]


def hot_path(calls: list[Call]) -> list[Call]:
    return [c for c in calls if c.service == "dynamodb" and not c.is_refresh]


@pytest.mark.parametrize("route", list(TODAY))
def test_dynamodb_calls_per_request_stay_within_today(route: str, stream_url: str, sim: Simulator) -> None:
    _, warm = calls_per_request(route, stream_url)

    for calls in warm:
        assert 1 <= len(hot_path(calls)) <= TODAY[route], [c.name for c in calls]  # 1: the counter sees them
        assert all(c.service in ("dynamodb", "sqs") for c in calls), [c.name for c in calls]


@pytest.mark.parametrize("route", list(TODAY))
def test_dynamodb_calls_per_request_at_target(route: str, stream_url: str, sim: Simulator) -> None:
    _, warm = calls_per_request(route, stream_url)

    for calls in warm:
        # The clock-driven refresh of the circuit state and cooldown (one read per instance every
        # REFRESH_SECONDS, whatever the traffic) is not per request: benchmarks report it apart.
        assert len(hot_path(calls)) <= DYNAMODB_TARGETS.get(route, TARGET_DYNAMODB), [c.name for c in calls]


def test_only_job_submission_touches_sqs(stream_url: str, sim: Simulator) -> None:
    _, warm = calls_per_request("jobs submit", stream_url)

    assert [[c.name for c in calls if c.service == "sqs"] for calls in warm] == [["sqs.SendMessageBatch"]] * len(warm)


def test_closed_breaker_costs_no_read(stream_url: str, sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Within an instance's refresh interval a closed circuit is read from memory (the interval
    is stretched here so a slow machine cannot cross it between two requests)."""
    monkeypatch.setattr(circuit, "REFRESH_SECONDS", 600)
    monkeypatch.setattr(cooldown, "REFRESH_SECONDS", 600)
    _, warm = calls_per_request("generate", stream_url)

    assert [c.name for calls in warm for c in calls if c.is_breaker_read or c.is_refresh] == []


def test_claude_routes_read_the_breaker_at_most_once_per_request(stream_url: str, sim: Simulator) -> None:
    for route, spec in ROUTES.items():
        if spec.claude:
            first, warm = calls_per_request(route, stream_url)
            assert all(sum(c.is_breaker_read for c in calls) <= 1 for calls in [first, *warm]), route


def test_calls_are_named_by_the_item_they_touch() -> None:
    assert item_kind({"Key": {"id": "rate#user#2026-11-26T11:30"}}) == "rate#"
    assert item_kind({"Key": {"id": {"S": "claude:claude-sonnet-5-5"}}}) == "claude:"
    assert item_kind({"TransactItems": [{"Update": {"Key": {"id": {"S": "usage#u#d"}}}}]}) == "usage#"
    batch = {"RequestItems": {"t": {"Keys": [{"id": {"S": "claude:claude-sonnet-5-5"}}, {"id": {"S": "cooldown#m"}}]}}}
    assert item_kind(batch) == "claude:"  # the circuit and cooldown refresh, one BatchGetItem
    assert item_kind({"TableName": "t", "KeyConditionExpression": "id = :id"}) is None


def test_busy_time_is_the_union_of_overlapping_calls() -> None:
    calls = [Call("dynamodb", "GetItem", None, start, end) for start, end in [(0, 2), (1, 3), (5, 6), (5.5, 5.7)]]

    assert busy_seconds(calls) == 4
