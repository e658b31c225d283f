"""The one text type and the body parser every route shares (claudekit.tasks.models, claudekit.http.body)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pydantic import ValidationError

from claudekit.errors import MalformedRequest
from claudekit.http.body import MAX_JSON_DEPTH, parse_json
from claudekit.http.rest import check_body, with_standard_headers
from claudekit.tasks.classify import ClassifyBody
from claudekit.tasks.generate import GenerateBody
from claudekit.tasks.ideas import IdeasBody
from claudekit.tasks.jobs.models import JobMessage, JobsBody

NOT_TEXT = ["\udfff", "a\ud800b", "\x00", "x\x01", "\x0b", "\x0c", "\x1b[31m", "\x7f", "\x85", "\x9f"]
BLANK = ["", " ", "\n\t\r\n", "\u3000", "\u2003\u00a0", "\u200b", "\ufeff", "\u200d\u2060 \u200b"]
TEXT = [
    "a",
    "line\nbreak",
    "tab\there",
    "crlf\r\nok",
    "\U0001f680 \U0001f9d1\u200d\U0001f4bb",
    "e\u0301",
    "\ufeffbom",
    "zero\u200bwidth",
]


def bodies(value: str) -> list[tuple[type[Any], dict[str, Any]]]:
    """Every string field of every request model, each set to `value`."""
    return [
        (GenerateBody, {"prompt": value}),
        (GenerateBody, {"prompt": "ok", "system": value}),
        (ClassifyBody, {"text": value, "labels": ["a", "b"]}),
        (ClassifyBody, {"text": "ok", "labels": [value, "b"]}),
        (IdeasBody, {"topic": value}),
        (JobsBody, {"items": [{"task": "generate", "input": value}]}),
        (JobMessage, {"job_id": "j", "user": "u", "task": "generate", "input": value}),
    ]


@pytest.mark.parametrize("value", NOT_TEXT + BLANK)
def test_every_string_field_refuses_what_is_not_sendable_text(value: str) -> None:
    for model, body in bodies(value):
        with pytest.raises(ValidationError) as caught:
            model.model_validate(body)
        assert caught.value.errors()[0]["type"] in {"value_error", "string_too_short"}, (model, body)


@pytest.mark.parametrize("value", TEXT)
def test_every_string_field_accepts_text_with_line_breaks_tabs_and_any_script(value: str) -> None:
    for model, body in bodies(value):
        model.model_validate(body)


def test_the_same_rules_hold_when_the_body_arrives_as_json() -> None:
    raw = json.dumps({"prompt": "\udfff"})  # "\\udfff": valid JSON, not Unicode text
    with pytest.raises(ValidationError):
        GenerateBody.model_validate(parse_json(raw))


def test_short_fields_keep_their_caps() -> None:
    with pytest.raises(ValidationError):
        IdeasBody.model_validate({"topic": "x" * 501})
    with pytest.raises(ValidationError):
        ClassifyBody.model_validate({"text": "t", "labels": ["x" * 101, "b"]})
    assert ClassifyBody.model_validate({"text": "t", "labels": [" a ", "b"]}).labels == ["a", "b"]


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe",
        b'{"prompt": "caf\xe9"}',
        b'{"prompt": ',
        b"NaN",
        b'{"prompt": "harmless", "prompt": "the one a lenient parser keeps"}',
        b'{"items": [{"task": "generate", "input": "a", "input": "b"}]}',
        b'{"max_tokens": Infinity}',
        b"[" * 10_000 + b"]" * 10_000,
        b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
    ],
)
def test_malformed_bodies_are_malformed_requests(raw: bytes) -> None:
    with pytest.raises(MalformedRequest) as caught:
        parse_json(raw)
    assert caught.value.status == 400 and caught.value.code == "VALIDATION_ERROR"


def test_reasonable_nesting_parses() -> None:
    assert parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None
    assert parse_json('{"items": [{"input": "x"}]}') == {"items": [{"input": "x"}]}


def test_a_base64_body_is_checked_and_decoded_for_the_router() -> None:
    event: dict[str, Any] = {"body": base64.b64encode(b'{"prompt": "hi"}').decode(), "isBase64Encoded": True}
    check_body(event)
    assert event == {"body": '{"prompt": "hi"}', "isBase64Encoded": False}
    for bad in (base64.b64encode(b"\xff").decode(), "not base64!"):
        with pytest.raises(MalformedRequest):
            check_body({"body": bad, "isBase64Encoded": True})


def test_standard_headers_are_added_to_any_response_without_overriding(monkeypatch: pytest.MonkeyPatch) -> None:
    from claudekit.http import rest

    monkeypatch.setattr(rest, "cors_headers", dict)  # CORS is configuration; its headers are tested below
    json_result = with_standard_headers(
        {"statusCode": 200, "multiValueHeaders": {"Content-Type": ["application/json"]}, "body": "{}"}, "rid"
    )
    assert json_result["headers"] == {
        "X-Request-Id": "rid",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }
    plain = {"content-type": "text/plain", "x-request-id": "a"}
    assert with_standard_headers({"statusCode": 200, "headers": dict(plain)}, "b")["headers"] == plain


def test_the_configured_origin_gets_cors_headers_on_every_response(monkeypatch: pytest.MonkeyPatch) -> None:
    from claudekit.http import rest

    monkeypatch.setattr(rest, "cors_headers", lambda: {"Access-Control-Allow-Origin": "https://app.example"})
    for headers in ({"Content-Type": "application/json"}, {"content-type": "text/event-stream"}):
        result = with_standard_headers({"statusCode": 200, "headers": dict(headers)}, "rid")
        assert result["headers"]["Access-Control-Allow-Origin"] == "https://app.example"


def test_validation_messages_name_fields_but_never_echo_a_made_up_key() -> None:
    from claudekit.http.errors import validation_error

    key = "\x00<script>" + "a" * 10_000
    with pytest.raises(ValidationError) as caught:
        GenerateBody.model_validate({"prompt": "x", key: 1, "max_tokens": 0})
    message = validation_error(list(caught.value.errors())).message
    assert "<unknown key>: Extra inputs are not permitted" in message
    assert "max_tokens: " in message
    assert "script" not in message and len(message) < 300
