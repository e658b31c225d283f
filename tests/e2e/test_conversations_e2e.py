"""Conversations and Idempotency-Key through the local stack: the shim's routes from the template,
the REST function and the stream function's conversation route."""

from __future__ import annotations

import json
import urllib.request
import uuid

from local.simulator import Simulator
from tests.e2e.conftest import StackClient


def post(
    stack: StackClient, path: str, body: object, user: str, key: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(stack.url + path, data=json.dumps(body).encode(), method="POST")
    request.add_header("content-type", "application/json")
    request.add_header("X-User-Id", user)
    if key:
        request.add_header("Idempotency-Key", key)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()


def test_a_conversation_through_the_stack(stack: StackClient, sim: Simulator, user: str) -> None:
    created = stack.post("/conversations", {}, user)
    assert created.status == 201
    cid = created.body["id"]

    key = str(uuid.uuid4())
    status, headers, first = post(stack, f"/conversations/{cid}/messages", {"prompt": "Name a river."}, user, key)
    assert status == 200
    status, headers, again = post(stack, f"/conversations/{cid}/messages", {"prompt": "Name a river."}, user, key)
    assert (status, again, headers["idempotent-replayed"]) == (200, first, "true")

    status, headers, stream = post(stack, f"/conversations/{cid}/stream", {"prompt": "And a lake?"}, user)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert stream.decode().rstrip().splitlines()[-2] == "event: done"

    history = stack.call("GET", f"/conversations/{cid}", user=user)
    assert history.status == 200
    assert [m["role"] for m in history.body["messages"]] == ["user", "assistant"] * 2
    assert stack.call("GET", f"/conversations/{cid}", user="someone-else").status == 404
    assert len(sim.message_requests()) == 2
