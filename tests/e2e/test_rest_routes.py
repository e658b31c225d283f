"""Every REST route of the local stack, over real HTTP, against an independent simulator."""

from __future__ import annotations

import pytest

from local.simulator import Fault, Simulator
from tests.e2e.conftest import E2E_KEY, StackClient

pytestmark = pytest.mark.e2e


def assert_error(reply: object, status: int, code: str) -> None:
    assert reply.status == status, reply.body  # type: ignore[attr-defined]
    error = reply.body["error"]  # type: ignore[attr-defined]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == reply.headers["x-request-id"]  # type: ignore[attr-defined]


# ---- success ---------------------------------------------------------------------------------


def test_generate(stack: StackClient, sim: Simulator, user: str) -> None:
    reply = stack.post("/generate", {"prompt": "Write two sentences about solar lanterns."}, user)

    assert reply.status == 200
    body = reply.body
    assert set(body) == {"text", "model", "stop_reason", "truncated", "usage", "cost_usd", "request_id"}
    assert body["text"] and body["stop_reason"] == "end_turn" and body["truncated"] is False
    assert set(body["usage"]) == {
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    }
    assert body["cost_usd"] > 0
    assert body["request_id"] == reply.headers["x-request-id"]
    assert sim.message_requests()[0].headers["authorization"] == f"Bearer {E2E_KEY}"


def test_generate_routes_task_to_its_tier(stack: StackClient, sim: Simulator, user: str) -> None:
    stack.post("/generate", {"prompt": "Summarise: retries need jitter.", "task": "summarize"}, user)
    stack.post("/generate", {"prompt": "Why does jitter help?", "task": "reason", "max_tokens": 200}, user)
    assert [r.body["model"] for r in sim.message_requests()] == ["claude-haiku-5-5", "claude-opus-5-5"]


def test_generate_reports_truncation(stack: StackClient, sim: Simulator, user: str) -> None:
    sim.configure(reply_tokens=300)
    reply = stack.post("/generate", {"prompt": "Write a long essay.", "max_tokens": 16}, user)
    assert reply.status == 200
    assert reply.body["truncated"] is True
    assert reply.body["stop_reason"] == "max_tokens"


def test_classify_answers_one_of_the_labels(stack: StackClient, sim: Simulator, user: str) -> None:
    labels = ["billing", "shipping", "product quality", "other"]
    reply = stack.post("/classify", {"text": "The parcel arrived two weeks late.", "labels": labels}, user)

    assert reply.status == 200
    assert reply.body["label"] in labels
    assert reply.body["model"] == "claude-haiku-5-5"
    schema = sim.message_requests()[0].body["output_config"]["format"]["schema"]
    assert schema["properties"]["label"]["enum"] == labels


def test_ideas_returns_exactly_count(stack: StackClient, sim: Simulator, user: str) -> None:
    reply = stack.post("/ideas", {"topic": "serverless cost control", "count": 4}, user)

    assert reply.status == 200
    ideas = reply.body["ideas"]
    assert len(ideas) == 4
    for idea in ideas:
        assert set(idea) == {"title", "excerpt", "target_audience"}
        assert all(isinstance(value, str) and value for value in idea.values())


def test_ideas_with_invalid_output_twice_is_upstream_error(stack: StackClient, sim: Simulator, user: str) -> None:
    # Two malformed answers in a row cannot become ideas: a documented error, never an empty list.
    sim.script(Fault.malformed(), Fault.malformed(), Fault.malformed(), Fault.malformed())
    sim.configure(api_key=E2E_KEY)
    reply = stack.post("/ideas", {"topic": "x", "count": 2}, user)
    assert_error(reply, 502, "UPSTREAM_ERROR")


def test_plans_ratelimit_headers_and_the_admin_route_through_the_shim(
    stack: StackClient, sim: Simulator, user: str
) -> None:
    replies = [stack.call("POST", "/generate", {"prompt": "Hi"}, user, groups="free") for _ in range(3)]
    assert [r.status for r in replies] == [200, 200, 429]
    assert [r.headers["ratelimit-remaining"] for r in replies] == ["1", "0", "0"]
    assert {r.headers["ratelimit-limit"] for r in replies} == {"2"}
    assert replies[2].headers["retry-after"] == replies[2].headers["ratelimit-reset"]
    assert stack.call("GET", "/usage", user=user, groups="free").body["plan"] == "free"

    assert_error(stack.call("GET", "/admin/usage", user=user, groups="free"), 403, "FORBIDDEN")
    report = stack.call("GET", "/admin/usage", user="operator-" + user, groups="admins")
    assert report.status == 200 and report.body["features"]["generate"]["requests"] >= 2


def test_usage_reports_what_was_spent(stack: StackClient, sim: Simulator, user: str) -> None:
    spent = stack.post("/generate", {"prompt": "Hello"}, user).body
    usage = stack.usage(user)

    assert usage["requests"] == 1
    assert usage["usage"] == spent["usage"]
    assert usage["cost_usd"] == pytest.approx(spent["cost_usd"])
    assert usage["limits"] == {"requests_per_minute": 6, "daily_budget_usd": 0.05}
    assert usage["remaining"]["budget_usd"] == pytest.approx(0.05 - spent["cost_usd"])
    assert stack.usage("someone-else-" + user)["requests"] == 0


# ---- documented errors -----------------------------------------------------------------------


def test_rate_limited_with_retry_after(stack: StackClient, sim: Simulator, user: str) -> None:
    replies = [stack.post("/classify", {"text": "hi", "labels": ["a", "b"]}, user) for _ in range(7)]
    assert [r.status for r in replies[:6]] == [200] * 6
    assert_error(replies[6], 429, "RATE_LIMITED")
    assert 1 <= int(replies[6].headers["retry-after"]) <= 60
    assert len(sim.message_requests()) == 6


def test_a_request_that_could_never_fit_the_budget_is_422_without_retry_after(
    stack: StackClient, sim: Simulator, user: str
) -> None:
    # 4096 output tokens on the deep tier (Opus 5.5, $20 per million) could cost 0.08 USD, more than
    # the whole 0.05 USD budget: waiting until midnight cannot help, a smaller max_tokens can.
    reply = stack.post("/generate", {"prompt": "Think hard.", "task": "reason", "max_tokens": 4096}, user)
    assert_error(reply, 422, "COST_EXCEEDS_BUDGET")
    assert "retry-after" not in reply.headers
    assert "max_tokens" in reply.body["error"]["message"]
    assert sim.message_requests() == []
    assert stack.usage(user)["remaining"]["requests_this_minute"] == 6  # not counted either


def test_upstream_500s_are_upstream_error(stack: StackClient, sim: Simulator, user: str) -> None:
    sim.script(*[Fault.status(500)] * 3)
    reply = stack.post("/generate", {"prompt": "Hello"}, user)
    assert_error(reply, 502, "UPSTREAM_ERROR")
    assert len(sim.message_requests()) == 3
    assert "api_error" not in str(reply.body)  # the upstream body never leaks


def test_upstream_overload_is_unavailable_with_retry_after(stack: StackClient, sim: Simulator, user: str) -> None:
    sim.script(*[Fault.status(529, retry_after=0.05)] * 6)  # the routed model and the fallback both overloaded
    reply = stack.post("/generate", {"prompt": "Hello"}, user)
    assert_error(reply, 503, "UPSTREAM_UNAVAILABLE")
    assert int(reply.headers["retry-after"]) >= 1
    models = {r.body["model"] for r in sim.message_requests()}
    assert models == {"claude-sonnet-5-5", "claude-haiku-5-5"}


def test_upstream_hang_is_timeout(stack: StackClient, sim: Simulator, user: str) -> None:
    sim.script(*[Fault.hang(3)] * 6)
    reply = stack.post("/classify", {"text": "hi", "labels": ["a", "b"]}, user)
    assert_error(reply, 504, "UPSTREAM_TIMEOUT")


def test_revoked_key_is_upstream_auth(stack: StackClient, sim: Simulator, user: str) -> None:
    sim.configure(api_key="sk-a-different-key")
    reply = stack.post("/generate", {"prompt": "Hello"}, user)
    assert_error(reply, 502, "UPSTREAM_AUTH")
    assert len(sim.message_requests()) == 2  # one secret refresh, one retry
    assert E2E_KEY not in str(reply.body)


def test_upstream_failure_charges_nothing(stack: StackClient, sim: Simulator, user: str) -> None:
    sim.script(*[Fault.status(500)] * 3)
    stack.post("/generate", {"prompt": "Hello"}, user)
    usage = stack.usage(user)
    assert usage["cost_usd"] == 0
    assert usage["remaining"]["budget_usd"] == pytest.approx(0.05)


BAD_INPUTS = [
    ("/generate", b"this is not json", 400),
    ("/generate", b"[1, 2, 3]", 422),
    ("/generate", b"{}", 422),
    ("/generate", b'{"prompt": 42}', 422),
    ("/generate", b'{"prompt": ""}', 422),
    ("/generate", b'{"prompt": "   "}', 422),
    ("/generate", b'{"prompt": "hi", "temperature": 0.5}', 422),
    ("/generate", b'{"prompt": "hi", "max_tokens": 0}', 422),
    ("/generate", b'{"prompt": "hi", "max_tokens": 4097}', 422),
    ("/generate", b'{"prompt": "hi", "max_tokens": "100"}', 422),
    ("/generate", b'{"prompt": "hi", "task": "classify"}', 422),
    ("/generate", b'{"prompt": "hi", "user": "admin"}', 422),
    ("/classify", b'{"text": "hi", "labels": ["a"]}', 422),
    ("/classify", b'{"text": "hi", "labels": ["a", "a"]}', 422),
    ("/classify", b'{"text": "hi", "labels": ["a", ""]}', 422),
    ("/classify", b'{"text": "hi", "labels": "a,b"}', 422),
    (
        "/classify",
        b'{"text": "hi", "labels": ' + str([f"l{i}" for i in range(51)]).replace("'", '"').encode() + b"}",
        422,
    ),
    ("/classify", b'{"labels": ["a", "b"]}', 422),
    ("/ideas", b'{"topic": "x", "count": 0}', 422),
    ("/ideas", b'{"topic": "x", "count": 11}', 422),
    ("/ideas", b'{"topic": "x", "count": 2.5}', 422),
    ("/ideas", b'{"count": 3}', 422),
]


@pytest.mark.parametrize(("path", "raw", "status"), BAD_INPUTS)
def test_bad_input_is_4xx_and_changes_nothing(
    stack: StackClient, sim: Simulator, user: str, path: str, raw: bytes, status: int
) -> None:
    reply = stack.call("POST", path, raw=raw, user=user)

    assert_error(reply, status, "VALIDATION_ERROR")
    assert sim.message_requests() == []
    usage = stack.usage(user)
    assert usage["requests"] == 0
    assert usage["remaining"]["requests_this_minute"] == 6


def test_oversize_input_is_413_and_changes_nothing(stack: StackClient, sim: Simulator, user: str) -> None:
    reply = stack.post("/generate", {"prompt": "a" * 100_001}, user)
    assert_error(reply, 413, "INPUT_TOO_LARGE")
    reply = stack.post("/classify", {"text": "a" * 100_001, "labels": ["a", "b"]}, user)
    assert_error(reply, 413, "INPUT_TOO_LARGE")
    assert sim.message_requests() == []
    assert stack.usage(user)["remaining"]["requests_this_minute"] == 6


def test_unknown_route_is_404_json(stack: StackClient, user: str) -> None:
    assert_error(stack.call("GET", "/nope", user=user), 404, "NOT_FOUND")


def test_logs_hold_no_key_prompt_or_completion(stack: StackClient, sim: Simulator, user: str) -> None:
    marker = "promptmarker7f3a"
    reply = stack.post("/generate", {"prompt": f"Please repeat {marker} back"}, user)
    assert marker in reply.body["text"]  # the simulator echoes words of the prompt
    logs = stack.log.read_text()
    assert "claude call" in logs  # the stack does log the call...
    assert marker not in logs  # ...but never its prompt or completion
    assert reply.body["text"][:40] not in logs
    assert E2E_KEY not in logs
    assert user not in logs  # user ids are hashed
