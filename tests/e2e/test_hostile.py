"""A hostile caller against the local stack: whatever one user sends, nobody else is hurt.

- Strings JSON accepts but nothing can send (lone surrogates), control characters and blank
  text, in every string field of every route, are 422 and never reach Claude; innocent requests
  right after are served by their routed models (no breaker opened, no fallback taken).
- Malformed bodies (not UTF-8, not JSON, NaN, 10,000 levels deep, over 10 MB) are 400 on every
  route, REST and stream alike, never 5xx.
- One user flooding the queue is refused whole at the in-flight cap; another user still gets in.
- 50 concurrent requests get 50 distinct request ids (one request per function instance).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from local.simulator import Latency, Simulator
from tests.e2e.conftest import STACK_ENV, Reply, StackClient

pytestmark = pytest.mark.e2e

ROUTED = "claude-sonnet-5-5"  # generate, ideas and stream route to the balanced tier
FAST = "claude-haiku-5-5"  # classify (also the fallback model, so it proves less)

# A valid body per POST route, and the path to each of its string fields.
BODIES: dict[str, dict[str, Any]] = {
    "/generate": {"prompt": "Say hello.", "system": "Be brief."},
    "/classify": {"text": "The parcel was late.", "labels": ["shipping", "billing"]},
    "/ideas": {"topic": "serverless cost control", "count": 2},
    "/stream": {"prompt": "Say hello.", "system": "Be brief."},
    "/jobs": {"items": [{"task": "generate", "input": "Say hello."}]},
}
FIELDS: list[tuple[str, tuple[str | int, ...]]] = [
    ("/generate", ("prompt",)),
    ("/generate", ("system",)),
    ("/classify", ("text",)),
    ("/classify", ("labels", 0)),
    ("/ideas", ("topic",)),
    ("/stream", ("prompt",)),
    ("/stream", ("system",)),
    ("/jobs", ("items", 0, "input")),
]
UNSENDABLE = ["\udfff", "hello \ud800 world", "\ud83d"]  # lone surrogates: valid JSON, not Unicode text
CONTROL = ["a\x00b", "\x1b[2Jcleared", "bell\x07", "del\x7f", "next\x85line"]
BLANK = ["   ", "\n\t \r\n", "\u3000\u2003", "\u200b", "\ufeff\u200d\u2060"]  # zero-width: invisible, blank
EXPECTED_HEADERS = {"x-content-type-options": "nosniff", "cache-control": "no-store"}
ROUTES = [("POST", path) for path in BODIES] + [("GET", "/usage"), ("GET", f"/jobs/{uuid.uuid4()}")]


def with_value(body: dict[str, Any], path: tuple[str | int, ...], value: str) -> bytes:
    copy: Any = json.loads(json.dumps(body))
    node = copy
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return json.dumps(copy).encode()  # ensure_ascii: a lone surrogate travels as "\udfff", as JSON allows


def assert_error(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, reply.body
    assert reply.body["error"]["code"] == code
    assert reply.body["error"]["message"]
    assert reply.body["error"]["request_id"] == reply.headers["x-request-id"]
    for name, value in EXPECTED_HEADERS.items():
        assert reply.headers.get(name) == value, name


def raw(stack: StackClient, method: str, path: str, data: bytes, user: str) -> Reply:
    return stack.call(method, path, user=user, raw=data)


def sse_model(stack: StackClient, body: dict[str, Any], user: str) -> str:
    request = urllib.request.Request(stack.url + "/stream", data=json.dumps(body).encode(), method="POST")
    request.add_header("content-type", "application/json")
    request.add_header("X-User-Id", user)
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        lines = response.read().decode().splitlines()
    done = lines[lines.index("event: done") + 1]
    return str(json.loads(done[len("data: ") :])["model"])


def wait_job(stack: StackClient, job_id: str, user: str, timeout: float = 30) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        reply = stack.call("GET", f"/jobs/{job_id}", user=user)
        if reply.body["status"] in ("succeeded", "failed"):
            return dict(reply.body)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


# ---- unsendable, control and blank strings ---------------------------------------------------


@pytest.mark.parametrize("kind", ["unsendable", "control", "blank"])
def test_bad_text_in_every_field_is_422_and_reaches_nobody(
    stack: StackClient, sim: Simulator, user: str, kind: str
) -> None:
    values = {"unsendable": UNSENDABLE, "control": CONTROL, "blank": BLANK}[kind]
    for path, field in FIELDS:
        for value in values:
            reply = raw(stack, "POST", path, with_value(BODIES[path], field, value), user)
            assert_error(reply, 422, "VALIDATION_ERROR")
            assert ".".join(map(str, field)) in reply.body["error"]["message"]
            assert "\\u" not in reply.body["error"]["message"]  # the input is never echoed back

    assert sim.message_requests() == []


def test_innocent_requests_after_a_flood_of_unsendable_ones_get_their_routed_models(
    stack: StackClient, sim: Simulator, user: str
) -> None:
    # Far more than the breaker threshold (5): none of them may count as an upstream failure.
    for _ in range(3):
        for path, field in FIELDS:
            for value in UNSENDABLE:
                assert raw(stack, "POST", path, with_value(BODIES[path], field, value), user).status == 422
    assert sim.message_requests() == []

    innocent = f"innocent-{uuid.uuid4().hex[:8]}"
    generate = stack.post("/generate", BODIES["/generate"], innocent)
    assert generate.status == 200 and generate.body["model"] == ROUTED
    ideas = stack.post("/ideas", BODIES["/ideas"], innocent)
    assert ideas.status == 200 and ideas.body["model"] == ROUTED
    classify = stack.post("/classify", BODIES["/classify"], innocent)
    assert classify.status == 200 and classify.body["model"] == FAST
    assert sse_model(stack, BODIES["/stream"], innocent) == ROUTED
    posted = stack.post("/jobs", BODIES["/jobs"], innocent)
    assert posted.status == 202
    job = wait_job(stack, posted.body["jobs"][0]["id"], innocent)
    assert job["status"] == "succeeded" and job["result"]["model"] == ROUTED
    assert [r.body["model"] for r in sim.message_requests()] == [ROUTED, ROUTED, FAST, ROUTED, ROUTED]


def test_text_with_line_breaks_tabs_and_astral_characters_is_served(
    stack: StackClient, sim: Simulator, user: str
) -> None:
    reply = stack.post("/generate", {"prompt": "Line one\r\n\tline two 🚀 \U0001f9d1\u200d\U0001f4bb \U0001d518"}, user)
    assert reply.status == 200
    assert len(sim.message_requests()) == 1


# ---- malformed bodies ---------------------------------------------------------------------------

MALFORMED = {
    "not utf-8": b'{"prompt": "\xff\xfe caf\xe9"}',
    "not json": b'{"prompt": ',
    "nan": b'{"prompt": "hi", "max_tokens": NaN}',
    "10,000 levels": b'{"prompt": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    "deep object": b'{"a":' * 100 + b"1" + b"}" * 100,
}


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p.split('/')[1]}" for m, p in ROUTES])
def test_malformed_bodies_are_400_on_every_route(
    stack: StackClient, sim: Simulator, user: str, method: str, path: str
) -> None:
    for name, data in MALFORMED.items():
        reply = raw(stack, method, path, data, user)
        assert reply.status == 400, (name, reply.body)
        assert_error(reply, 400, "VALIDATION_ERROR")
    assert sim.message_requests() == []


@pytest.mark.parametrize("path", ["/generate", "/stream", "/jobs"])
def test_a_body_over_10_mb_is_400(stack: StackClient, sim: Simulator, user: str, path: str) -> None:
    data = b'{"prompt": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    assert_error(raw(stack, "POST", path, data, user), 400, "VALIDATION_ERROR")
    assert sim.message_requests() == []


# ---- the queue is shared fairly -------------------------------------------------------------------


def test_one_user_flooding_the_queue_is_refused_while_another_gets_through(
    stack: StackClient, sim: Simulator, user: str
) -> None:
    cap = int(STACK_ENV["MAX_JOBS_IN_FLIGHT"])
    sim.configure(latency=Latency(ttft=0.5))  # the jobs stay in flight while we look
    item = {"task": "summarize", "input": "Summarise: retries need jitter."}

    flood = stack.post("/jobs", {"items": [item] * 100}, user)  # more than may ever be in flight
    assert_error(flood, 422, "VALIDATION_ERROR")
    assert "retry-after" not in flood.headers
    first = stack.post("/jobs", {"items": [item] * cap}, user)
    assert first.status == 202
    more = stack.post("/jobs", {"items": [item]}, user)
    assert_error(more, 429, "RATE_LIMITED")
    assert "in flight" in more.body["error"]["message"]
    other = f"other-{uuid.uuid4().hex[:8]}"
    second = stack.post("/jobs", {"items": [item]}, other)
    assert second.status == 202

    # The posts and three jobs fit the flooder's six requests a minute: every job runs now.
    for job_id, owner in [*((j["id"], user) for j in first.body["jobs"]), (second.body["jobs"][0]["id"], other)]:
        assert wait_job(stack, job_id, owner)["status"] == "succeeded"
    assert stack.usage(user)["requests"] == cap


# ---- one request per instance ---------------------------------------------------------------------


def test_fifty_concurrent_requests_get_fifty_distinct_request_ids(stack: StackClient, sim: Simulator) -> None:
    def one(index: int) -> Reply:
        return stack.post("/generate", {"prompt": f"Concurrent hello {index}"}, f"conc-{index}-{uuid.uuid4().hex[:6]}")

    with ThreadPoolExecutor(50) as pool:
        replies = list(pool.map(one, range(50)))

    assert [r.status for r in replies] == [200] * 50
    ids = [r.headers["x-request-id"] for r in replies]
    assert len(set(ids)) == 50
    assert [r.body["request_id"] for r in replies] == ids  # the body names its own request, not a neighbour's


def test_every_response_carries_a_request_id_even_the_shims_own(stack: StackClient, user: str) -> None:
    missing = stack.call("GET", "/nowhere", user=user)
    assert_error(missing, 404, "NOT_FOUND")
    usage = stack.call("GET", "/usage", user=user)
    assert usage.status == 200
    for name, value in EXPECTED_HEADERS.items():
        assert usage.headers[name] == value


def test_odd_header_bytes_and_undeclared_methods_get_the_envelope(stack: StackClient) -> None:
    """A header that is not UTF-8 is passed on, never a 500; a method the template does not declare
    is 404 NOT_FOUND, as API Gateway's MISSING_AUTHENTICATION_TOKEN response is mapped."""
    import http.client
    from urllib.parse import urlparse

    target = urlparse(stack.url)
    conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=30)
    conn.putrequest("GET", "/usage")
    conn.putheader("User-Agent", b"caf\xe9")
    conn.putheader("X-Trace", b"\xed\xbf\xbf")
    conn.endheaders()
    odd = conn.getresponse()
    assert odd.status == 200, odd.read()
    assert odd.getheader("x-request-id")
    conn.close()
    for method, path in [("OPTIONS", "/generate"), ("PUT", "/generate"), ("GET", "/jobs"), ("POST", "/jobs/abc")]:
        reply = stack.call(method, path, user="someone")
        assert reply.status == 404, (method, path)
        assert reply.body["error"]["code"] == "NOT_FOUND"
        assert reply.headers["x-request-id"] == reply.body["error"]["request_id"]
