"""POST /stream and POST /conversations/{id}/stream: what a stream asks Claude, as the events it sends.

A stream task is a generator of `Event`s: `StreamDelta`s as the upstream's text arrives, then one
done model (`StreamDone`, `ConversationStreamDone`) when the answer is complete. An exception ends
it (`event: error` once text was sent). The HTTP glue runs it on a thread of its own: nothing
happens until its first item is asked for, and closing it closes the upstream call, whose usage
and cost are still recorded.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel

from claudekit.claude.client import ClaudeClient, get_client
from claudekit.claude.request import ClaudeResult, Delta
from claudekit.deadline import Deadline
from claudekit.tasks import conversations
from claudekit.tasks.conversations import CompactedOut, ConversationMessageBody
from claudekit.tasks.generate import GenerateBody, generate_request
from claudekit.tasks.models import UsageOut, result_fields

FEATURE = "stream"


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


Done = StreamDone | ConversationStreamDone
Event = StreamDelta | Done


def generate(
    body: GenerateBody, user_id: str, deadline: Deadline, *, client: ClaudeClient | None = None
) -> Iterator[Event]:
    """A /generate body, answered as it is written."""
    client = client or get_client()
    for item in client.stream(generate_request(body, user_id, feature=FEATURE), deadline):
        if isinstance(item, Delta):
            yield StreamDelta(text=item.text)
        else:
            yield StreamDone(stop_reason=item.stop_reason, **result_fields(item))


def conversation_turn(
    conversation_id: str,
    body: ConversationMessageBody,
    user_id: str,
    deadline: Deadline,
    *,
    client: ClaudeClient | None = None,
) -> Iterator[Event]:
    """A conversation turn, streamed. Reading the history and compacting it may fail or call
    Claude: they happen before the first event, so their errors are answered like any other
    refusal. The turn is recorded before its done event; a turn that fails mid-stream is not."""
    client = client or get_client()
    store = conversations.conversation_store()
    conv = store.get(conversation_id, user_id)
    turn = conversations.prepare(client, store, conv, body.prompt, body.max_tokens, user_id, deadline)
    for item in conversations.stream(client, store, turn, deadline):
        if isinstance(item, Delta):
            yield StreamDelta(text=item.text)
        else:
            yield _turn_done(turn, item)


def _turn_done(turn: conversations.Turn, result: ClaudeResult) -> ConversationStreamDone:
    fields = conversations.turn_fields(turn, result)
    fields.pop("text")
    return ConversationStreamDone(**fields)
