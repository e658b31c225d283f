"""Conversations: the REST function invoked with API Gateway events, the streamed turn over real HTTP
(uvicorn -> the stream app), both against the simulator (prompt caching as the API does it) and moto.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import boto3
import httpx2
import pytest

from claudekit.claude.client import get_client, reset_client
from functions.stream import app as stream_app
from local.instances import load_module
from local.lambda_context import LambdaContext
from local.serve import serve_in_thread
from local.shim import ROOT
from local.simulator import Fault, Latency, Simulator
from tests.helpers import wait_for
from tests.integration.test_stream import parse_sse, stream_headers

EVENTS = ROOT / "events"
# Sonnet 5.5 from 2026-10-07, USD per million tokens: input, 5-minute cache write, cache read, output.
INPUT, WRITE_5M, READ, OUTPUT = Decimal(2), Decimal("2.50"), Decimal("0.10"), Decimal(10)


def tokens(text: str) -> int:
    """The simulator's count: ~4 characters a token, rounded up."""
    return (len(text) + 3) // 4


@pytest.fixture
def conversations(settings_env: dict[str, str], sim: Simulator) -> Any:
    # Short turns cache in these tests: the simulator's minimum cacheable length, lowered.
    sim.configure(min_cache_tokens={"claude-sonnet-5-5": 8, "claude-haiku-5-5": 8})
    return load_module(ROOT / "functions" / "conversations" / "app.py", f"conversations_{uuid.uuid4().hex[:8]}")


def invoke(module: Any, name: str, user: str, conversation_id: str | None = None, body: Any = None) -> Any:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    event["requestContext"]["authorizer"]["claims"]["sub"] = user
    event["requestContext"]["requestId"] = f"req-{uuid.uuid4().hex}"
    if conversation_id is not None:
        event["path"] = event["resource"].replace("{id}", conversation_id)
        event["pathParameters"] = {"id": conversation_id}
    if body is not None:
        event["body"] = json.dumps(body)
    result = module.handler(event, LambdaContext("conversations", timeout=30))
    return result["statusCode"], json.loads(result["body"]), result.get("headers") or {}


def start(module: Any, user: str, **body: Any) -> str:
    status, created, _ = invoke(module, "conversations-post.json", user, body=body)
    assert status == 201, created
    return str(created["id"])


def say(module: Any, user: str, conversation_id: str, prompt: str) -> dict[str, Any]:
    status, reply, _ = invoke(module, "conversations-messages.json", user, conversation_id, {"prompt": prompt})
    assert status == 200, reply
    return dict(reply)


def test_each_turn_reads_the_prefix_the_previous_turn_wrote(conversations: Any, sim: Simulator) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    cid = start(conversations, user)
    prompts = ["What grows well in a shady garden?", "Which of those are edible?", "How do I start them?"]
    replies = [say(conversations, user, cid, p) for p in prompts]

    for before, after in itertools.pairwise(replies):
        u0, u1 = before["usage"], after["usage"]
        assert u1["cache_read_input_tokens"] == u0["cache_read_input_tokens"] + u0["cache_creation_input_tokens"]
    assert replies[0]["usage"]["cache_read_input_tokens"] == 0
    assert all(r["usage"]["cache_read_input_tokens"] > 0 for r in replies[1:])
    assert [r["messages"] for r in replies] == [2, 4, 6]
    assert all(r["compacted"] is None for r in replies)
    # Every call sent the whole history, marked for caching.
    sent = [r.body["messages"] for r in sim.message_requests()]
    assert [len(m) for m in sent] == [1, 3, 5]

    # Turn 2 by hand: reads turn 1's prompt; writes turn 1's answer and its own prompt; nothing
    # left uncached; output at the output rate.
    answer1 = replies[0]["text"]
    usage2 = replies[1]["usage"]
    assert usage2["cache_read_input_tokens"] == tokens(prompts[0])
    assert usage2["cache_creation_input_tokens"] == tokens(answer1) + tokens(prompts[1])
    assert usage2["input_tokens"] == 0
    expected = (
        tokens(prompts[0]) * READ + (tokens(answer1) + tokens(prompts[1])) * WRITE_5M + usage2["output_tokens"] * OUTPUT
    ) / 1_000_000
    assert Decimal(str(replies[1]["cost_usd"])) == pytest.approx(expected, abs=Decimal("1e-9"))
    assert replies[1]["model"] == "claude-sonnet-5-5"


def test_history_is_the_owners_only(conversations: Any) -> None:
    owner, other = f"owner-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    cid = start(conversations, owner, system="Answer briefly.")
    reply = say(conversations, owner, cid, "Name a prime number.")

    status, history, _ = invoke(conversations, "conversations-get.json", owner, cid)
    assert status == 200
    assert history["system"] == "Answer briefly."
    assert history["messages"] == [
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": reply["text"]},
    ]
    assert history["expires_at"].endswith("Z")

    for name, body in (("conversations-get.json", None), ("conversations-messages.json", {"prompt": "Hi"})):
        status, error, _ = invoke(conversations, name, other, cid, body)
        assert (status, error["error"]["code"]) == (404, "NOT_FOUND")
    status, error, _ = invoke(conversations, "conversations-get.json", owner, str(uuid.uuid4()))
    assert status == 404


def test_the_item_expires_and_holds_no_identity(conversations: Any, settings_env: dict[str, str]) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    cid = start(conversations, user)
    item = boto3.client("dynamodb").get_item(
        TableName=settings_env["TABLE_NAME"], Key={"id": {"S": f"conversation#{cid}"}}
    )["Item"]
    assert int(item["expiration"]["N"]) > 0
    assert user not in json.dumps(item)


def test_a_turn_saved_while_claude_answered_is_a_conflict_and_the_call_is_charged_once(
    conversations: Any, sim: Simulator, settings_env: dict[str, str]
) -> None:
    """A turn is written in its call's settlement transaction, on the condition that the
    conversation is still at the version read: another turn saved meanwhile makes it 409, the
    other turn stays, and the answer is charged once all the same (it was paid for)."""
    user = f"user-{uuid.uuid4().hex[:8]}"
    cid = start(conversations, user)
    say(conversations, user, cid, "First question?")
    sim.configure(latency=Latency(ttft=0.5))
    seen = len(sim.message_requests())
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            invoke, conversations, "conversations-messages.json", user, cid, {"prompt": "Second question?"}
        )
        assert wait_for(lambda: len(sim.message_requests()) > seen, timeout=10)
        # Another request saves a turn while Claude answers this one: the item moves one version on.
        boto3.client("dynamodb").update_item(
            TableName=settings_env["TABLE_NAME"],
            Key={"id": {"S": f"conversation#{cid}"}},
            UpdateExpression="ADD version :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )
        status, error, _ = pending.result(timeout=30)

    assert status == 409 and error["error"]["code"] == "CONFLICT", error
    _, history, _ = invoke(conversations, "conversations-get.json", user, cid)
    assert [m["content"] for m in history["messages"] if m["role"] == "user"] == ["First question?"]
    report = get_client().accounting.ledger.report(user)
    assert report["requests"] == 2 and report["cost_usd"] > 0, report


@pytest.mark.parametrize("mode", ["summarize", "drop"])
def test_past_the_cap_the_oldest_turns_are_compacted(
    conversations: Any, sim: Simulator, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("CONVERSATION_MAX_CHARS", "1000")
    monkeypatch.setenv("CONVERSATION_OVERFLOW", mode)
    reset_client()
    module = load_module(ROOT / "functions" / "conversations" / "app.py", f"conversations_cap_{mode}")
    user = f"user-{uuid.uuid4().hex[:8]}"
    cid = start(module, user)
    replies = [say(module, user, cid, f"Question {i}: " + "tell me about soil. " * 12) for i in range(6)]

    compacted = [r["compacted"] for r in replies if r["compacted"]]
    assert compacted, "1000 characters cannot hold six long turns"
    first = compacted[0]
    assert first["mode"] == ("summarized" if mode == "summarize" else "dropped")
    assert first["messages"] >= 2 and first["messages"] % 2 == 0
    status, history, _ = invoke(module, "conversations-get.json", user, cid)
    assert status == 200
    sent_chars = sum(len(m["content"]) for m in history["messages"]) + len(history["summary"] or "")
    assert sent_chars <= 1000 + max(len(r["text"]) for r in replies)
    models = [r.body["model"] for r in sim.message_requests()]
    if mode == "summarize":
        assert history["summary"]
        assert "claude-haiku-5-5" in models  # the fast model summarised
        assert first["cost_usd"] > 0
    else:
        assert history["summary"] is None
        assert set(models) == {"claude-sonnet-5-5"}
        assert first["cost_usd"] == 0


def test_a_prompt_over_the_cap_is_413(conversations: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERSATION_MAX_CHARS", "1000")
    reset_client()
    module = load_module(ROOT / "functions" / "conversations" / "app.py", "conversations_413")
    user = f"user-{uuid.uuid4().hex[:8]}"
    cid = start(module, user)
    status, error, _ = invoke(module, "conversations-messages.json", user, cid, {"prompt": "x" * 1001})
    assert (status, error["error"]["code"]) == (413, "INPUT_TOO_LARGE")


def test_a_system_prompt_no_history_could_follow_is_413_and_nothing_is_created(
    conversations: Any, settings_env: dict[str, str], local_aws: Any
) -> None:
    """Past half the cap, every message would be refused: the conversation is refused instead, and
    a huge one never reaches DynamoDB's item limit (a 500) either."""
    user = f"user-{uuid.uuid4().hex[:8]}"
    for system in ("s" * 20_001, "\U0001f600" * 120_000):
        status, error, _ = invoke(conversations, "conversations-post.json", user, body={"system": system})
        assert (status, error["error"]["code"]) == (413, "INPUT_TOO_LARGE")
    table = local_aws.client("dynamodb").scan(TableName=settings_env["TABLE_NAME"])["Items"]
    assert not [item for item in table if item["id"]["S"].startswith("conversation#") and "s" * 100 in str(item)]
    assert start(conversations, user, system="\U0001f600" * 20_000)  # at the limit, non-ASCII: fits an item


# ---- the streamed turn -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_in_thread(stream_app.app) as url:
        yield url


def test_a_streamed_turn_is_recorded_and_reads_the_cache(conversations: Any, base_url: str, sim: Simulator) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    cid = start(conversations, user)
    first = say(conversations, user, cid, "Describe a lighthouse in one line.")

    with (
        httpx2.Client(timeout=15) as http,
        http.stream(
            "POST",
            f"{base_url}/conversations/{cid}/stream",
            content=json.dumps({"prompt": "Now a harbour."}).encode(),
            headers=stream_headers(user, None, None),
        ) as response,
    ):
        assert response.status_code == 200
        events = list(parse_sse(response.iter_lines()))
    names = [e.name for e in events]
    assert names[-1] == "done" and set(names[:-1]) == {"delta"}
    done = events[-1].data
    text = "".join(e.data["text"] for e in events if e.name == "delta")
    assert done["conversation_id"] == cid and done["messages"] == 4
    assert done["usage"]["cache_read_input_tokens"] == (
        first["usage"]["cache_read_input_tokens"] + first["usage"]["cache_creation_input_tokens"]
    )
    _, history, _ = invoke(conversations, "conversations-get.json", user, cid)
    assert history["messages"][-1] == {"role": "assistant", "content": text}

    # Another user's stream is the same 404 as the REST route, before any event.
    with httpx2.Client(timeout=15) as http:
        response = http.post(
            f"{base_url}/conversations/{cid}/stream",
            content=json.dumps({"prompt": "Mine now?"}).encode(),
            headers=stream_headers("someone-else", None, None),
        )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"
    assert len(sim.message_requests()) == 2


def test_a_summary_is_kept_when_the_answer_then_fails(
    conversations: Any, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVERSATION_MAX_CHARS", "1000")
    reset_client()
    module = load_module(ROOT / "functions" / "conversations" / "app.py", "conversations_summary_kept")
    user = f"user-{uuid.uuid4().hex[:8]}"
    cid = start(module, user)
    for i in range(3):
        say(module, user, cid, f"Question {i}: " + "tell me about soil. " * 12)
    # The next turn needs a summary first; then its answer fails (a 400 is never retried).
    sim.script(Fault.status(400, match="Final question"))
    status, error, _ = invoke(
        module, "conversations-messages.json", user, cid, {"prompt": "Final question: " + "and compost? " * 20}
    )
    assert status == 502, error
    _, history, _ = invoke(module, "conversations-get.json", user, cid)
    assert history["summary"]
    assert len(history["messages"]) < 6


@pytest.mark.parametrize(
    ("body", "status", "system"),
    [(None, 201, None), ({}, 201, None), ({"system": "Be brief."}, 201, "Be brief."), ({"sistem": "typo"}, 422, None)],
)
def test_starting_a_conversation(conversations: Any, body: Any, status: int, system: str | None) -> None:
    event: dict[str, Any] = json.loads((EVENTS / "conversations-post.json").read_text())
    event["body"] = None if body is None else json.dumps(body)
    result = conversations.handler(event, LambdaContext("conversations", timeout=30))
    assert result["statusCode"] == status, result["body"]
    if status == 201:
        created = json.loads(result["body"])
        assert (created["system"], created["messages"]) == (system, [])
