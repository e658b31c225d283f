"""DynamoDB round trips on the hot path, counted with a botocore `before-call` hook (issue 15).

A /generate-like call over real HTTP (moto, the simulator) makes two while the circuit is closed:
its admission and its settlement. What an instance caches (the breaker's state with the model's
cooldown, refreshed every `REFRESH_SECONDS`; a user's plan override, every minute) costs one read
when it is refreshed, never per call. The refresh period is lengthened here so that which call
refreshes does not depend on how fast this machine runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from claudekit import errors
from claudekit.claude import circuit
from claudekit.claude.client import ClaudeClient
from claudekit.claude.request import ClaudeRequest
from claudekit.deadline import Deadline
from claudekit.store import cooldown, dynamo
from local.simulator import Fault, Simulator

ADMISSION, SETTLEMENT, RELEASE = "UpdateItem", "TransactWriteItems", "UpdateItem"
HEALTH_REFRESH, OVERRIDE_READ = "BatchGetItem", "GetItem"


@pytest.fixture
def dynamodb_calls(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Operation names of every DynamoDB call made by clients built from now on."""
    monkeypatch.setattr(cooldown, "REFRESH_SECONDS", 600)
    monkeypatch.setattr(circuit, "REFRESH_SECONDS", 600)
    calls: list[str] = []

    def count(model: Any, **_: Any) -> None:
        calls.append(model.name)

    # The stores' shared client, and the circuit store's own (built with the client, from the default session).
    boto3.setup_default_session()
    emitters = [dynamo.client().meta.events, boto3.DEFAULT_SESSION.events]  # type: ignore[union-attr]
    for events in emitters:
        events.register("before-call.dynamodb", count, unique_id="count-dynamodb-calls")
    yield calls
    for events in emitters:
        events.unregister("before-call.dynamodb", unique_id="count-dynamodb-calls")


def generate(client: ClaudeClient, user: str) -> str:
    request = ClaudeRequest(feature="generate", task="generate", user_id=user, prompt="Hi there", max_tokens=200)
    return client.complete(request, Deadline.after(20)).text


def test_a_call_makes_exactly_two_round_trips_admission_and_settlement(
    make_client: Any, sim: Simulator, dynamodb_calls: list[str]
) -> None:
    client: ClaudeClient = make_client()
    assert generate(client, "hot-path")
    # A new instance reads what it caches once: the user's plan override, the circuit with the cooldown.
    assert dynamodb_calls == [OVERRIDE_READ, ADMISSION, HEALTH_REFRESH, SETTLEMENT]

    for _ in range(3):
        dynamodb_calls.clear()
        assert generate(client, "hot-path")
        assert dynamodb_calls == [ADMISSION, SETTLEMENT]

    # Every call was counted and settled: the two round trips did the whole job.
    report = client.ledger.report("hot-path")
    assert report["requests"] == 4 and report["remaining"]["requests_this_minute"] == 1000 - 4
    assert client.ledger.operator_report(datetime.now(UTC).date())["features"]["generate"]["requests"] >= 4


def test_a_refusal_costs_one_round_trip_and_a_failed_call_gives_its_reservation_back(
    make_client: Any, sim: Simulator, dynamodb_calls: list[str]
) -> None:
    client: ClaudeClient = make_client(rate_limit_per_minute=1, breaker_failure_threshold=1000)
    sim.script(Fault.status(400))
    with pytest.raises(errors.ClaudeError):
        generate(client, "refused")
    assert dynamodb_calls == [OVERRIDE_READ, ADMISSION, HEALTH_REFRESH, RELEASE]

    dynamodb_calls.clear()
    with pytest.raises(errors.RateLimited):
        generate(client, "refused")
    assert dynamodb_calls == [ADMISSION]
