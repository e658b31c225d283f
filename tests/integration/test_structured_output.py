"""Structured answers that break the schema: one repair attempt, then UPSTREAM_ERROR.

The simulator always honours the schema, so these tests use a stand-in that answers with whatever
the test queues, over real HTTP.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from claudekit import errors
from claudekit.deadline import Deadline
from claudekit.tasks import classify, generate, ideas
from claudekit.tasks.classify import ClassifyBody
from claudekit.tasks.generate import GenerateBody
from claudekit.tasks.ideas import IdeasBody


class CannedClaude(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replies: list[str] = []
        self.bodies: list[dict[str, Any]] = []


class _Handler(BaseHTTPRequestHandler):
    server: CannedClaude

    def do_POST(self) -> None:
        self.server.bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
        text = self.server.replies.pop(0)
        body = json.dumps(
            {
                "id": "msg_canned",
                "type": "message",
                "role": "assistant",
                "model": self.server.bodies[-1]["model"],
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 10, "output_tokens": 5},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[CannedClaude]:
    server = CannedClaude()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(make_client: Any, canned: CannedClaude) -> Any:
    return make_client(anthropic_base_url=f"http://127.0.0.1:{canned.server_address[1]}")


LABELS = ClassifyBody(text="The parcel was late.", labels=["billing", "shipping"])


def test_a_label_outside_the_list_is_repaired_once(client: Any, canned: CannedClaude) -> None:
    canned.replies += ['{"label": "banana"}', '{"label": "shipping"}']
    answer = classify.classify(LABELS, "u-repaired", Deadline.after(10), client=client)
    assert answer.label == "shipping"
    # The answer reports what the caller paid for: both calls, as the ledger charged them.
    assert answer.usage.input_tokens == 20 and answer.usage.output_tokens == 10
    assert len(canned.bodies) == 2
    charged = client.ledger.report("u-repaired")["cost_usd"]
    assert answer.cost_usd == pytest.approx(charged) and charged > 0
    repair = canned.bodies[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": '{"label": "banana"}'}  # the model sees its answer
    assert "label" in repair[-1]["content"]  # and what was wrong with it


def test_a_label_outside_the_list_twice_is_upstream_error(client: Any, canned: CannedClaude) -> None:
    canned.replies += ['{"label": "banana"}', "not even json"]
    with pytest.raises(errors.StructuredOutputError) as caught:
        classify.classify(LABELS, "u", Deadline.after(10), client=client)
    assert (caught.value.code, caught.value.status) == ("UPSTREAM_ERROR", 502)
    assert len(canned.bodies) == 2


def test_the_wrong_number_of_ideas_is_never_returned(client: Any, canned: CannedClaude) -> None:
    idea = {"title": "T", "excerpt": "E", "target_audience": "A"}
    canned.replies += [json.dumps({"ideas": [idea]}), json.dumps({"ideas": [idea, idea]})]
    with pytest.raises(errors.StructuredOutputError):
        ideas.ideas(IdeasBody(topic="x", count=3), "u", Deadline.after(10), client=client)


@pytest.mark.parametrize(
    "body",
    [
        "{}",
        "[]",
        '{"type": "message", "content": null}',
        '{"id": "x", "type": "message", "role": "assistant", "model": "m", "content": [{"type": "text"}],'
        ' "stop_reason": "end_turn", "usage": {}}',
    ],
)
def test_json_of_the_wrong_shape_is_upstream_error_not_a_crash(make_client: Any, body: str) -> None:
    """A 200 with valid JSON that is not a message: retried, then 502, never a 500."""
    raw = body.encode()

    class Wrong(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Wrong)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = make_client(anthropic_base_url=f"http://127.0.0.1:{server.server_address[1]}", model_fallback="")
        with pytest.raises(errors.UpstreamMalformed) as caught:
            generate.generate(GenerateBody(prompt="hi"), "u", Deadline.after(10), client=client)
        assert caught.value.status == 502
    finally:
        server.shutdown()
        server.server_close()
