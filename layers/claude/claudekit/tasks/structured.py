"""Structured output for Message Batches: the request as `complete_structured` sends it, and the
answer read against its model (a batch has no repair turn)."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from claudekit.claude.request import ClaudeRequest, ClaudeResult, output_schema
from claudekit.errors import StructuredOutputError


def with_output(request: ClaudeRequest, output: type[BaseModel]) -> ClaudeRequest:
    """The request asking for JSON matching `output`, as `complete_structured` sends it (for batches)."""
    request.output_schema = output_schema(output)
    return request


def parse_output(output: type[BaseModel], result: ClaudeResult) -> BaseModel:
    """A batch answer read against its output model (a batch has no repair turn)."""
    try:
        return output.model_validate_json(result.text)
    except ValidationError:
        raise StructuredOutputError() from None
