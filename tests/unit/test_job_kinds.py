"""Reading a Message Batches answer for each job kind: the route's checks, no repair turn."""

from __future__ import annotations

from decimal import Decimal

import pytest

from claudekit.claude.pricing import Usage
from claudekit.claude.request import ClaudeResult
from claudekit.errors import StructuredOutputError
from claudekit.tasks.jobs import kinds


def answered(text: str) -> ClaudeResult:
    return ClaudeResult(text, "claude-haiku-5-5", "end_turn", Usage(10, 5), Decimal("0.001"), "req", 1)


def test_a_batch_classification_is_one_of_the_labels() -> None:
    result = kinds.batch_answer("classify", {"labels": ["a", "b"]}, answered('{"label": "b"}'))
    assert result["label"] == "b" and result["cost_usd"] == 0.001


@pytest.mark.parametrize(
    ("task", "check", "text"),
    [
        ("classify", {"labels": ["a", "b"]}, '{"label": "c"}'),
        ("classify", {"labels": ["a", "b"]}, "not json"),
        ("ideas", {"count": 2}, '{"ideas": []}'),
    ],
)
def test_an_invalid_batch_answer_is_a_structured_output_error(task: str, check: dict[str, object], text: str) -> None:
    with pytest.raises(StructuredOutputError):
        kinds.batch_answer(task, check, answered(text))
