"""Every deadline fits its caller: a buffered route answers with our JSON before API Gateway's
integration timeout, counted from the request (cold start included), and one hung connection
leaves room for another attempt. Real HTTP to the simulator; the handler as Lambda calls it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from claudekit.claude.client import reset_client
from local.instances import load_module
from local.lambda_context import LambdaContext
from local.shim import ROOT
from local.simulator import Fault, Simulator


def invoke(seconds_since_request: float, name: str) -> dict[str, Any]:
    module = load_module(ROOT / "functions" / "generate" / "app.py", name)
    event: dict[str, Any] = json.loads(Path(ROOT / "events" / "generate.json").read_text())
    event["requestContext"]["requestTimeEpoch"] = int((time.time() - seconds_since_request) * 1000)
    result: dict[str, Any] = module.handler(event, LambdaContext("generate", timeout=29))
    return result


@pytest.fixture
def budget(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUEST_BUDGET_SECONDS", "8")
    monkeypatch.setenv("REQUEST_TIMEOUT_SECONDS", "60")
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("MODEL_FALLBACK", "")
    reset_client()


def test_time_spent_before_the_function_ran_is_not_spent_twice(budget: None, sim: Simulator) -> None:
    # API Gateway received it 7.9 s ago (a slow cold start): too little is left to call at all.
    result = invoke(7.9, "deadline_spent")

    assert result["statusCode"] == 504
    assert json.loads(result["body"])["error"]["code"] == "UPSTREAM_TIMEOUT"
    assert sim.message_requests() == []


def test_a_hung_connection_leaves_room_for_a_retry_and_the_answer_is_our_json(budget: None, sim: Simulator) -> None:
    sim.script(Fault.hang(10), Fault.hang(10))

    result = invoke(1.0, "deadline_hang")

    assert result["statusCode"] == 504
    error = json.loads(result["body"])["error"]
    assert error["code"] == "UPSTREAM_TIMEOUT" and error["request_id"]
    # The first attempt used only part of the budget, so a second one was made within it.
    assert len(sim.message_requests()) == 2

    sim.reset()
    assert invoke(0.0, "deadline_healthy")["statusCode"] == 200
