"""POST /ideas: blog post ideas (the seed's feature), exactly as many as asked."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from claudekit.claude.client import ClaudeClient, get_client
from claudekit.claude.request import ClaudeRequest
from claudekit.deadline import Deadline
from claudekit.tasks.models import Body, Topic, UsageOut, result_fields


class IdeasBody(Body):
    topic: Topic
    count: int = Field(3, ge=1, le=10)


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


IDEAS_SYSTEM = (
    "You suggest blog post ideas. Each idea has a specific title, a one or two sentence excerpt, "
    "and the audience it is for. Answer as JSON."
)


def ideas_request(
    body: IdeasBody, user_id: str, feature: str = "ideas", max_retry_wait: float | None = None
) -> tuple[ClaudeRequest, type[BaseModel]]:
    """The question, and an output model that holds exactly `body.count` ideas."""
    output = _idea_list(body.count)
    request = ClaudeRequest(
        feature=feature,
        task="ideas",
        user_id=user_id,
        system=IDEAS_SYSTEM,
        prompt=f"Suggest exactly {body.count} blog post ideas about:\n<topic>\n{body.topic}\n</topic>",
        max_retry_wait=max_retry_wait,
    )
    return request, output


@functools.cache  # count is 1-10: building a pydantic model per request costs about a millisecond
def _idea_list(count: int) -> type[BaseModel]:
    exact: Any = Field(min_length=count, max_length=count)
    return create_model("IdeaList", __config__=ConfigDict(extra="forbid"), ideas=(list[Idea], exact))


def ideas_answer(parsed: BaseModel) -> list[Idea]:
    found: list[Idea] = getattr(parsed, "ideas", [])
    return found


def ideas(body: IdeasBody, user_id: str, deadline: Deadline, *, client: ClaudeClient | None = None) -> IdeasOut:
    """Exactly `body.count` validated ideas, or a StructuredOutputError: never a silent empty list."""
    request, output = ideas_request(body, user_id)
    parsed, result = (client or get_client()).complete_structured(request, output, deadline)
    return IdeasOut(ideas=ideas_answer(parsed), **result_fields(result))
