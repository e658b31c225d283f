"""One upstream SSE stream as a state machine: text pieces out, usage tracked so a cut stream is billed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic

from claudekit.claude.pricing import Usage
from claudekit.claude.request import ClaudeResult, malformed_is_upstream_error
from claudekit.deadline import Deadline
from claudekit.errors import UpstreamServerError, UpstreamTimeout


def open_stream(sdk: anthropic.Anthropic, model: str, timeout: float, params: dict[str, Any]) -> OpenStream:
    """Start a stream and read it up to its first text, so failures before that can still be retried."""
    events = sdk.messages.create(model=model, stream=True, timeout=timeout, **params)
    stream = OpenStream(events, max_tokens=int(params["max_tokens"]))
    try:
        stream.read_until_text()
    except BaseException:
        stream.close()
        raise
    return stream


class OpenStream:
    """One upstream SSE stream: tracks text and cumulative usage so a cut stream is still billed.

    Billing rule (docs/streaming.md): a finished stream is billed exactly as its final usage says.
    A stream cut short (caller gone, upstream error, deadline) is billed the output tokens upstream
    last reported (message_start, or a message_delta's cumulative count) plus one token per UTF-8
    byte of every delta received since, at most max_tokens (the model cannot produce more): an
    upper bound on what was generated, whether or not it reached the caller, and never fewer
    tokens than the delivered text could hold.
    """

    def __init__(self, events: Any, *, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._events = events
        self._iter = iter(events)
        self._buffer: list[str] = []
        self.model: str | None = None
        self.request_id: str | None = getattr(events, "_request_id", None) or getattr(
            getattr(events, "response", None), "headers", {}
        ).get("request-id")
        self.usage = Usage()
        self.stop_reason: str | None = None
        self.text_parts: list[str] = []
        self.finished = False
        self.bytes_since_usage = 0  # UTF-8 bytes of deltas received after upstream last reported usage

    def _next_text(self) -> str | None:
        """Advance to the next text piece; None at the end of the stream."""
        with malformed_is_upstream_error():
            return self._advance()

    def _advance(self) -> str | None:
        for event in self._iter:
            kind = event.type
            if kind == "message_start":
                self.model = event.message.model
                self.usage = Usage.from_api(event.message.usage)
                self.bytes_since_usage = 0
            elif kind == "content_block_delta":
                self.bytes_since_usage += _delta_bytes(event.delta)
                if getattr(event.delta, "type", "") == "text_delta":
                    if not isinstance(event.delta.text, str):
                        raise TypeError("text delta without text")
                    self.text_parts.append(event.delta.text)
                    return event.delta.text
            elif kind == "message_delta":
                self.stop_reason = event.delta.stop_reason
                delta_usage = Usage.from_api(event.usage)
                # message_delta usage is cumulative; keep input-side numbers from message_start if absent.
                self.usage.output_tokens = delta_usage.output_tokens
                self.bytes_since_usage = 0
                for name in (
                    "input_tokens",
                    "cache_creation_input_tokens",
                    "cache_read_input_tokens",
                    "cache_write_5m_tokens",
                    "cache_write_1h_tokens",
                ):
                    if getattr(delta_usage, name):
                        setattr(self.usage, name, getattr(delta_usage, name))
            elif kind == "message_stop":
                self.finished = True
        if not self.finished:
            raise UpstreamServerError("the model stream ended before it was complete")
        return None

    def read_until_text(self) -> None:
        """Pull events until the first text arrives, so failures before it can still be retried."""
        piece = self._next_text()
        if piece is not None:
            self._buffer.append(piece)

    def pieces(self, deadline: Deadline) -> Iterator[str]:
        yield from self._buffer
        self._buffer.clear()
        while not self.finished:
            if deadline.expired():
                raise UpstreamTimeout("the stream ran out of time")
            piece = self._next_text()
            if piece is None:
                return
            yield piece

    def close(self) -> None:
        # Closing a broken connection may fail; there is nothing more to do then.
        with contextlib.suppress(Exception):
            self._events.close()

    def result(self, model: str, *, attempts: int) -> ClaudeResult:
        text = "".join(self.text_parts)
        if not self.finished:
            # Cut short: what upstream last reported plus an upper bound on what came after it.
            estimate = min(self.usage.output_tokens + self.bytes_since_usage, self.max_tokens)
            self.usage.output_tokens = max(self.usage.output_tokens, estimate)
            self.bytes_since_usage = 0
        return ClaudeResult(
            text=text,
            model=self.model or model,
            stop_reason=self.stop_reason,
            usage=self.usage,
            cost_usd=Decimal(0),
            request_id=self.request_id,
            attempts=attempts,
        )


def _delta_bytes(delta: Any) -> int:
    """UTF-8 bytes a content delta carries (text, tool-input JSON or thinking)."""
    for name in ("text", "partial_json", "thinking"):
        value = getattr(delta, name, None)
        if isinstance(value, str):
            return len(value.encode("utf-8", "surrogatepass"))
    return 0
