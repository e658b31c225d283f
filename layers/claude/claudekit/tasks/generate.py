"""POST /generate: free text in, text out, the model routed by task."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from claudekit.claude.client import ClaudeClient, get_client
from claudekit.claude.request import ClaudeRequest
from claudekit.deadline import Deadline
from claudekit.tasks.models import Body, Text, UsageOut, result_fields

GenerateTask = Literal["generate", "analyze", "reason", "summarize", "extract"]


class GenerateBody(Body):
    prompt: Text
    system: Text | None = None
    max_tokens: int | None = Field(None, ge=1)
    task: GenerateTask = "generate"


class GenerateOut(BaseModel):
    text: str
    model: str
    stop_reason: str | None
    truncated: bool
    usage: UsageOut
    cost_usd: float
    request_id: str | None


def generate_request(
    body: GenerateBody, user_id: str, feature: str = "generate", max_retry_wait: float | None = None
) -> ClaudeRequest:
    return ClaudeRequest(
        feature=feature,
        task=body.task,
        user_id=user_id,
        prompt=body.prompt,
        system=body.system,
        max_tokens=body.max_tokens,
        max_retry_wait=max_retry_wait,
    )


def generate(
    body: GenerateBody,
    user_id: str,
    deadline: Deadline,
    request_id: str | None = None,
    *,
    client: ClaudeClient | None = None,
) -> GenerateOut:
    """One completion; `request_id` is the caller's, echoed in the answer."""
    result = (client or get_client()).complete(generate_request(body, user_id), deadline)
    return GenerateOut(
        text=result.text,
        stop_reason=result.stop_reason,
        truncated=result.truncated,
        request_id=request_id,
        **result_fields(result),
    )
