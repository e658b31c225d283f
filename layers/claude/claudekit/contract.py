"""The public HTTP contract's bodies (DESIGN.md): what callers send and what they get back.

Unknown fields are rejected so a typo never silently changes behaviour. Text length is
not capped here: the client enforces MAX_INPUT_CHARS and answers 413, not 422.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

GenerateTask = Literal["generate", "analyze", "reason", "summarize", "extract"]
Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class GenerateBody(Body):
    prompt: str = Field(min_length=1)
    system: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    task: GenerateTask = "generate"

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class ClassifyBody(Body):
    text: str = Field(min_length=1)
    labels: list[Label] = Field(min_length=2, max_length=50)

    @field_validator("labels")
    @classmethod
    def _unique(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be unique")
        return labels


class IdeasBody(Body):
    topic: str = Field(min_length=1, max_length=500)
    count: int = Field(3, ge=1, le=10)


class UsageOut(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


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
