"""Token estimates and prompt caching, imitating the API's usage rules.

Tokens are estimated at ~4 characters each. The prompt is the sequence tools -> system -> messages;
each block is a *segment*. A ``cache_control`` on a segment is a breakpoint: the prefix up to and
including it can be cached, keyed by model + exact prefix content, if it is at least the model's
minimum cacheable length (below that the breakpoint silently does nothing). A request reads the
longest live cached prefix and writes every later breakpoint's prefix; ``input_tokens`` is what is
left after both.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 4
TTL_SECONDS: dict[str, float] = {"5m": 300.0, "1h": 3600.0}


def estimate_tokens(text: str) -> int:
    """~4 characters per token, rounded up (0 for an empty string)."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


@dataclass(frozen=True)
class Segment:
    """One cacheable unit of the prompt (a tool, a system block or a message content block)."""

    key: str
    tokens: int
    ttl: str | None  # the cache_control TTL if this segment is a breakpoint, else None


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_5m: int = 0
    cache_creation_1h: int = 0

    def to_dict(self, *, service_tier: str = "standard") -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_creation_5m,
                "ephemeral_1h_input_tokens": self.cache_creation_1h,
            },
            "output_tokens": self.output_tokens,
            "service_tier": service_tier,
        }


def _block_text(block: Any) -> str:
    """The text a block contributes to the token count (its JSON, minus ``cache_control``)."""
    if isinstance(block, str):
        return block
    if isinstance(block, dict):
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            return str(block["text"])
        stripped = {k: v for k, v in block.items() if k != "cache_control"}
        return json.dumps(stripped, sort_keys=True, separators=(",", ":"))
    return json.dumps(block, sort_keys=True, separators=(",", ":"))


def _ttl(block: Any) -> str | None:
    if not isinstance(block, dict):
        return None
    control = block.get("cache_control")
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        return None
    ttl = control.get("ttl", "5m")
    return ttl if ttl in TTL_SECONDS else "5m"


def prompt_segments(body: dict[str, Any]) -> list[Segment]:
    """Split a Messages request into segments in the order the API caches them."""
    segments: list[Segment] = []
    for tool in body.get("tools") or []:
        segments.append(Segment("tool:" + _block_text(tool), estimate_tokens(_block_text(tool)), _ttl(tool)))
    system = body.get("system")
    system_blocks = [system] if isinstance(system, str) else (system or [])
    for block in system_blocks:
        text = _block_text(block)
        segments.append(Segment("system:" + text, estimate_tokens(text), _ttl(block)))
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role = str(message.get("role", ""))
        content = message.get("content")
        blocks = [content] if isinstance(content, str) else (content or [])
        for block in blocks:
            text = _block_text(block)
            segments.append(Segment(f"{role}:{text}", estimate_tokens(text), _ttl(block)))
    return segments


def extra_input_tokens(body: dict[str, Any]) -> int:
    """Input the API adds outside the cacheable prefix (the structured-output schema)."""
    output_config = body.get("output_config")
    if isinstance(output_config, dict) and isinstance(output_config.get("format"), dict):
        return estimate_tokens(json.dumps(output_config["format"], sort_keys=True))
    return 0


def count_input_tokens(body: dict[str, Any]) -> int:
    """What ``/v1/messages/count_tokens`` reports: every input token, at least 1."""
    return max(1, sum(s.tokens for s in prompt_segments(body)) + extra_input_tokens(body))


class PromptCache:
    """Prefix cache keyed by model + prefix content, with TTLs measured on an injectable clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, float] = {}  # key -> expiry time

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        now = self._clock()
        with self._lock:
            return sum(1 for expiry in self._entries.values() if expiry > now)

    def account(self, model: str, body: dict[str, Any], min_tokens: int) -> Usage:
        """Input usage of one request, reading and writing the cache as the API would."""
        segments = prompt_segments(body)
        extra = extra_input_tokens(body)
        total = max(1, sum(s.tokens for s in segments) + extra)

        digest = hashlib.sha256(model.encode())
        prefix_tokens = 0
        breakpoints: list[tuple[str, int, str]] = []  # (key, prefix tokens, ttl)
        for segment in segments:
            digest.update(b"\x00" + segment.key.encode())
            prefix_tokens += segment.tokens
            if segment.ttl is not None and prefix_tokens >= min_tokens:
                breakpoints.append((digest.hexdigest(), prefix_tokens, segment.ttl))
        if not breakpoints:
            return Usage(input_tokens=total)

        now = self._clock()
        with self._lock:
            read_index = -1
            for index in range(len(breakpoints) - 1, -1, -1):
                key, _, ttl = breakpoints[index]
                if self._entries.get(key, 0.0) > now:
                    read_index = index
                    self._entries[key] = now + TTL_SECONDS[ttl]  # a hit refreshes the entry
                    break
            read = breakpoints[read_index][1] if read_index >= 0 else 0
            written = {"5m": 0, "1h": 0}
            covered = read
            for key, tokens, ttl in breakpoints[read_index + 1 :]:
                written[ttl] += tokens - covered
                covered = tokens
                self._entries[key] = now + TTL_SECONDS[ttl]
        creation = written["5m"] + written["1h"]
        return Usage(
            input_tokens=max(0, total - read - creation),
            cache_creation_input_tokens=creation,
            cache_read_input_tokens=read,
            cache_creation_5m=written["5m"],
            cache_creation_1h=written["1h"],
        )
