"""Scripted faults, checked against what SDK 2.14 raises for each.

Findings recorded here (anthropic 2.14.0, HTTP layer httpx2):

* status errors map to the SDK's class for the status (429 ``RateLimitError``, 529 ``OverloadedError``...),
  with ``.status_code``, ``.type`` (the body's ``error.type``) and the headers on ``.response.headers``.
* a hang past the client's timeout raises ``APITimeoutError``; a reset raises ``APIConnectionError``.
* malformed JSON with status 200 and ``application/json`` is NOT wrapped by the SDK: the raw
  ``json.JSONDecodeError`` (a ``ValueError``) escapes ``messages.create``.
* ``event: error`` inside a stream raises ``APIStatusError`` with ``status_code == 200`` and
  ``.type == "overloaded_error"`` (the SDK does not retry it).
* a stream cut before ``message_stop`` (chunked body never terminated) raises the transport's
  ``httpx2.RemoteProtocolError`` ("incomplete chunked read"), NOT an ``anthropic`` exception.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest

from local.simulator import Fault, Simulator

MODEL = "claude-haiku-5-5"


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[Simulator]:
    with Simulator().start() as sim:
        yield sim


@pytest.fixture
def sim(shared_sim: Simulator) -> Simulator:
    shared_sim.reset()
    return shared_sim


@pytest.fixture
def client(sim: Simulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.url, api_key="test", max_retries=0)


def create(client: anthropic.Anthropic, text: str = "hello", **options: Any) -> Any:
    return client.with_options(**options).messages.create(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": text}]
    )


@pytest.mark.parametrize(
    ("status", "exc_class", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (413, anthropic.ContentTooLargeError, "request_too_large"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (504, anthropic.GatewayTimeoutError, "timeout_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_status_faults_map_to_sdk_exceptions(
    client: anthropic.Anthropic, sim: Simulator, status: int, exc_class: type[Exception], error_type: str
) -> None:
    sim.script(Fault.status(status))
    with pytest.raises(exc_class) as caught:
        create(client)
    err = caught.value
    assert isinstance(err, anthropic.APIStatusError)
    assert (err.status_code, err.type) == (status, error_type)
    assert err.request_id is not None
    assert err.request_id.startswith("req_sim_")
    assert create(client).stop_reason == "end_turn"  # consumed: the next request succeeds


def test_retry_after_headers_are_visible(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.script(Fault.status(429, retry_after=1), Fault.status(500, retry_after_ms=200))
    with pytest.raises(anthropic.RateLimitError) as limited:
        create(client)
    assert limited.value.response.headers["retry-after"] == "1"
    with pytest.raises(anthropic.InternalServerError) as failed:
        create(client)
    assert failed.value.response.headers["retry-after-ms"] == "200"


def test_spend_limit_message(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.script(Fault.status(429, message="Your workspace has reached its spend limit"))
    with pytest.raises(anthropic.RateLimitError) as caught:
        create(client)
    assert caught.value.api_message == "Your workspace has reached its spend limit"
    assert caught.value.type == "rate_limit_error"


def test_sdk_retries_honour_the_script(sim: Simulator) -> None:
    sim.script(Fault.status(529, retry_after_ms=10), Fault.status(429, retry_after_ms=10))
    client = anthropic.Anthropic(base_url=sim.url, api_key="test", max_retries=2)
    assert create(client).stop_reason == "end_turn"
    assert [r.status for r in sim.message_requests()] == [529, 429, 200]
    assert [r.headers["x-stainless-retry-count"] for r in sim.message_requests()] == ["0", "1", "2"]


def test_hang_times_out(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.script(Fault.hang(20))
    started = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        create(client, timeout=0.3)
    assert time.monotonic() - started < 10  # the client's timeout ended it, not the 20 s hang
    assert sim.message_requests()[-1].fault == Fault.hang(20)
    assert sim.message_requests()[-1].status is None


def test_reset_is_a_connection_error(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.script(Fault.reset())
    with pytest.raises(anthropic.APIConnectionError) as caught:
        create(client)
    assert not isinstance(caught.value, anthropic.APITimeoutError)
    assert create(client).stop_reason == "end_turn"


def test_malformed_json_escapes_as_json_decode_error(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.script(Fault.malformed())
    with pytest.raises(json.JSONDecodeError):
        create(client)
    assert sim.message_requests()[-1].status == 200


def stream_text(client: anthropic.Anthropic, text: str = "stream this") -> list[str]:
    with client.messages.stream(model=MODEL, max_tokens=200, messages=[{"role": "user", "content": text}]) as stream:
        return list(stream.text_stream)


def test_stream_error_event_raises_api_status_error(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.configure(reply_tokens=30)
    sim.script(Fault.stream_error(after_deltas=2))
    received: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(
            model=MODEL, max_tokens=200, messages=[{"role": "user", "content": "stream this"}]
        ) as stream,
    ):
        received.extend(stream.text_stream)
    err = caught.value
    assert (err.status_code, err.type) == (200, "overloaded_error")
    assert len(received) == 2
    record = sim.message_requests()[-1]
    assert record.events[-1] == "error"
    assert record.status == 200
    assert stream_text(client)  # the connection is reusable afterwards


def test_stream_error_on_non_streaming_request_is_a_status_error(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.script(Fault.stream_error(after_deltas=1, error_type="api_error"))
    with pytest.raises(anthropic.InternalServerError):
        create(client)


def test_truncated_stream_raises_remote_protocol_error(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.configure(reply_tokens=30)
    sim.script(Fault.truncate(after_deltas=3))
    received: list[str] = []
    with (
        pytest.raises(httpx2.RemoteProtocolError),
        client.messages.stream(
            model=MODEL, max_tokens=200, messages=[{"role": "user", "content": "stream this"}]
        ) as stream,
    ):
        received.extend(stream.text_stream)
    assert len(received) == 3
    assert "message_stop" not in sim.message_requests()[-1].events


def test_faults_matched_by_marker(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.script(Fault.status(529, match="job-17"))
    assert create(client, "job-16 please").stop_reason == "end_turn"
    with pytest.raises(anthropic.OverloadedError):
        create(client, "job-17 please")
    assert create(client, "job-17 again").stop_reason == "end_turn"


def test_faults_are_fifo(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.script(Fault.status(429), Fault.status(500), Fault.status(529))
    statuses = []
    for _ in range(4):
        try:
            create(client)
            statuses.append(200)
        except anthropic.APIStatusError as err:
            statuses.append(err.status_code)
    assert statuses == [429, 500, 529, 200]


def test_random_failures_are_seeded(client: anthropic.Anthropic, sim: Simulator) -> None:
    def run() -> list[int]:
        statuses = []
        for _ in range(30):
            try:
                create(client)
                statuses.append(200)
            except anthropic.APIStatusError as err:
                statuses.append(err.status_code)
        return statuses

    sim.configure(fail_rate=0.2, fail_status=529, seed=1)
    first = run()
    sim.configure(seed=1)
    assert run() == first
    assert set(first) == {200, 529}
    assert 2 <= first.count(529) <= 15


def test_batch_create_consumes_a_fault_and_markers_fail_single_requests(
    client: anthropic.Anthropic, sim: Simulator
) -> None:
    def params(text: str) -> Any:
        return {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": text}]}

    sim.script(Fault.status(529, match="job-2"), Fault.status(529))
    with pytest.raises(anthropic.OverloadedError):
        client.messages.batches.create(requests=[{"custom_id": "1", "params": params("job-1")}])

    batch = client.messages.batches.create(
        requests=[{"custom_id": "1", "params": params("job-1")}, {"custom_id": "2", "params": params("job-2")}]
    )
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert results["1"].type == "succeeded"
    failed = results["2"]
    assert failed.type == "errored"
    assert failed.error.error.type == "overloaded_error"


def test_stop_is_prompt_with_a_hanging_request() -> None:
    sim = Simulator().start()
    sim.script(Fault.hang(30))
    client = anthropic.Anthropic(base_url=sim.url, api_key="test", max_retries=0, timeout=10)

    import threading

    errors: list[BaseException] = []

    def call() -> None:
        try:
            create(client)
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    deadline = time.monotonic() + 3
    while not sim.message_requests() and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 3.0  # well before the hang would have ended
    thread.join(timeout=3)
    assert errors
    assert isinstance(errors[0], anthropic.APIConnectionError)
