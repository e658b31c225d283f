"""Idempotency-Key on the REST routes: the handlers invoked with API Gateway events, Powertools
idempotency on the state table in moto, Claude the simulator (which counts upstream calls)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx2
import pytest

from claudekit.claude.client import get_client
from functions.stream import app as stream_app
from local.instances import load_module
from local.lambda_context import LambdaContext
from local.serve import serve_in_thread
from local.shim import ROOT
from local.simulator import Fault, Latency, Simulator
from tests.integration.test_stream import parse_sse, stream_headers

EVENTS = ROOT / "events"


@pytest.fixture
def generate(settings_env: dict[str, str], sim: Simulator) -> Any:
    return load_module(ROOT / "functions" / "generate" / "app.py", f"idem_generate_{uuid.uuid4().hex[:8]}")


def post(module: Any, user: str, key: str | None, body: dict[str, Any] | None = None) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "generate.json").read_text())
    event["requestContext"]["authorizer"]["claims"]["sub"] = user
    event["requestContext"]["requestId"] = f"req-{uuid.uuid4().hex}"
    event["headers"] = {**event["headers"], **({"Idempotency-Key": key} if key else {})}
    event["multiValueHeaders"] = {}
    if body is not None:
        event["body"] = json.dumps(body)
    result: dict[str, Any] = module.handler(event, LambdaContext("generate", timeout=30))
    result["json"] = json.loads(result["body"])
    return result


def user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def test_a_retry_gets_the_first_response_without_a_second_call_or_charge(generate: Any, sim: Simulator) -> None:
    caller, key = user(), str(uuid.uuid4())
    first = post(generate, caller, key)
    again = post(generate, caller, key)

    assert first["statusCode"] == again["statusCode"] == 200
    assert again["body"] == first["body"]
    assert again["headers"]["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first["headers"]
    assert len(sim.message_requests()) == 1
    report = get_client().ledger.report(caller)
    assert report["requests"] == 1
    assert report["cost_usd"] == pytest.approx(first["json"]["cost_usd"])


def test_the_same_key_with_another_body_is_422(generate: Any, sim: Simulator) -> None:
    caller, key = user(), str(uuid.uuid4())
    assert post(generate, caller, key)["statusCode"] == 200
    other = post(generate, caller, key, {"prompt": "Something else entirely."})
    assert other["statusCode"] == 422
    assert other["json"]["error"]["code"] == "VALIDATION_ERROR"
    assert len(sim.message_requests()) == 1


def test_keys_are_per_user_and_without_a_key_nothing_is_kept(generate: Any, sim: Simulator) -> None:
    key = str(uuid.uuid4())
    assert post(generate, user(), key)["statusCode"] == 200
    other = post(generate, user(), key)
    assert other["statusCode"] == 200
    assert "Idempotent-Replayed" not in other["headers"]
    caller = user()
    post(generate, caller, None)
    post(generate, caller, None)
    assert len(sim.message_requests()) == 4


def test_a_retry_while_the_first_runs_is_409_with_retry_after(generate: Any, sim: Simulator) -> None:
    sim.configure(latency=Latency(ttft=1.5))
    caller, key = user(), str(uuid.uuid4())
    results: list[dict[str, Any]] = []
    first = threading.Thread(target=lambda: results.append(post(generate, caller, key)))
    first.start()
    deadline = time.monotonic() + 5
    while not sim.message_requests() and time.monotonic() < deadline:
        time.sleep(0.02)
    during = post(generate, caller, key)
    first.join()

    assert during["statusCode"] == 409
    assert during["json"]["error"]["code"] == "CONFLICT"
    assert int(during["headers"]["Retry-After"]) >= 1
    assert results[0]["statusCode"] == 200
    assert post(generate, caller, key)["body"] == results[0]["body"]
    assert len(sim.message_requests()) == 1


def test_a_failure_worth_retrying_is_not_kept(generate: Any, sim: Simulator) -> None:
    sim.script(*[Fault.status(529)] * 6)  # every attempt on both models overloaded
    caller, key = user(), str(uuid.uuid4())
    failed = post(generate, caller, key)
    assert failed["statusCode"] == 503
    retried = post(generate, caller, key)
    assert retried["statusCode"] == 200
    assert "Idempotent-Replayed" not in retried["headers"]


def test_the_key_expires_after_a_day_and_is_not_readable(generate: Any, settings_env: dict[str, str]) -> None:
    caller, key = user(), f"key-{uuid.uuid4()}"
    before = time.time()
    post(generate, caller, key)
    table = boto3.client("dynamodb")
    items = [
        item
        for page in table.get_paginator("scan").paginate(TableName=settings_env["TABLE_NAME"])
        for item in page["Items"]
        if item["id"]["S"].startswith("idem#http")
    ]
    assert items
    assert not any(key in json.dumps(item) or caller in json.dumps(item) for item in items)
    newest = max(int(item["expiration"]["N"]) for item in items)
    assert before + 86_400 - 5 <= newest <= time.time() + 86_400 + 5


def test_an_unusable_key_is_422(generate: Any, sim: Simulator) -> None:
    reply = post(generate, user(), "x" * 300)
    assert reply["statusCode"] == 422
    assert sim.message_requests() == []


# ---- the stream function -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_in_thread(stream_app.app) as url:
        yield url


def stream(base_url: str, caller: str, key: str, prompt: str = "Tell me about tides.") -> httpx2.Response:
    with httpx2.Client(timeout=15) as http:
        return http.post(
            f"{base_url}/stream",
            content=json.dumps({"prompt": prompt}).encode(),
            headers=stream_headers(caller, None, {"Idempotency-Key": key}),
        )


def events(response: httpx2.Response) -> list[tuple[str, dict[str, Any]]]:
    return [(e.name, e.data) for e in parse_sse(iter(response.text.splitlines()))]


def test_a_retried_stream_replays_its_text_at_once(base_url: str, settings_env: dict[str, str], sim: Simulator) -> None:
    caller, key = user(), str(uuid.uuid4())
    first = stream(base_url, caller, key)
    again = stream(base_url, caller, key)

    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["content-type"].startswith("text/event-stream")
    sent = events(first)
    text = "".join(data["text"] for name, data in sent if name == "delta")
    assert events(again) == [("delta", {"text": text}), sent[-1]]
    assert sent[-1][0] == "done"
    assert len(sim.message_requests()) == 1

    other = stream(base_url, caller, key, prompt="Another question.")
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "VALIDATION_ERROR"
    assert len(sim.message_requests()) == 1


def test_a_retried_conversation_turn_is_recorded_once(settings_env: dict[str, str], sim: Simulator) -> None:
    module = load_module(ROOT / "functions" / "conversations" / "app.py", f"idem_conv_{uuid.uuid4().hex[:8]}")
    caller, key = user(), str(uuid.uuid4())

    def call(name: str, cid: str | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
        event: dict[str, Any] = json.loads((EVENTS / name).read_text())
        event["requestContext"]["authorizer"]["claims"]["sub"] = caller
        event["headers"] = {**event["headers"], **(headers or {})}
        event["multiValueHeaders"] = {}
        if cid:
            event["path"] = event["resource"].replace("{id}", cid)
            event["pathParameters"] = {"id": cid}
        result: dict[str, Any] = module.handler(event, LambdaContext("conversations", timeout=30))
        return result

    cid = json.loads(call("conversations-post.json")["body"])["id"]
    first = call("conversations-messages.json", cid, {"Idempotency-Key": key})
    again = call("conversations-messages.json", cid, {"Idempotency-Key": key})
    assert again["body"] == first["body"]
    history = json.loads(call("conversations-get.json", cid)["body"])
    assert len(history["messages"]) == 2
    assert len(sim.message_requests()) == 1


def test_an_answer_too_large_to_keep_is_delivered_and_its_key_freed(settings_env: dict[str, str]) -> None:
    """Powertools keeps a response in one DynamoDB item (400 KB): a larger one is answered anyway,
    not kept, and a retry runs again rather than failing or waiting on a stuck key."""
    from claudekit.http import idempotency

    store = idempotency.Idempotency(settings_env["TABLE_NAME"])
    data = idempotency.request_data(user(), "POST", "/conversations", str(uuid.uuid4()), b"{}")
    big = {"statusCode": 201, "headers": {}, "body": json.dumps({"system": "\U0001f600" * 40_000})}
    runs: list[int] = []

    def produce() -> dict[str, Any]:
        runs.append(1)
        return dict(big)

    for _ in range(2):
        response, replayed = store.run(data, produce, None)
        assert response["statusCode"] == 201 and response["body"] == big["body"] and not replayed
    assert len(runs) == 2
