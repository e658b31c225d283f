"""POST /stream through the local stack: the same ASGI app as deployed, on the same port."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from local.simulator import Simulator
from tests.e2e.conftest import StackClient

pytestmark = pytest.mark.e2e


def sse(stack: StackClient, body: bytes, user: str) -> tuple[int, list[tuple[str, dict[str, object]]]]:
    request = urllib.request.Request(stack.url + "/stream", data=body, method="POST")
    request.add_header("content-type", "application/json")
    request.add_header("X-User-Id", user)
    events: list[tuple[str, dict[str, object]]] = []
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        # One of each, as a client behind API Gateway sees them; no server banner.
        assert len(response.headers.get_all("date") or []) == 1
        assert response.headers.get_all("server") is None
        name = ""
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: ") :])))
        return response.status, events


def test_stream_sends_deltas_then_done(stack: StackClient, sim: Simulator, user: str) -> None:
    status, events = sse(stack, b'{"prompt": "Explain backoff with jitter"}', user)

    assert status == 200
    names = [name for name, _ in events]
    assert names[-1] == "done"
    assert set(names[:-1]) == {"delta"}
    assert len(names) > 2
    done = events[-1][1]
    assert set(done) == {"model", "stop_reason", "usage", "cost_usd"}
    text = "".join(str(data["text"]) for name, data in events if name == "delta")
    assert text
    assert stack.usage(user)["cost_usd"] == pytest.approx(done["cost_usd"])


def test_stream_bad_input_is_a_json_error(stack: StackClient, sim: Simulator, user: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        sse(stack, b'{"prompt": "hi", "max_tokens": 999999}', user)
    assert caught.value.code == 422
    assert json.loads(caught.value.read())["error"]["code"] == "VALIDATION_ERROR"
    assert sim.message_requests() == []
