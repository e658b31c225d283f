"""What a task asks of Claude and what it gets back, and how a request becomes SDK parameters.

Building is pure: caps, task routing, prompt-cache marking and the token bounds a reservation
needs. Reading turns the SDK's Message into a ClaudeResult; a reply of the wrong shape is
upstream's error, never a bug of ours.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import anthropic
from pydantic import BaseModel

from claudekit.claude.pricing import Usage, utc_date
from claudekit.claude.routing import max_tokens_for, model_for
from claudekit.errors import InputTooLarge, UpstreamMalformed
from claudekit.settings import Settings

CHARS_PER_TOKEN = 4  # typical English; only decides whether a system prompt is worth marking for caching
# Tokens never exceed the UTF-8 bytes of the text (byte-level BPE), plus a few per message for the
# role and separators the API adds: bytes + this per message is a true upper bound for reservations.
MESSAGE_OVERHEAD_TOKENS = 16


@dataclass
class ClaudeRequest:
    """What a task asks of Claude. `feature` is the metrics dimension, `task` picks the model."""

    feature: str
    task: str
    user_id: str
    prompt: str
    system: str | None = None
    max_tokens: int | None = None
    output_schema: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    # A multi-turn conversation: mark the last user turn of `history` and the prompt for caching
    # (see `_cache_turns`), so each turn reads what the previous one wrote.
    cache_turns: bool = False
    # Longest retry-after to sleep through inside the call; longer waits are raised to the caller
    # (the SQS worker hands them to SQS visibility instead of paying Lambda time to wait).
    max_retry_wait: float | None = None


@dataclass
class ClaudeResult:
    text: str
    model: str
    stop_reason: str | None
    usage: Usage
    cost_usd: Decimal
    request_id: str | None
    attempts: int

    @property
    def truncated(self) -> bool:
        return self.stop_reason == "max_tokens"


@dataclass
class Delta:
    """A piece of streamed text."""

    text: str


@dataclass
class Call:
    """The SDK parameters for one request, after caps and routing, and the bounds it is reserved at."""

    model: str
    params: dict[str, Any]
    input_chars: int
    prompt_tokens: int  # upper bound: UTF-8 bytes of everything sent + MESSAGE_OVERHEAD_TOKENS per message
    cacheable_tokens: int  # upper bound on the prefix marked for caching (the system prompt)
    day: date  # the prices in force on this (UTC) date apply
    max_retry_wait: float | None = None

    @property
    def max_tokens(self) -> int:
        return int(self.params["max_tokens"])


def build_call(request: ClaudeRequest, settings: Settings, min_cache_tokens: Callable[[str], int]) -> Call:
    """The SDK parameters for `request`; `min_cache_tokens(model)` is the model's shortest
    cacheable prefix (below it `cache_control` silently does nothing, so it is not sent)."""
    s = settings
    input_chars = len(request.prompt) + len(request.system or "")
    input_chars += sum(len(str(m.get("content", ""))) for m in request.history)
    if input_chars > s.max_input_chars:
        raise InputTooLarge(f"input is {input_chars} characters; the limit is {s.max_input_chars}")
    model = model_for(request.task, s)
    messages = [*request.history, {"role": "user", "content": request.prompt}]
    if request.cache_turns:
        messages = _cache_turns(messages, s.cache_ttl)
    params: dict[str, Any] = {
        "max_tokens": max_tokens_for(request.task, request.max_tokens, s),
        "messages": messages,
    }
    pieces = [_utf8_bytes(m.get("content", "")) for m in messages]
    cacheable = 0
    if request.system:
        block: dict[str, Any] = {"type": "text", "text": request.system}
        pieces.append(_utf8_bytes(request.system))
        if len(request.system) // CHARS_PER_TOKEN >= min_cache_tokens(model):
            block["cache_control"] = {"type": "ephemeral", "ttl": s.cache_ttl}
            cacheable = pieces[-1] + MESSAGE_OVERHEAD_TOKENS
        params["system"] = [block]
    if request.output_schema is not None:
        params["output_config"] = {"format": {"type": "json_schema", "schema": request.output_schema}}
        pieces.append(_utf8_bytes(request.output_schema))
    prompt_tokens = sum(pieces) + MESSAGE_OVERHEAD_TOKENS * len(pieces)
    return Call(
        model=model,
        params=params,
        input_chars=input_chars,
        prompt_tokens=prompt_tokens,
        # With turns marked, all of the prompt may be written to cache.
        cacheable_tokens=prompt_tokens if request.cache_turns else cacheable,
        day=utc_date(),
        max_retry_wait=request.max_retry_wait,
    )


def output_schema(output: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema structured output sends for `output` (realtime and Message Batches alike).
    Generating it is a few milliseconds of pydantic per call, so it is made once per model class;
    each caller gets its own copy (parsed from the cached JSON) to do with as it likes."""
    loaded: dict[str, Any] = json.loads(_schema_json(output))
    return loaded


@functools.lru_cache(maxsize=128)  # bounded: it keeps its model classes alive
def _schema_json(output: type[BaseModel]) -> str:
    return json.dumps(anthropic.transform_schema(output.model_json_schema()))


def result_of(message: Any, model: str) -> ClaudeResult:
    """A ClaudeResult from the SDK's Message (cost still to be computed)."""
    if not isinstance(message.content, list) or message.usage is None:
        raise TypeError("message without content or usage")
    text = "".join(_text_of(block) for block in message.content if block.type == "text")
    return ClaudeResult(
        text=text,
        model=message.model or model,
        stop_reason=message.stop_reason,
        usage=Usage.from_api(message.usage),
        cost_usd=Decimal(0),
        request_id=getattr(message, "_request_id", None),
        attempts=1,
    )


@contextlib.contextmanager
def malformed_is_upstream_error() -> Iterator[None]:
    """A 200 whose body is JSON of the wrong shape ({} or [] or a block without text) makes the SDK
    or our reading of it fail with a TypeError or AttributeError: that is upstream's fault, not a bug
    of ours, so it becomes a retryable UPSTREAM_ERROR rather than a 500."""
    try:
        yield
    except (TypeError, AttributeError, KeyError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise UpstreamMalformed() from exc


def _text_of(block: Any) -> str:
    if not isinstance(block.text, str):
        raise TypeError("text block without text")
    return block.text


def _cache_turns(messages: list[dict[str, Any]], ttl: str) -> list[dict[str, Any]]:
    """Breakpoints on the last two user turns (Anthropic's multi-turn pattern): the earlier one is
    where the previous call wrote its prefix, so this call reads it; the last one writes the prefix
    the next call will read. Below the model's minimum cacheable length they silently do nothing."""
    marked = list(messages)
    users = [i for i, m in enumerate(marked) if m.get("role") == "user" and isinstance(m.get("content"), str)]
    for i in users[-2:]:
        block = {"type": "text", "text": marked[i]["content"], "cache_control": {"type": "ephemeral", "ttl": ttl}}
        marked[i] = {**marked[i], "content": [block]}
    return marked


def _utf8_bytes(content: Any) -> int:
    """UTF-8 bytes of text (or of the JSON of blocks or a schema): an upper bound on its tokens.
    A lone surrogate counts as its 3 bytes rather than failing here (validation refuses it)."""
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    return len(text.encode("utf-8", "surrogatepass"))
