"""Token estimates and prompt-caching rules, on a fake clock."""

from __future__ import annotations

from typing import Any

from local.simulator.usage import PromptCache, count_input_tokens, estimate_tokens


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def block(chars: int, ttl: str | None = None, letter: str = "a") -> dict[str, Any]:
    out: dict[str, Any] = {"type": "text", "text": letter * chars}
    if ttl is not None:
        out["cache_control"] = {"type": "ephemeral", "ttl": ttl}
    return out


def body(system: list[dict[str, Any]], user: str = "abcd" * 5) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 5, "system": system, "messages": [{"role": "user", "content": user}]}


def test_estimate_tokens() -> None:
    assert [estimate_tokens(t) for t in ("", "a", "abcd", "abcde")] == [0, 1, 1, 2]
    assert count_input_tokens({"messages": [{"role": "user", "content": ""}]}) == 1


def test_tools_schema_and_system_are_counted() -> None:
    request = {
        "tools": [{"name": "t", "input_schema": {"type": "object"}}],
        "system": "abcd",
        "messages": [{"role": "user", "content": "abcd"}],
        "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
    }
    assert count_input_tokens(request) > 2 + estimate_tokens('{"input_schema":{"type":"object"},"name":"t"}')


def test_write_read_expire() -> None:
    clock = FakeClock()
    cache = PromptCache(clock)
    request = body([block(400, "5m")])  # 100 tokens + 5 uncached

    first = cache.account("m", request, min_tokens=50)
    assert (first.input_tokens, first.cache_creation_input_tokens, first.cache_read_input_tokens) == (5, 100, 0)
    assert (first.cache_creation_5m, first.cache_creation_1h) == (100, 0)
    second = cache.account("m", request, min_tokens=50)
    assert (second.input_tokens, second.cache_creation_input_tokens, second.cache_read_input_tokens) == (5, 0, 100)
    clock.now += 301
    assert cache.account("m", request, min_tokens=50).cache_creation_input_tokens == 100


def test_prefix_must_match_exactly_and_model_matters() -> None:
    cache = PromptCache(FakeClock())
    cache.account("m", body([block(400, "5m")]), min_tokens=50)
    assert cache.account("m", body([block(400, "5m", letter="b")]), min_tokens=50).cache_read_input_tokens == 0
    assert cache.account("other", body([block(400, "5m")]), min_tokens=50).cache_read_input_tokens == 0
    # the suffix after the breakpoint does not matter
    assert cache.account("m", body([block(400, "5m")], user="different"), min_tokens=50).cache_read_input_tokens == 100


def test_two_breakpoints_read_the_longest_and_write_the_rest() -> None:
    cache = PromptCache(FakeClock())
    cache.account("m", body([block(400, "1h")]), min_tokens=50)
    usage = cache.account("m", body([block(400, "1h"), block(800, "5m", letter="b")]), min_tokens=50)
    assert usage.cache_read_input_tokens == 100
    assert (usage.cache_creation_input_tokens, usage.cache_creation_5m, usage.cache_creation_1h) == (200, 200, 0)
    assert usage.input_tokens == 5


def test_mixed_ttls_are_split_on_first_write() -> None:
    cache = PromptCache(FakeClock())
    usage = cache.account("m", body([block(400, "1h"), block(800, "5m", letter="b")]), min_tokens=50)
    assert (usage.cache_creation_1h, usage.cache_creation_5m, usage.cache_read_input_tokens) == (100, 200, 0)


def test_below_minimum_is_ignored() -> None:
    cache = PromptCache(FakeClock())
    for _ in range(2):
        usage = cache.account("m", body([block(400, "5m")]), min_tokens=101)
        assert (usage.input_tokens, usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (105, 0, 0)


def test_breakpoint_in_messages_and_tools() -> None:
    cache = PromptCache(FakeClock())
    request = {
        "tools": [{"name": "t", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [block(400, "5m")]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "next"},
        ],
    }
    first = cache.account("m", request, min_tokens=50)
    assert first.cache_creation_input_tokens > 100  # tools + first user block
    assert cache.account("m", request, min_tokens=50).cache_read_input_tokens == first.cache_creation_input_tokens
