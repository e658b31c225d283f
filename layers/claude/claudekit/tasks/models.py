"""What every feature's models share: the one string type, the body base, usage and cost.

Unknown fields are rejected so a typo never silently changes behaviour. Every string a caller
sends is `Text`: Unicode scalar values only, no control characters but tab and line breaks,
never blank (white space and invisible format characters alone count as blank). Long free text
(prompt, system, text, job input) is not capped here: the client enforces MAX_INPUT_CHARS and
answers 413, not 422. Short fields carry their own caps.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, StringConstraints

from claudekit.claude.request import ClaudeResult

# C0 controls but tab, LF and CR; DEL and the C1 controls; UTF-16 surrogates, which JSON's \u
# escapes can carry alone but no encoder can send. CR stays allowed: browsers and Windows
# clients send CRLF line breaks, and it is harmless in a prompt.
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


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


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


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


def result_fields(result: ClaudeResult) -> dict[str, Any]:
    """The fields every Claude-backed answer shares: `model`, `usage`, `cost_usd`."""
    return {"model": result.model, "usage": result.usage.public(), "cost_usd": float(result.cost_usd)}
