"""POST /stream's server-sent events, in order: `delta`..., then `done` or `error`."""

from __future__ import annotations

from pydantic import BaseModel

from claudekit.tasks.conversations import CompactedOut
from claudekit.tasks.models import UsageOut


class StreamDelta(BaseModel):
    """`event: delta`: the next piece of text."""

    text: str


class StreamDone(BaseModel):
    """`event: done`: the stream ended; what it cost."""

    model: str
    stop_reason: str | None
    usage: UsageOut
    cost_usd: float


class ConversationStreamDone(BaseModel):
    """`event: done` of POST /conversations/{id}/stream: the turn's fields but the text."""

    conversation_id: str
    model: str
    stop_reason: str | None
    truncated: bool
    usage: UsageOut
    cost_usd: float
    messages: int
    compacted: CompactedOut | None


class StreamError(BaseModel):
    """`event: error`: the upstream failed mid-stream; the stream ends here."""

    code: str
    message: str
