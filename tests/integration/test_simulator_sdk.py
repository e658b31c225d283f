"""The simulator checked against the real SDK: every kind of response it produces parses."""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Iterator
from typing import Any, Literal

import anthropic
import jsonschema
import pytest
from pydantic import BaseModel, Field

from local.simulator import Latency, Simulator

MODEL = "claude-sonnet-5-5"


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


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def test_create_returns_deterministic_text_about_the_prompt(client: anthropic.Anthropic, sim: Simulator) -> None:
    first = client.messages.create(model=MODEL, max_tokens=500, messages=ask("Explain Lambda cold starts"))
    second = client.messages.create(model=MODEL, max_tokens=500, messages=ask("Explain Lambda cold starts"))

    assert first.content[0].type == "text"
    text = first.content[0].text
    assert text == second.content[0].text
    assert "lambda" in text.lower()
    assert first.stop_reason == "end_turn"
    assert first.usage.input_tokens == 7  # 26 characters / 4, rounded up
    assert first.usage.output_tokens > 0
    assert first.id.startswith("msg_")
    assert first.model == MODEL
    assert first._request_id is not None
    assert first._request_id.startswith("req_sim_")


def test_reply_length_is_capped_by_max_tokens(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.configure(reply_tokens=50)

    full = client.messages.create(model=MODEL, max_tokens=100, messages=ask("Write about caching"))
    capped = client.messages.create(model=MODEL, max_tokens=20, messages=ask("Write about caching"))

    assert (full.stop_reason, full.usage.output_tokens) == ("end_turn", 50)
    assert (capped.stop_reason, capped.usage.output_tokens) == ("max_tokens", 20)


def test_stream_text_and_final_message(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.configure(reply_tokens=30)
    expected = client.messages.create(model=MODEL, max_tokens=100, messages=ask("Stream about queues"))

    with client.messages.stream(model=MODEL, max_tokens=100, messages=ask("Stream about queues")) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()

    assert len(pieces) > 1
    assert "".join(pieces) == expected.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 30
    assert final.usage.input_tokens == expected.usage.input_tokens
    record = sim.message_requests()[-1]
    assert record.stream
    assert record.completed
    assert not record.disconnected
    assert record.events[:3] == ["message_start", "content_block_start", "ping"]
    assert record.events[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_stream_events_are_what_the_api_sends(client: anthropic.Anthropic, sim: Simulator) -> None:
    events = list(client.messages.create(model=MODEL, max_tokens=5, messages=ask("Raw events please"), stream=True))

    types = [event.type for event in events]
    assert types[0] == "message_start"
    assert types[-2:] == ["message_delta", "message_stop"]
    start, delta = events[0], events[-2]
    assert start.type == "message_start"
    assert delta.type == "message_delta"
    assert start.message.usage.output_tokens == 1
    assert start.message.stop_reason is None
    assert delta.delta.stop_reason == "max_tokens"
    assert delta.usage.output_tokens == 5
    assert delta.usage.input_tokens == start.message.usage.input_tokens


class Tone(enum.StrEnum):
    FORMAL = "formal"
    CASUAL = "casual"
    PLAYFUL = "playful"
    TERSE = "terse"


class Idea(BaseModel):
    title: str = Field(min_length=10, max_length=60)
    excerpt: str
    target_audience: str
    score: int = Field(ge=1, le=5)


class Ideas(BaseModel):
    tone: Tone
    label: Literal["spam", "ham"]
    ideas: list[Idea] = Field(min_length=2, max_length=4)
    confident: bool


def test_parse_with_pydantic_output_format(client: anthropic.Anthropic) -> None:
    tones = set()
    for topic in ("serverless", "databases", "observability", "caching", "queues", "pricing"):
        parsed = client.messages.parse(
            model=MODEL, max_tokens=2000, messages=ask(f"Blog ideas about {topic}"), output_format=Ideas
        )
        output = parsed.parsed_output
        assert isinstance(output, Ideas)
        assert 2 <= len(output.ideas) <= 4
        assert topic in output.ideas[0].title.lower()
        tones.add(output.tone)
        assert len(parsed.content) == 1
        assert parsed.content[0].type == "text"
    assert len(tones) > 1  # picked from the prompt, not always the first


def test_output_config_schema_is_honoured_exactly(client: anthropic.Anthropic, sim: Simulator) -> None:
    schema = {
        "type": "object",
        "$defs": {"Label": {"type": "string", "enum": ["positive", "negative", "neutral"]}},
        "properties": {
            "label": {"$ref": "#/$defs/Label"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "minItems": 5},
            "ratio": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["label", "tags", "ratio"],
        "additionalProperties": False,
    }
    message = client.messages.create(
        model=MODEL,
        max_tokens=500,
        messages=ask("Classify: the deploy went great"),
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )

    assert message.content[0].type == "text"
    jsonschema.validate(json.loads(message.content[0].text), schema)
    assert sim.message_requests()[-1].body["output_config"]["format"]["schema"] == schema


def test_forced_tool_use(client: anthropic.Anthropic) -> None:
    tool = {
        "name": "record_label",
        "description": "Record the label",
        "input_schema": {
            "type": "object",
            "properties": {
                "label": {"type": "string", "enum": ["bug", "feature", "question"]},
                "priority": {"type": "integer", "minimum": 1, "maximum": 3},
            },
            "required": ["label", "priority"],
        },
    }
    message = client.messages.create(
        model=MODEL,
        max_tokens=300,
        messages=ask("The app crashes on login"),
        tools=[tool],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "record_label"},
    )

    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use"
    assert block.name == "record_label"
    jsonschema.validate(block.input, tool["input_schema"])


def test_forced_tool_use_streams_input_json(client: anthropic.Anthropic) -> None:
    schema = {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}
    with client.messages.stream(
        model=MODEL,
        max_tokens=300,
        messages=ask("Summarise the incident"),
        tools=[{"name": "summarise", "input_schema": schema}],  # type: ignore[list-item, typeddict-item]
        tool_choice={"type": "tool", "name": "summarise"},
    ) as stream:
        final = stream.get_final_message()

    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use"
    jsonschema.validate(final.content[0].input, schema)


def test_count_tokens(client: anthropic.Anthropic) -> None:
    count = client.messages.count_tokens(model=MODEL, system="Be brief.", messages=ask("Hello there, world"))
    assert count.input_tokens == 3 + 5  # "Be brief." 9 chars, "Hello there, world" 18 chars


def test_batches_create_retrieve_results(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.configure(batch_delay=60)
    batch = client.messages.batches.create(
        requests=[
            {"custom_id": "ok", "params": {"model": MODEL, "max_tokens": 50, "messages": ask("Batch me")}},
            {"custom_id": "bad", "params": {"model": "gpt-4o", "max_tokens": 50, "messages": ask("Batch me")}},
        ]
    )
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 2
    assert batch.results_url is None

    sim.advance(61)
    done = client.messages.batches.retrieve(batch.id)
    assert done.processing_status == "ended"
    assert (done.request_counts.succeeded, done.request_counts.errored) == (1, 1)

    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    ok, bad = results["ok"], results["bad"]
    assert ok.type == "succeeded"
    assert ok.message.usage.service_tier == "batch"
    assert ok.message.usage.input_tokens == 2
    assert bad.type == "errored"
    assert bad.error.error.type == "not_found_error"


def test_batch_cancel(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.configure(batch_delay=60)
    batch = client.messages.batches.create(
        requests=[{"custom_id": "a", "params": {"model": MODEL, "max_tokens": 5, "messages": ask("x")}}]
    )
    canceled = client.messages.batches.cancel(batch.id)
    assert canceled.processing_status == "ended"
    assert canceled.request_counts.canceled == 1
    assert [r.result.type for r in client.messages.batches.results(batch.id)] == ["canceled"]


def test_validation_errors(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model=MODEL, max_tokens=0, messages=ask("x"))
    assert bad.value.type == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=MODEL, max_tokens=10, messages=[])
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="gpt-4o", max_tokens=10, messages=ask("x"))
    assert missing.value.type == "not_found_error"
    # any claude-* id is accepted unless strict
    client.messages.create(model="claude-future-9", max_tokens=10, messages=ask("x"))


def test_strict_models(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.configure(strict_models=True)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="claude-future-9", max_tokens=10, messages=ask("x"))
    client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=ask("x"))


def test_required_api_key(sim: Simulator) -> None:
    sim.configure(api_key="sk-right")
    wrong = anthropic.Anthropic(base_url=sim.url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as err:
        wrong.messages.create(model=MODEL, max_tokens=10, messages=ask("x"))
    assert err.value.type == "authentication_error"
    assert err.value.response.headers["request-id"].startswith("req_sim_")

    right = anthropic.Anthropic(base_url=sim.url, api_key="sk-right", max_retries=0)
    right.messages.create(model=MODEL, max_tokens=10, messages=ask("x"))
    assert sim.message_requests()[-1].headers["authorization"] == "Bearer sk-right"
    assert "anthropic-version" in sim.message_requests()[-1].headers


# --- prompt caching ------------------------------------------------------------------------------

LONG_SYSTEM = "x" * 4400  # 1100 tokens


def cached_call(client: anthropic.Anthropic, *, ttl: str | None = None, system: str = LONG_SYSTEM) -> Any:
    control: dict[str, str] = {"type": "ephemeral"}
    if ttl:
        control["ttl"] = ttl
    return client.messages.create(
        model=MODEL,
        max_tokens=20,
        system=[{"type": "text", "text": system, "cache_control": control}],  # type: ignore[typeddict-item]
        messages=ask("What is it?"),  # 11 chars: 3 tokens
    )


def test_cache_write_then_read(client: anthropic.Anthropic, sim: Simulator) -> None:
    first = cached_call(client).usage
    second = cached_call(client).usage

    assert (first.input_tokens, first.cache_creation_input_tokens, first.cache_read_input_tokens) == (3, 1100, 0)
    assert first.cache_creation.ephemeral_5m_input_tokens == 1100
    assert first.cache_creation.ephemeral_1h_input_tokens == 0
    assert (second.input_tokens, second.cache_creation_input_tokens, second.cache_read_input_tokens) == (3, 0, 1100)


def test_cache_read_is_reported_when_streaming(client: anthropic.Anthropic) -> None:
    cached_call(client)
    with client.messages.stream(
        model=MODEL,
        max_tokens=20,
        system=[{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}],
        messages=ask("What is it?"),
    ) as stream:
        usage = stream.get_final_message().usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (3, 1100, 0)
    assert usage.output_tokens > 1


def test_cache_ttl_expiry(client: anthropic.Anthropic, sim: Simulator) -> None:
    cached_call(client)
    sim.advance(299)
    assert cached_call(client).usage.cache_read_input_tokens == 1100  # the hit refreshes the entry
    sim.advance(301)
    expired = cached_call(client).usage
    assert (expired.cache_read_input_tokens, expired.cache_creation_input_tokens) == (0, 1100)


def test_cache_one_hour_ttl(client: anthropic.Anthropic, sim: Simulator) -> None:
    first = cached_call(client, ttl="1h").usage
    assert first.cache_creation.ephemeral_1h_input_tokens == 1100
    sim.advance(1800)
    assert cached_call(client, ttl="1h").usage.cache_read_input_tokens == 1100
    sim.advance(3601)
    assert cached_call(client, ttl="1h").usage.cache_creation_input_tokens == 1100


def test_cache_below_minimum_does_nothing(client: anthropic.Anthropic, sim: Simulator) -> None:
    short = "y" * 4000  # 1000 tokens < 1024
    cached_call(client, system=short)
    usage = cached_call(client, system=short).usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (1003, 0, 0)


def test_cache_is_keyed_by_model(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.configure(min_cache_tokens={"opus": 1024, "sonnet": 1024})
    cached_call(client)
    other = client.messages.create(
        model="claude-opus-5-5",
        max_tokens=20,
        system=[{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}],
        messages=ask("What is it?"),
    ).usage
    assert other.cache_creation_input_tokens == 1100


# --- latency -------------------------------------------------------------------------------------


def test_latency_paces_the_stream(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.configure(latency=Latency(ttft=0.2, tokens_per_second=50), reply_tokens=30)
    started = time.monotonic()
    arrivals: list[float] = []
    with client.messages.stream(model=MODEL, max_tokens=100, messages=ask("Pace me")) as stream:
        for _ in stream.text_stream:
            arrivals.append(time.monotonic())

    assert len(arrivals) >= 5
    assert arrivals[0] - started >= 0.2  # time to first token
    assert arrivals[-1] - arrivals[0] >= 0.4  # 27 more tokens at 50/s arrive over time


def test_latency_delays_non_streaming(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.configure(latency=Latency(ttft=0.1, tokens_per_second=100), reply_tokens=20)
    started = time.monotonic()
    client.messages.create(model=MODEL, max_tokens=100, messages=ask("Slow please"))
    assert time.monotonic() - started >= 0.3


def test_client_disconnect_mid_stream_is_recorded(client: anthropic.Anthropic, sim: Simulator) -> None:
    sim.configure(latency=Latency(ttft=0.0, tokens_per_second=100), reply_tokens=300)
    with client.messages.stream(model=MODEL, max_tokens=400, messages=ask("Long story")) as stream:
        next(iter(stream.text_stream))

    deadline = time.monotonic() + 5
    while not sim.message_requests()[-1].disconnected and time.monotonic() < deadline:
        time.sleep(0.02)
    record = sim.message_requests()[-1]
    assert record.disconnected
    assert not record.completed
    assert "message_stop" not in record.events
    assert record.events.count("content_block_delta") < 100  # stopped generating
