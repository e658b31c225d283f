"""Reading Claude's answer: every text block, never content[0].text blindly."""

from __future__ import annotations

from anthropic.types import Message

from claudekit.claude.request import result_of


def message(content: list[dict[str, object]], stop_reason: str = "end_turn") -> Message:
    return Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-5-5",
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 5},
        }
    )


def test_text_is_joined_from_every_text_block_and_other_blocks_are_skipped() -> None:
    result = result_of(
        message(
            [
                {"type": "thinking", "thinking": "hidden", "signature": "s"},
                {"type": "text", "text": "Hello, "},
                {"type": "tool_use", "id": "t1", "name": "lookup", "input": {}},
                {"type": "text", "text": "world."},
            ]
        ),
        "fallback-model",
    )
    assert result.text == "Hello, world."
    assert result.model == "claude-sonnet-5-5"


def test_no_text_blocks_is_empty_text_not_an_index_error() -> None:
    assert result_of(message([]), "m").text == ""


def test_max_tokens_is_reported_as_truncated() -> None:
    assert result_of(message([{"type": "text", "text": "cut"}], "max_tokens"), "m").truncated
    assert not result_of(message([{"type": "text", "text": "done"}]), "m").truncated
