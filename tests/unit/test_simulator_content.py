"""What the simulated model writes: deterministic text, schema-valid JSON."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from local.simulator.content import keywords, natural_reply_tokens, reply_tokens, schema_json

SCHEMAS: list[dict[str, Any]] = [
    {"type": "string", "minLength": 50, "maxLength": 60},
    {"type": "string", "maxLength": 3},
    {"type": "integer", "minimum": 5, "maximum": 5},
    {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3},
    {"type": "integer", "minimum": 10, "multipleOf": 7},
    {"type": "number", "minimum": -1.5, "maximum": -1.0},
    {"type": "boolean"},
    {"type": "null"},
    {"type": ["string", "null"], "format": "date-time"},
    {"type": "string", "format": "uuid"},
    {"type": "string", "format": "email"},
    {"const": "fixed"},
    {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 1, "maximum": 2}]},
    {"type": "array", "items": {"type": "integer"}, "minItems": 7},
    {"type": "array", "items": {"type": "string"}, "maxItems": 1},
    {"type": "array", "prefixItems": [{"type": "boolean"}, {"type": "string"}], "minItems": 2, "maxItems": 2},
    {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"allOf": [{"$ref": "#/$defs/B"}]}},
        "required": ["a", "b"],
        "additionalProperties": False,
        "$defs": {
            "B": {
                "type": "object",
                "properties": {
                    "kind": {"enum": ["x", "y", "z"]},
                    "next": {"anyOf": [{"$ref": "#/$defs/B"}, {"type": "null"}]},
                },
                "required": ["kind"],
                "additionalProperties": False,
            }
        },
    },
    {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/definitions/Item"}, "minItems": 1, "maxItems": 2}
        },
        "required": ["items"],
        "definitions": {"Item": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
    },
]


@pytest.mark.parametrize("schema", SCHEMAS)
@pytest.mark.parametrize("prompt", ["", "Tell me about serverless queues", "ünïcode prompt with words"])
def test_schema_json_is_valid(schema: dict[str, Any], prompt: str) -> None:
    jsonschema.validate(schema_json(schema, prompt), schema)


def test_constraints_moved_into_descriptions_by_the_sdk_are_respected() -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "description": "{maxLength: 12, minLength: 10}"},
            "score": {"type": "integer", "description": "{maximum: 3, minimum: 2}"},
            "tags": {"type": "array", "items": {"type": "string"}, "description": "{maxItems: 5, minItems: 4}"},
        },
        "required": ["title", "score", "tags"],
    }
    value = schema_json(schema, "hello serverless world")
    assert 10 <= len(value["title"]) <= 12
    assert value["score"] in (2, 3)
    assert 4 <= len(value["tags"]) <= 5


def test_enum_choice_is_deterministic_but_varies_with_prompt() -> None:
    schema = {"enum": ["a", "b", "c", "d", "e"]}
    assert schema_json(schema, "same prompt") == schema_json(schema, "same prompt")
    assert len({schema_json(schema, f"prompt {i}") for i in range(20)}) > 1


def test_strings_mention_the_prompt() -> None:
    value = schema_json({"type": "object", "properties": {"title": {"type": "string"}}}, "Ideas about serverless")
    assert value["title"].startswith("Title about")
    assert "serverless" in value["title"]


def test_reply_tokens_are_exact_and_deterministic() -> None:
    tokens = reply_tokens("Explain prompt caching costs", 37)
    assert len(tokens) == 37
    assert tokens == reply_tokens("Explain prompt caching costs", 37)
    assert "".join(tokens).endswith(".")
    assert "caching" in "".join(tokens)


def test_natural_length_grows_with_prompt() -> None:
    assert natural_reply_tokens("short") < natural_reply_tokens("a much longer prompt " * 10)
    assert natural_reply_tokens("word " * 10_000) == 400


def test_keywords_skip_stopwords() -> None:
    assert keywords("Please write about the Lambda cold starts and the costs") == [
        "lambda",
        "cold",
        "starts",
        "costs",
    ]
