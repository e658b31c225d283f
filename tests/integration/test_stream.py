"""POST /stream over real HTTP: uvicorn on loopback -> the ASGI app -> the simulator, boto3 -> moto.

Each case reads the server-sent events incrementally, as a browser would, and asserts what the
caller sees (status, headers, events, when they arrive), what the simulator saw (attempts, a
closed connection) and the metrics emitted.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from claudekit.claude.client import get_client, reset_client
from functions.stream import app as stream_app
from local.lambda_context import LambdaContext
from local.serve import serve_in_thread
from local.simulator import Fault, Latency, Simulator
from tests.conftest import emf_records, metric_values
from tests.helpers import wait_for

EVENTS = Path(__file__).resolve().parents[2] / "events"
TIMEOUT = httpx2.Timeout(15.0)
LONG_SYSTEM = "You are a meticulous reviewer. " * 200  # ~1500 tokens: above Sonnet's minimum cacheable length


# ---- a real server and a real SSE client -------------------------------------------------------


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_in_thread(stream_app.app) as url:
        yield url


@pytest.fixture
def user() -> str:
    """A fresh caller per test, so per-user rate limits and budgets never leak between tests."""
    return f"user-{uuid.uuid4().hex[:12]}"


@dataclass
class Event:
    name: str
    data: dict[str, Any]
    at: float  # time.monotonic() when the event was complete at the client


@dataclass
class Reply:
    status: int
    headers: httpx2.Headers
    events: list[Event] = field(default_factory=list)
    json: Any = None
    started: float = 0.0

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.events]

    @property
    def text(self) -> str:
        return "".join(e.data["text"] for e in self.events if e.name == "delta")


def parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """A minimal SSE parser (event/data fields, comments ignored), yielding as each event completes."""
    name, data = "message", list[str]()
    for line in lines:
        if line == "":
            if data:
                yield Event(name, json.loads("\n".join(data)), time.monotonic())
            name, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)


def request_context(user: str | None, request_id: str) -> str:
    """What LWA forwards in x-amzn-request-context for a REST API with a Cognito authorizer."""
    context = json.loads((EVENTS / "stream.json").read_text())["requestContext"]
    context["requestId"] = request_id
    if user is None:
        context.pop("authorizer", None)
    else:
        context["authorizer"]["claims"]["sub"] = user
    return json.dumps(context)


def stream_headers(user: str | None, request_id: str | None, extra: dict[str, str] | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream", **(extra or {})}
    if user is not None or request_id is not None:
        headers["x-amzn-request-context"] = request_context(user, request_id or f"req-{uuid.uuid4().hex}")
    return headers


@contextmanager
def open_stream(
    base_url: str,
    body: Any,
    user: str | None,
    *,
    raw: bytes | None = None,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> Iterator[tuple[httpx2.Response, Iterator[Event], float]]:
    content = raw if raw is not None else json.dumps(body).encode()
    sent = stream_headers(user, request_id, headers)
    with httpx2.Client(timeout=TIMEOUT) as http:
        started = time.monotonic()
        with http.stream("POST", f"{base_url}/stream", content=content, headers=sent) as response:
            yield response, parse_sse(response.iter_lines()), started


def post_stream(
    base_url: str,
    body: Any,
    user: str | None,
    *,
    raw: bytes | None = None,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    with open_stream(base_url, body, user, raw=raw, request_id=request_id, headers=headers) as (
        response,
        events,
        started,
    ):
        reply = Reply(response.status_code, response.headers, started=started)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            reply.events = list(events)
        else:
            reply.json = json.loads(response.read())
    return reply


def body(prompt: str = "Explain retries with jitter in two sentences.", **fields: Any) -> dict[str, Any]:
    return {"prompt": prompt, **fields}


# ---- success -----------------------------------------------------------------------------------


def test_success_streams_deltas_then_done(
    base_url: str, settings_env: dict[str, str], sim: Simulator, user: str, capsys: Any
) -> None:
    reply = post_stream(base_url, body(), user, request_id="req-abc-123")

    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["x-accel-buffering"] == "no"
    assert reply.headers["x-request-id"] == "req-abc-123"
    # A browser page on the configured origin may read the stream and its headers (CORS).
    assert reply.headers["access-control-allow-origin"] == settings_env["CORS_ALLOW_ORIGIN"]
    assert "RateLimit-Remaining" in reply.headers["access-control-expose-headers"]
    assert reply.names[-1] == "done" and set(reply.names[:-1]) == {"delta"} and len(reply.names) > 2
    done = reply.events[-1].data
    assert set(done) == {"model", "stop_reason", "usage", "cost_usd"}
    assert done["model"] == "claude-sonnet-5-5" and done["stop_reason"] == "end_turn"
    assert set(done["usage"]) == {
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    }
    assert done["cost_usd"] > 0

    [upstream] = sim.message_requests()
    assert upstream.stream and upstream.completed and upstream.body["messages"][-1]["content"] == body()["prompt"]

    out = capsys.readouterr().out
    [record] = emf_records(out)
    assert ["feature", "model"] in record["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    assert (record["feature"], record["model"]) == ("stream", "claude-sonnet-5-5")
    assert record["OutputTokens"] == [done["usage"]["output_tokens"]]
    assert record["CostUSD"] == [pytest.approx(done["cost_usd"])]
    assert metric_values(out, "TimeToFirstToken") and metric_values(out, "StreamDuration")
    assert user not in out  # user ids are hashed in logs


def test_first_delta_arrives_while_the_simulator_is_still_generating(
    base_url: str, settings_env: dict[str, str], sim: Simulator, user: str
) -> None:
    sim.configure(latency=Latency(ttft=0.2, tokens_per_second=40), reply_tokens=80)  # ~2 s of output

    with open_stream(base_url, body(), user) as (response, events, _):
        assert response.status_code == 200
        first = next(events)
        upstream_done_at_first_delta = sim.message_requests()[-1].completed
        rest = list(events)

    assert first.name == "delta"
    assert not upstream_done_at_first_delta  # nothing waited for the whole answer
    deltas = [first, *(e for e in rest if e.name == "delta")]
    assert rest[-1].name == "done"
    # Deltas arrive spread over the ~2 s the simulator takes to produce them, not in one burst.
    assert deltas[-1].at - first.at > 1.0
    assert max(b.at - a.at for a, b in itertools.pairwise(deltas)) < 0.5
    assert sim.message_requests()[-1].completed


def test_identity_is_the_authorizer_sub_never_x_user_id(
    base_url: str, settings_env: dict[str, str], sim: Simulator, user: str, capsys: Any
) -> None:
    someone_else = f"someone-else-{uuid.uuid4().hex[:12]}"
    reply = post_stream(base_url, body(), user, headers={"X-User-Id": someone_else})
    assert reply.status == 200 and reply.names[-1] == "done"
    # The ledger is keyed by the sub: the usage lands on `user`, not on the X-User-Id value.
    ledger = get_client().ledger
    assert ledger.report(user)["requests"] == 1
    assert ledger.report(someone_else)["requests"] == 0


# ---- before the first byte: ordinary JSON errors -----------------------------------------------


def assert_json_error(reply: Reply, status: int, code: str) -> dict[str, Any]:
    assert reply.status == status, reply.json
    assert reply.headers["content-type"].startswith("application/json")
    error = reply.json["error"]
    assert error["code"] == code and error["message"]
    assert reply.headers["x-request-id"] == error["request_id"]
    assert set(reply.json) == {"error"}
    return dict(error)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"{not json", 400),
        (b"", 400),
        (json.dumps({"prompt": "hi", "user_id": "SECRET-VALUE"}).encode(), 422),  # unknown fields are rejected
        (json.dumps({"prompt": "   "}).encode(), 422),
        (json.dumps({"system": "no prompt"}).encode(), 422),
        (json.dumps({"prompt": "hi", "max_tokens": 0}).encode(), 422),
        (json.dumps({"prompt": "hi", "task": "poetry"}).encode(), 422),
        (json.dumps(["prompt"]).encode(), 422),
    ],
)
def test_invalid_bodies_are_validation_errors(
    base_url: str, settings_env: dict[str, str], sim: Simulator, user: str, raw: bytes, status: int
) -> None:
    reply = post_stream(base_url, None, user, raw=raw)
    error = assert_json_error(reply, status, "VALIDATION_ERROR")
    assert "SECRET-VALUE" not in error["message"]  # the input is never echoed back
    assert sim.message_requests() == []


def test_max_tokens_above_the_ceiling_is_422(
    base_url: str, settings_env: dict[str, str], sim: Simulator, user: str
) -> None:
    reply = post_stream(base_url, body(max_tokens=4097), user)
    assert_json_error(reply, 422, "VALIDATION_ERROR")
    assert sim.message_requests() == []


def test_oversize_input_is_413(base_url: str, settings_env: dict[str, str], sim: Simulator, user: str) -> None:
    reply = post_stream(base_url, body("x" * 100_001), user)
    assert_json_error(reply, 413, "INPUT_TOO_LARGE")
    assert sim.message_requests() == []


@pytest.mark.parametrize(
    "headers",
    [
        {},  # no request context at all
        {"X-User-Id": "local-user"},  # a client header is never an identity
        {"x-amzn-request-context": "not json"},
        {"x-amzn-request-context": json.dumps({"requestId": "r-1", "authorizer": {"claims": {}}})},
    ],
)
def test_without_an_authorizer_identity_it_is_401(
    base_url: str, settings_env: dict[str, str], sim: Simulator, headers: dict[str, str]
) -> None:
    with httpx2.Client(timeout=TIMEOUT) as http:
        response = http.post(f"{base_url}/stream", json=body(), headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHORIZED"
    assert response.headers["x-request-id"] == response.json()["error"]["request_id"]
    assert sim.message_requests() == []


def test_overload_until_fallback_is_exhausted_is_503_with_retry_after(
    base_url: str, settings_env: dict[str, str], sim: Simulator, user: str
) -> None:
    sim.script(*[Fault.status(529, retry_after_ms=20)] * 6)

    reply = post_stream(base_url, body(), user)

    assert_json_error(reply, 503, "UPSTREAM_UNAVAILABLE")
    assert reply.headers["retry-after"] == "1"
    models = [r.body["model"] for r in sim.message_requests()]
    assert models == ["claude-sonnet-5-5"] * 3 + ["claude-haiku-5-5"] * 3


def test_529_then_success_streams_normally(
    base_url: str, settings_env: dict[str, str], sim: Simulator, user: str
) -> None:
    sim.script(Fault.status(529), Fault.truncate(after_deltas=0))
    reply = post_stream(base_url, body(), user)
    assert reply.status == 200 and reply.names[-1] == "done"
    assert [r.status for r in sim.message_requests()] == [529, 200, 200]


def test_upstream_400_is_502_and_not_retried(
    base_url: str, settings_env: dict[str, str], sim: Simulator, user: str
) -> None:
    sim.script(Fault.status(400))
    reply = post_stream(base_url, body(), user)
    assert_json_error(reply, 502, "UPSTREAM_ERROR")
    assert len(sim.message_requests()) == 1


def test_rate_limit_is_429_with_retry_after(
    base_url: str, settings_env: dict[str, str], sim: Simulator, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RATE_LIMIT_PER_MINUTE", "1")
    reset_client()
    assert post_stream(base_url, body(), user).status == 200

    reply = post_stream(base_url, body(), user)

    assert_json_error(reply, 429, "RATE_LIMITED")
    assert 1 <= int(reply.headers["retry-after"]) <= 60
    assert len(sim.message_requests()) == 1


def test_ratelimit_headers_follow_the_plan_of_the_callers_group(
    base_url: str, settings_env: dict[str, str], sim: Simulator, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLANS", json.dumps({"free": {"requests_per_minute": 2, "daily_budget_usd": 1}}))
    reset_client()
    context = json.loads(request_context(user, f"req-{uuid.uuid4().hex}"))
    context["authorizer"]["claims"]["cognito:groups"] = "free"
    as_free = {"x-amzn-request-context": json.dumps(context)}

    replies = [post_stream(base_url, body(), None, headers=as_free) for _ in range(3)]

    assert [r.status for r in replies] == [200, 200, 429]
    assert [r.headers["ratelimit-remaining"] for r in replies] == ["1", "0", "0"]
    assert {r.headers["ratelimit-limit"] for r in replies} == {"2"}
    assert replies[2].headers["retry-after"] == replies[2].headers["ratelimit-reset"]


def test_the_lambda_deadline_from_the_adapter_is_honoured(
    base_url: str, settings_env: dict[str, str], sim: Simulator, user: str
) -> None:
    lambda_context = json.dumps({"request_id": "inv-1", "deadline": int((time.time() + 0.1) * 1000)})
    reply = post_stream(base_url, body(), user, headers={"x-amzn-lambda-context": lambda_context})
    assert_json_error(reply, 504, "UPSTREAM_TIMEOUT")
    assert sim.message_requests() == []  # no time left: no call


def test_unknown_routes_and_methods_answer_in_the_error_shape(base_url: str, settings_env: dict[str, str]) -> None:
    with httpx2.Client(timeout=TIMEOUT) as http:
        missing = http.post(f"{base_url}/nope")
        wrong = http.get(f"{base_url}/stream")
        health = http.get(f"{base_url}/healthz")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert health.status_code == 200 and health.json() == {"status": "ok"}


# ---- after the first byte: an error event, then the end ----------------------------------------


def test_error_event_mid_stream_becomes_upstream_unavailable_and_the_stream_ends(
    base_url: str, settings_env: dict[str, str], sim: Simulator, user: str, capsys: Any
) -> None:
    sim.script(Fault.stream_error(after_deltas=2, error_type="overloaded_error"))

    reply = post_stream(base_url, body(), user)  # returns only because the server closed the stream

    assert reply.status == 200
    assert reply.names == ["delta", "delta", "error"]
    assert reply.events[-1].data == {"code": "UPSTREAM_UNAVAILABLE", "message": reply.events[-1].data["message"]}
    assert len(sim.message_requests()) == 1  # never retried once the caller has text
    out = capsys.readouterr().out
    assert metric_values(out, "Errors_UPSTREAM_UNAVAILABLE") == [1]
    assert metric_values(out, "OutputTokens")  # what was produced is still billed


def test_truncated_upstream_stream_is_upstream_error(
    base_url: str, settings_env: dict[str, str], sim: Simulator, user: str, capsys: Any
) -> None:
    sim.script(Fault.truncate(after_deltas=3))

    reply = post_stream(base_url, body(), user)

    assert reply.names == ["delta"] * 3 + ["error"]
    assert reply.events[-1].data["code"] == "UPSTREAM_ERROR"
    assert set(reply.events[-1].data) == {"code", "message"}
    assert len(sim.message_requests()) == 1
    out = capsys.readouterr().out
    assert metric_values(out, "Errors_UPSTREAM_ERROR") == [1]
    assert metric_values(out, "OutputTokens")[0] > 0


def test_client_disconnect_closes_upstream_and_still_records_usage(
    base_url: str, settings_env: dict[str, str], sim: Simulator, user: str, capsys: Any
) -> None:
    sim.configure(latency=Latency(ttft=0.05, tokens_per_second=50), reply_tokens=500)  # ~10 s if left alone
    with open_stream(base_url, body(), user) as (response, events, _):
        assert response.status_code == 200
        assert next(events).name == "delta"
    left_at = time.monotonic()  # leaving the block closed the connection mid-stream

    assert wait_for(lambda: sim.message_requests()[-1].disconnected, timeout=5)
    assert time.monotonic() - left_at < 2  # closed at the next token, not at the end of the answer
    upstream = sim.message_requests()[-1]
    assert not upstream.completed

    captured: list[str] = []

    def metrics_emitted() -> bool:
        captured.append(capsys.readouterr().out)
        return bool(metric_values("".join(captured), "StreamDuration"))

    assert wait_for(metrics_emitted, timeout=5)
    out = "".join(captured)
    [record] = [r for r in emf_records(out) if "StreamDuration" in r]
    assert (record["feature"], record["model"]) == ("stream", "claude-sonnet-5-5")
    assert record["OutputTokens"][0] > 0 and record["CostUSD"][0] > 0
    assert metric_values(out, "TimeToFirstToken")
    report = get_client().ledger.report(user)  # and the ledger settled what was produced
    assert report["requests"] == 1 and report["usage"]["output_tokens"] == record["OutputTokens"][0]


@pytest.mark.parametrize("leave_after", [1, 25, 75])
def test_a_caller_leaving_mid_stream_is_billed_at_least_what_it_received(
    base_url: str, settings_env: dict[str, str], sim: Simulator, user: str, leave_after: int
) -> None:
    # 100 deltas over ~2 s; the caller reads `leave_after` of them and hangs up.
    sim.configure(latency=Latency(ttft=0.05, tokens_per_second=200), reply_tokens=400)
    received = ""
    with open_stream(base_url, body("Tell me a long story.", max_tokens=1000), user) as (response, events, _):
        assert response.status_code == 200
        for event in itertools.islice(events, leave_after):
            received += event.data["text"]

    assert wait_for(lambda: get_client().ledger.report(user)["requests"] == 1, timeout=10)
    report = get_client().ledger.report(user)
    # At least one token per byte the caller got (the model stops at max_tokens), never more than
    # max_tokens: disconnecting never makes an answer cheap.
    assert min(len(received.encode()), 1000) <= report["usage"]["output_tokens"] <= 1000
    assert report["cost_usd"] > 0


def test_client_disconnect_before_the_first_byte_abandons_the_call(
    base_url: str, settings_env: dict[str, str], sim: Simulator, user: str
) -> None:
    sim.configure(latency=Latency(ttft=0.5, tokens_per_second=50), reply_tokens=500)
    port = int(base_url.rsplit(":", 1)[1])
    payload = json.dumps(body()).encode()
    head = (
        f"POST /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nx-amzn-request-context: {request_context(user, 'req-gone')}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(head + payload)
        assert wait_for(lambda: len(sim.message_requests()) == 1, timeout=5)
    # We left during the model's ttft; the upstream call is closed at its first event.
    assert wait_for(lambda: sim.message_requests()[-1].disconnected, timeout=5)
    assert not sim.message_requests()[-1].completed


# ---- usage accounting: streamed == unstreamed ---------------------------------------------------


def post_generate(payload: dict[str, Any], user: str) -> dict[str, Any]:
    """POST /generate through its real handler with an API Gateway event (what /generate reports)."""
    event = json.loads((EVENTS / "generate.json").read_text())
    event["body"] = json.dumps(payload)
    event["requestContext"]["authorizer"]["claims"]["sub"] = user
    from functions.generate import app as generate_app  # imported with settings in place: it builds the client

    response = generate_app.handler(event, LambdaContext("GenerateFunction"))
    assert response["statusCode"] == 200, response["body"]
    return dict(json.loads(response["body"]))


def test_done_reports_the_same_usage_and_cost_as_generate(
    base_url: str, settings_env: dict[str, str], sim: Simulator, user: str
) -> None:
    payload = body("Summarise why idempotency keys matter for payment APIs.", max_tokens=300)
    generated = post_generate(payload, user)
    streamed = post_stream(base_url, payload, user)

    done = streamed.events[-1].data
    assert streamed.text == generated["text"]
    assert done["usage"] == generated["usage"]
    assert done["cost_usd"] == generated["cost_usd"]
    assert (done["model"], done["stop_reason"]) == (generated["model"], generated["stop_reason"])


def test_cache_writes_and_reads_cost_the_same_streamed_and_unstreamed(
    base_url: str, settings_env: dict[str, str], sim: Simulator, user: str
) -> None:
    payload = body("Review this: retries without jitter synchronise clients.", system=LONG_SYSTEM)

    stream_write = post_stream(base_url, payload, user).events[-1].data  # first sight: cache write
    sim.cache.clear()
    generate_write = post_generate(payload, user)
    generate_read = post_generate(payload, user)
    stream_read = post_stream(base_url, payload, user).events[-1].data

    assert stream_write["usage"]["cache_creation_input_tokens"] > 0
    assert stream_write["usage"] == generate_write["usage"]
    assert stream_write["cost_usd"] == generate_write["cost_usd"]
    assert stream_read["usage"]["cache_read_input_tokens"] == stream_write["usage"]["cache_creation_input_tokens"]
    assert stream_read["usage"] == generate_read["usage"]
    assert stream_read["cost_usd"] == generate_read["cost_usd"]
    assert stream_read["cost_usd"] < stream_write["cost_usd"]


def test_concurrent_streams_do_not_wait_for_each_other(
    base_url: str, settings_env: dict[str, str], sim: Simulator
) -> None:
    sim.configure(latency=Latency(ttft=0.2, tokens_per_second=40), reply_tokens=60)  # ~1.7 s each
    replies: list[Reply] = []

    def call() -> None:
        replies.append(post_stream(base_url, body(), f"user-{uuid.uuid4().hex[:12]}"))

    callers = [threading.Thread(target=call) for _ in range(3)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=15)

    assert [r.names[-1] for r in replies] == ["done"] * 3
    # Side by side: every stream had its first delta before any of them had finished.
    assert max(r.events[0].at for r in replies) < min(r.events[-1].at for r in replies)
