"""Per-user limits under concurrency: the ledger's conditional writes in moto, real threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest

from claudekit import errors
from claudekit.claude.client import ClaudeClient
from claudekit.claude.request import ClaudeRequest
from claudekit.deadline import Deadline
from local.simulator import Simulator


def ask(client: ClaudeClient, user: str) -> str:
    request = ClaudeRequest(feature="generate", task="generate", user_id=user, prompt="Hi there", max_tokens=1000)
    try:
        client.complete(request, Deadline.after(20))
        return "ok"
    except errors.ClaudeError as exc:
        return exc.code


def test_concurrent_requests_cannot_overrun_the_budget(make_client: Any, sim: Simulator) -> None:
    # Each request reserves its worst case (~0.015 USD on Sonnet for 1000 output tokens) before
    # calling Claude, so with 0.05 USD at most three can be in flight, however they race.
    client: ClaudeClient = make_client(daily_budget_usd=0.05)
    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(lambda _: ask(client, "racer"), range(10)))

    assert outcomes.count("ok") >= 1
    assert set(outcomes) <= {"ok", "BUDGET_EXCEEDED"}
    report = client.ledger.report("racer")
    assert Decimal(str(report["cost_usd"])) <= Decimal("0.05")
    assert len(sim.message_requests()) == outcomes.count("ok")
    assert report["requests"] == outcomes.count("ok")


def test_reservations_are_released_so_later_requests_fit(make_client: Any, sim: Simulator) -> None:
    client: ClaudeClient = make_client(daily_budget_usd=0.05)
    outcomes = [ask(client, "sequential") for _ in range(6)]
    # Sequential calls settle to their real (small) cost, so none is refused.
    assert outcomes == ["ok"] * 6


def test_rate_limit_per_user_per_minute(make_client: Any, sim: Simulator) -> None:
    client: ClaudeClient = make_client(rate_limit_per_minute=3)
    outcomes = [ask(client, "busy") for _ in range(4)]
    assert outcomes == ["ok", "ok", "ok", "RATE_LIMITED"]
    assert ask(client, "someone-else") == "ok"


@pytest.mark.parametrize("budget", [0.0])
def test_zero_budget_refuses_everything(make_client: Any, sim: Simulator, budget: float) -> None:
    client: ClaudeClient = make_client(daily_budget_usd=budget)
    assert ask(client, "broke") == "BUDGET_EXCEEDED"
    assert sim.message_requests() == []


def test_a_reservation_given_back_to_exactly_zero_leaves_the_next_request_admitted(
    make_client: Any, sim: Simulator
) -> None:
    """Exact cost arithmetic can bring the committed sum back to zero in exponent form (0E-7):
    the next admission on that item must still work (moto once choked on it; DynamoDB never did)."""
    client: ClaudeClient = make_client(daily_budget_usd=1.0)
    user = "back-to-zero"
    reservation = client.ledger.admit(user, Decimal("0.0001234"))
    client.ledger.release(reservation)
    assert client.ledger.report(user)["remaining"]["budget_usd"] == pytest.approx(1.0)
    assert ask(client, user) == "ok"
