"""DynamoDB round trips on the hot path, counted with a botocore `before-call` hook: a
/generate-like call over real HTTP (moto, the simulator) makes two while the circuit is closed,
its admission and its settlement (issue 15)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from claudekit.claude.client import ClaudeClient, ClaudeRequest
from claudekit.deadline import Deadline
from local.simulator import Simulator


@pytest.fixture
def dynamodb_calls(settings_env: dict[str, str]) -> Iterator[list[str]]:
    """Operation names of every DynamoDB call made by a client built from now on."""
    calls: list[str] = []

    def count(model: Any, **_: Any) -> None:
        calls.append(model.name)

    events = boto3.DEFAULT_SESSION.events if boto3.DEFAULT_SESSION else boto3.Session().events
    boto3.setup_default_session()
    events = boto3.DEFAULT_SESSION.events  # type: ignore[union-attr]
    events.register("before-call.dynamodb", count)
    yield calls
    events.unregister("before-call.dynamodb", count)


def generate(client: ClaudeClient, user: str) -> None:
    request = ClaudeRequest(feature="generate", task="generate", user_id=user, prompt="Hi there", max_tokens=200)
    client.complete(request, Deadline.after(20))


def test_a_call_makes_exactly_admission_and_settlement(
    make_client: Any, sim: Simulator, dynamodb_calls: list[str]
) -> None:
    client: ClaudeClient = make_client()
    generate(client, "hot-path")
    first = list(dynamodb_calls)
    dynamodb_calls.clear()
    generate(client, "hot-path")
    print("first", first, "second", dynamodb_calls)
    assert dynamodb_calls == ["UpdateItem", "TransactWriteItems"]
