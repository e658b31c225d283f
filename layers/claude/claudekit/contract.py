"""The public HTTP contract's bodies (DESIGN.md): what callers send and what they get back.

Unknown fields are rejected so a typo never silently changes behaviour. Every string a caller
sends is `Text`: Unicode scalar values only, no control characters but tab and line breaks,
never blank (white space and invisible format characters alone count as blank). Long free text
(prompt, system, text, job input) is not capped here: the client enforces MAX_INPUT_CHARS and
answers 413, not 422. Short fields carry their own caps.

A body is parsed by `parse_json` before any model sees it, so every malformed body (not UTF-8,
not JSON, NaN, nested deeper than any valid body) is one 400 on every route, REST and stream.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator

from claudekit.errors import MalformedRequest

GenerateTask = Literal["generate", "analyze", "reason", "summarize", "extract"]

# C0 controls but tab, LF and CR; DEL and the C1 controls; UTF-16 surrogates, which JSON's \u
# escapes can carry alone but no encoder can send. CR stays allowed: browsers and Windows
# clients send CRLF line breaks, and it is harmless in a prompt.
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# The deepest valid body is {"items": [{"input": ...}]}; anything far deeper is an attack.
MAX_JSON_DEPTH = 16


def check_text(value: object) -> object:
    """Reject what cannot be sent upstream or is empty; non-strings fall through to the type check."""
    if isinstance(value, str):
        if _NOT_TEXT.search(value):
            raise ValueError("must be text: no control characters (except tab and line breaks), no lone surrogates")
        if not _visible(value):
            raise ValueError("must not be blank")
    return value


def _visible(value: str) -> bool:
    """Some character that is neither white space nor an invisible format character (zero-width
    space, joiners, BOM: Unicode category Cf), which would make a billed call about nothing."""
    return any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in value)


# The one string type of every request field (routes and job items alike).
Text = Annotated[str, StringConstraints(min_length=1), BeforeValidator(check_text)]
# Capped fields: the constraints sit inside the validator, so they apply to the checked string.
Label = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), BeforeValidator(check_text)
]
Topic = Annotated[str, StringConstraints(min_length=1, max_length=500), BeforeValidator(check_text)]


def parse_json(raw: bytes | str) -> Any:
    """A request body as JSON, or MalformedRequest: not UTF-8, not JSON, NaN/Infinity, a key twice
    in one object (parsers disagree on which wins, so one copy could slip past a check), too deep."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedRequest("body is not UTF-8") from None
    try:
        value = json.loads(raw, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise MalformedRequest("body is nested too deeply") from None
    except ValueError:  # JSONDecodeError, and the constants refused below
        raise MalformedRequest() from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise MalformedRequest("body is nested too deeply")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise ValueError("a key appears twice")
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:
                stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class GenerateBody(Body):
    prompt: Text
    system: Text | None = None
    max_tokens: int | None = Field(None, ge=1)
    task: GenerateTask = "generate"


class ClassifyBody(Body):
    text: Text
    labels: list[Label] = Field(min_length=2, max_length=50, json_schema_extra={"uniqueItems": True})

    @field_validator("labels")
    @classmethod
    def _unique(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be unique")
        return labels


class IdeasBody(Body):
    topic: Topic
    count: int = Field(3, ge=1, le=10)


class ConversationBody(Body):
    system: Text | None = None


class ConversationMessageBody(Body):
    prompt: Text
    max_tokens: int | None = Field(None, ge=1)


class UsageOut(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


class CostOut(BaseModel):
    """Requests, cost and tokens of one slice of usage (a feature, a model)."""

    requests: int
    cost_usd: float
    usage: UsageOut


class FeatureUsageOut(CostOut):
    without_caching_usd: float
    without_routing_usd: float


class PlanLimitsOut(BaseModel):
    requests_per_minute: int
    daily_budget_usd: float


class RemainingOut(BaseModel):
    requests_this_minute: int
    budget_usd: float


class UsageReportOut(FeatureUsageOut):
    """GET /usage: one caller's day, what caching and routing saved, the plan and what remains today."""

    date: str
    features: dict[str, FeatureUsageOut]
    plan: str
    plan_overridden: bool
    limits: PlanLimitsOut
    remaining: RemainingOut


class TopUserOut(BaseModel):
    user: str
    cost_usd: float


class OperatorReportOut(CostOut):
    """GET /admin/usage: everyone's day, per feature and per model, and the top users (hashed)."""

    date: str
    features: dict[str, CostOut]
    models: dict[str, CostOut]
    users: int
    top_users: list[TopUserOut]


class GenerateOut(BaseModel):
    text: str
    model: str
    stop_reason: str | None
    truncated: bool
    usage: UsageOut
    cost_usd: float
    request_id: str | None


class ClassifyOut(BaseModel):
    label: str
    model: str
    usage: UsageOut
    cost_usd: float


class Idea(BaseModel):
    """One blog idea. Also the structured-output schema sent to Claude."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    excerpt: str = Field(min_length=1, max_length=1000)
    target_audience: str = Field(min_length=1, max_length=200)


class IdeasOut(BaseModel):
    ideas: list[Idea]
    model: str
    usage: UsageOut
    cost_usd: float


class CompactedOut(BaseModel):
    mode: Literal["summarized", "dropped"]
    messages: int
    cost_usd: float


class ConversationMessageOut(BaseModel):
    role: Literal["user", "assistant"]
    content: str


class ConversationOut(BaseModel):
    """A conversation as its owner sees it (POST /conversations, GET /conversations/{id})."""

    id: str
    system: str | None
    summary: str | None
    messages: list[ConversationMessageOut]
    created_at: str
    updated_at: str
    expires_at: str


class ConversationTurnOut(BaseModel):
    conversation_id: str
    text: str
    model: str
    stop_reason: str | None
    truncated: bool
    usage: UsageOut
    cost_usd: float
    messages: int
    compacted: CompactedOut | None
    request_id: str | None


# POST /stream's server-sent events, in order: `delta`..., then `done` or `error`.


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
