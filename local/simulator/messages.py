"""The simulated model: validate a Messages request and plan the reply (blocks, deltas, usage)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from local.simulator.config import SimConfig
from local.simulator.content import (
    collect_text,
    last_user_text,
    natural_reply_tokens,
    reply_tokens,
    schema_json,
)
from local.simulator.errors import ApiError
from local.simulator.usage import CHARS_PER_TOKEN, PromptCache, Usage, estimate_tokens

TOKENS_PER_DELTA = 3
"""Output tokens per streamed delta (the API sends a few tokens per ``content_block_delta``)."""


@dataclass
class BlockPlan:
    """One content block: the block as ``content_block_start`` announces it, its deltas, its final form."""

    start: dict[str, Any]
    deltas: list[tuple[dict[str, Any], int]]  # (delta, output tokens it carries)
    final: dict[str, Any]


@dataclass
class Reply:
    model: str
    message_id: str
    blocks: list[BlockPlan]
    stop_reason: str
    usage: Usage
    service_tier: str = "standard"

    def message(self) -> dict[str, Any]:
        """The complete Message object (non-streaming body, batch result)."""
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [block.final for block in self.blocks],
            "stop_reason": self.stop_reason,
            "stop_sequence": None,
            "usage": self.usage.to_dict(service_tier=self.service_tier),
        }

    def start_message(self) -> dict[str, Any]:
        """The message as ``message_start`` carries it: no content, no stop reason, 1 output token."""
        usage = self.usage.to_dict(service_tier=self.service_tier)
        usage["output_tokens"] = min(1, self.usage.output_tokens)
        return {**self.message(), "content": [], "stop_reason": None, "usage": usage}

    def delta_usage(self) -> dict[str, Any]:
        """Cumulative usage as ``message_delta`` carries it."""
        return {
            "input_tokens": self.usage.input_tokens,
            "cache_creation_input_tokens": self.usage.cache_creation_input_tokens,
            "cache_read_input_tokens": self.usage.cache_read_input_tokens,
            "output_tokens": self.usage.output_tokens,
        }


def validate(body: Any, config: SimConfig, *, need_max_tokens: bool = True) -> dict[str, Any]:
    """Reject what the API rejects (400 invalid_request_error, 404 for an unknown model)."""
    if not isinstance(body, dict):
        raise ApiError("invalid_request_error", "Request body must be a JSON object")
    model = body.get("model")
    if model is None:
        raise ApiError("invalid_request_error", "model: Field required")
    if not isinstance(model, str) or not model:
        raise ApiError("invalid_request_error", "model: Input should be a valid string")
    if need_max_tokens:
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise ApiError("invalid_request_error", "max_tokens: Field required")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ApiError("invalid_request_error", "max_tokens: Input should be a positive integer")
    messages = body.get("messages")
    if messages is None:
        raise ApiError("invalid_request_error", "messages: Field required")
    if not isinstance(messages, list) or not messages:
        raise ApiError("invalid_request_error", "messages: at least one message is required")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise ApiError("invalid_request_error", f"messages.{index}.role: Input should be 'user' or 'assistant'")
        if not isinstance(message.get("content"), str | list):
            raise ApiError("invalid_request_error", f"messages.{index}.content: Field required")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise ApiError("invalid_request_error", "stream: Input should be a valid boolean")
    if not config.model_exists(model):
        raise ApiError("not_found_error", f"model: {model}")
    return body


def _output_schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for fmt in (
        (body.get("output_config") or {}).get("format") if isinstance(body.get("output_config"), dict) else None,
        body.get("output_format"),
    ):
        if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
            schema = fmt.get("schema")
            if not isinstance(schema, Mapping):
                raise ApiError("invalid_request_error", "output_config.format.schema: Field required")
            return schema
    return None


def _forced_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    choice = body.get("tool_choice")
    tools = [t for t in body.get("tools") or [] if isinstance(t, Mapping)]
    if not isinstance(choice, Mapping) or choice.get("type") not in ("tool", "any"):
        return None
    if not tools:
        raise ApiError("invalid_request_error", "tool_choice: tools must be provided when tool_choice is set")
    if choice.get("type") == "any":
        return tools[0]
    for tool in tools:
        if tool.get("name") == choice.get("name"):
            return tool
    raise ApiError("invalid_request_error", f"tool_choice: tool {choice.get('name')!r} not found in tools")


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def plan_reply(
    body: dict[str, Any],
    config: SimConfig,
    cache: PromptCache,
    *,
    service_tier: str = "standard",
) -> Reply:
    """Decide the whole reply to a validated request, and account its usage (touching the cache)."""
    model = str(body["model"])
    max_tokens = int(body["max_tokens"])
    prompt = last_user_text(body) or collect_text(body.get("messages"))
    message_id = "msg_sim_" + uuid.uuid4().hex[:24]
    chunk_chars = TOKENS_PER_DELTA * CHARS_PER_TOKEN

    tool = _forced_tool(body)
    schema = _output_schema(body)
    blocks: list[BlockPlan] = []
    if tool is not None:
        value = schema_json(tool.get("input_schema") or {"type": "object"}, prompt)
        encoded = json.dumps(value)
        output_tokens = max(1, estimate_tokens(encoded)) + 10  # the tool call's own framing
        stop_reason = "tool_use"
        if output_tokens > max_tokens:
            output_tokens, stop_reason = max_tokens, "max_tokens"
        block_id = "toolu_sim_" + uuid.uuid4().hex[:24]
        blocks.append(
            BlockPlan(
                start={"type": "tool_use", "id": block_id, "name": tool.get("name"), "input": {}},
                deltas=[
                    ({"type": "input_json_delta", "partial_json": part}, estimate_tokens(part))
                    for part in _chunks(encoded, chunk_chars)
                ],
                final={"type": "tool_use", "id": block_id, "name": tool.get("name"), "input": value},
            )
        )
    else:
        if schema is not None:
            text = json.dumps(schema_json(schema, prompt))
            output_tokens = max(1, estimate_tokens(text))
            stop_reason = "end_turn"
            if output_tokens > max_tokens:
                text, output_tokens, stop_reason = text[: max_tokens * CHARS_PER_TOKEN], max_tokens, "max_tokens"
            pieces = [(part, estimate_tokens(part)) for part in _chunks(text, chunk_chars)]
        else:
            wanted = config.reply_tokens if config.reply_tokens is not None else natural_reply_tokens(prompt)
            wanted = max(1, wanted)
            stop_reason = "end_turn" if wanted <= max_tokens else "max_tokens"
            tokens = reply_tokens(prompt, min(wanted, max_tokens))
            output_tokens = len(tokens)
            text = "".join(tokens)
            groups = [tokens[i : i + TOKENS_PER_DELTA] for i in range(0, len(tokens), TOKENS_PER_DELTA)]
            pieces = [("".join(group), len(group)) for group in groups]
        blocks.append(
            BlockPlan(
                start={"type": "text", "text": ""},
                deltas=[({"type": "text_delta", "text": piece}, count) for piece, count in pieces],
                final={"type": "text", "text": text},
            )
        )

    input_usage = cache.account(model, body, config.min_cacheable(model))
    usage = Usage(
        input_tokens=input_usage.input_tokens,
        output_tokens=output_tokens,
        cache_creation_input_tokens=input_usage.cache_creation_input_tokens,
        cache_read_input_tokens=input_usage.cache_read_input_tokens,
        cache_creation_5m=input_usage.cache_creation_5m,
        cache_creation_1h=input_usage.cache_creation_1h,
    )
    return Reply(model, message_id, blocks, stop_reason, usage, service_tier)
